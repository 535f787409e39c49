//! SMART v2 `?param=value` scope restrictions checked on one resource (pure). Searches AND the
//! restrictions to their criteria; reads, includes and history check each resource here, so a
//! restricted scope sees the same resources on every path. Only equality on token, reference,
//! string (starts-with, as search does), uri and `_id` is understood; anything else (modifiers,
//! prefixes, other types) matches nothing: a restriction not understood hides, never shows.

use serde_json::Value;

use crate::fhir::index::{self, IndexValue};
use crate::fhir::registry::Registry;
use crate::fhir::search::normalize;

/// Does `body` meet every `(param, value)` (a comma in `value` is an OR)?
pub fn matches(registry: &Registry, body: &Value, restrictions: &[(String, String)]) -> bool {
    let rows = index::extract(registry, body);
    restrictions.iter().all(|(param, value)| {
        value.split(',').any(|v| {
            if param == "_id" {
                return body["id"].as_str() == Some(v);
            }
            rows.iter()
                .filter(|r| r.param == *param)
                .any(|r| value_matches(&r.value, v))
        })
    })
}

fn value_matches(have: &IndexValue, want: &str) -> bool {
    match have {
        IndexValue::Token { system, code, .. } => match want.split_once('|') {
            Some(("", c)) => system.is_none() && code.as_deref() == Some(c),
            Some((s, "")) => system.as_deref() == Some(s),
            Some((s, c)) => system.as_deref() == Some(s) && code.as_deref() == Some(c),
            None => code.as_deref() == Some(want),
        },
        IndexValue::Reference {
            target_type,
            target_id,
            url,
        } => match want.split_once('/') {
            _ if url.as_deref() == Some(want) => true,
            Some((t, id)) if !want.contains("://") => {
                target_type.as_deref() == Some(t) && target_id.as_deref() == Some(id)
            }
            None => target_id.as_deref() == Some(want),
            _ => false,
        },
        IndexValue::String { norm, .. } => norm.starts_with(&normalize(want)),
        IndexValue::Uri { uri } => uri == want,
        _ => false,
    }
}
