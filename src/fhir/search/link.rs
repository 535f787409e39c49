//! The canonical query string of a search, for the Bundle's self/next/previous links.

use super::{SearchRequest, TotalMode};

impl SearchRequest {
    /// The query string (without `?`) that repeats this search at `offset`: the filters sorted by
    /// name (repeated names keep their order), then `_sort`, `_count`, `_offset` (when not 0),
    /// `_total` (when not the default), `_summary`, `_elements`, `_include`, `_revinclude`.
    /// Ignored parameters are left out; `_format`/`_pretty` are the HTTP layer's to add.
    pub fn link_query(&self, offset: usize) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut filters: Vec<_> = self.filters.iter().collect();
        filters.sort_by(|a, b| a.name.cmp(&b.name));
        for f in filters {
            pairs.push((f.name.clone(), f.value.clone()));
        }
        if !self.sort.is_empty() {
            let keys: Vec<String> = self
                .sort
                .iter()
                .map(|k| {
                    if k.descending {
                        format!("-{}", k.param)
                    } else {
                        k.param.clone()
                    }
                })
                .collect();
            pairs.push(("_sort".into(), keys.join(",")));
        }
        pairs.push(("_count".into(), self.count.to_string()));
        if offset > 0 {
            pairs.push(("_offset".into(), offset.to_string()));
        }
        match self.total {
            TotalMode::None => {}
            TotalMode::Estimate => pairs.push(("_total".into(), "estimate".into())),
            TotalMode::Accurate => pairs.push(("_total".into(), "accurate".into())),
        }
        if let Some(s) = self.summary {
            pairs.push(("_summary".into(), s.code().into()));
        }
        if let Some(els) = &self.elements {
            pairs.push(("_elements".into(), els.join(",")));
        }
        for (name, list) in [
            ("_include", &self.include),
            ("_revinclude", &self.revinclude),
        ] {
            for inc in list {
                let name = if inc.iterate {
                    format!("{name}:iterate")
                } else {
                    name.to_string()
                };
                pairs.push((name, inc.value()));
            }
        }
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect();
        encoded.join("&")
    }
}

/// Percent-encodes everything but unreserved characters and the ones that are safe and common in
/// FHIR search values (`:/,|$@!*()`), so links stay readable.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/,|$@!*()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::parse;
    use crate::fhir::search::tests_support::registry;

    fn req(pairs: &[(&str, &str)], lenient: bool) -> SearchRequest {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(&registry(), "Slot", &pairs, lenient).unwrap()
    }

    #[test]
    fn links_are_canonical() {
        let r = req(
            &[
                ("status", "free"),
                ("start", "ge2026-01-01T10:00:00+02:00"),
                ("_count", "7"),
                ("schedule", "Schedule/a b&c"),
                ("start", "lt2027"),
                ("_sort", "-start,_id"),
                ("_include:iterate", "Slot:schedule"),
                ("_format", "json"),
                ("x-comment", r"a\,b"),
            ],
            false,
        );
        assert_eq!(
            r.link_query(14),
            "schedule=Schedule/a%20b%26c&start=ge2026-01-01T10:00:00%2B02:00&start=lt2027&status=free&x-comment=a%5C,b\
             &_sort=-start,_id&_count=7&_offset=14&_include:iterate=Slot:schedule"
        );
        assert_eq!(r.link_query(0), r.link_query(0));
        assert!(!r.link_query(0).contains("_offset"));
    }

    #[test]
    fn lenient_links_leave_out_ignored_parameters() {
        let r = req(
            &[
                ("colour", "blue"),
                ("status", "free"),
                ("_total", "accurate"),
                ("_summary", "data"),
            ],
            true,
        );
        assert_eq!(
            r.link_query(0),
            "status=free&_count=20&_total=accurate&_summary=data"
        );
    }

    #[test]
    fn encoding_round_trips() {
        let s = "é &=+#%?\\\u{0}";
        let enc = encode(s);
        let back: String = form_urlencoded::parse(format!("a={enc}").as_bytes())
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(back, s);
    }
}
