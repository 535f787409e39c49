//! AuditEvent search over the audit log's own store (migration `0018_audit_store`).
//!
//! AuditEvents are written only by the server, never changed, and there is one per request, so
//! they are not kept like other resources (a resource row, a history row and a dozen index rows
//! each; `benches/AUDIT.md`). One `audit_event` row holds the body, the `date` range and every
//! token, string and uri search value of the event as *terms* in one text column; references
//! are `audit_ref` rows looked up by target. A token or string test is a substring test on the
//! terms of the rows that the other filters (a date range, a reference) or the rid order bring
//! up; a reference test is a semi-join on `audit_ref`.
//!
//! Terms are separated by [`SEP`], with one before the first and after the last, so a needle
//! that starts and ends with it matches one whole term:
//! - token: `param:code` (any system) and `param|system|code` (system empty when absent);
//! - string: `param~normalized` (starts-with) and `param=exact`;
//! - uri: `param^uri`;
//! - reference: `param@` (the parameter has a value: `:missing`), the value in `audit_ref`.
//!
//! What this store cannot answer is refused ([`check`]): `:text`, `:contains`, `_sort` by
//! another parameter than `date`, `_lastUpdated` or `_id`, `_revinclude` of an AuditEvent
//! search, and `_has:AuditEvent`. Matches carry their rid negated so that they never meet a
//! resource's rid in one Bundle.

use serde_json::Value;

use crate::fhir::index::{IndexRow, IndexValue};
use crate::fhir::registry::{ParamType, Registry};
use crate::store::sql::{Dialect, SqlQuery};

use super::plan::{
    chain_targets, date_cond, or_all, test_sql, uri_ancestors, Builder, Form, Scope,
};
use super::{
    Include, IndexTable, ParamTest, RefValue, SearchError, SearchRequest, SortKind, StringMode,
    Test, TestKind, TokenValue, UriMode,
};

/// The resource type kept in the audit store.
pub const AUDIT: &str = "AuditEvent";

/// Separates terms (U+001F, INFORMATION SEPARATOR ONE): never in a stored value.
pub const SEP: char = '\u{1f}';

/// What the audit store keeps of one AuditEvent's index rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditIndex {
    /// The `date` (`recorded`) range, µs; `None` when the event has none.
    pub date: Option<(i64, i64)>,
    pub terms: String,
    pub refs: Vec<AuditRef>,
}

/// A reference of an AuditEvent (agent, entity, patient, source): one `audit_ref` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRef {
    pub param: String,
    pub target_type: String,
    pub target_id: String,
}

fn clean(s: &str) -> String {
    s.replace(SEP, "")
}

/// Builds an [`AuditIndex`] value by value, in the terms' encoding.
#[derive(Debug, Default)]
pub struct AuditIndexBuilder {
    terms: Vec<String>,
    index: AuditIndex,
}

impl AuditIndexBuilder {
    fn add(&mut self, t: String) {
        if !self.terms.contains(&t) {
            self.terms.push(t);
        }
    }

    /// A token value (a Coding, a code: `system` None).
    pub fn token(&mut self, param: &str, system: Option<&str>, code: Option<&str>) {
        let p = clean(param);
        if let Some(c) = code {
            self.add(format!("{p}:{}", clean(c)));
        }
        self.add(format!(
            "{p}|{}|{}",
            clean(system.unwrap_or_default()),
            clean(code.unwrap_or_default())
        ));
    }

    /// A string value: `norm` is `search::normalize` of `exact`.
    pub fn string(&mut self, param: &str, norm: &str, exact: &str) {
        let p = clean(param);
        self.add(format!("{p}~{}", clean(norm)));
        self.add(format!("{p}={}", clean(exact)));
    }

    pub fn uri(&mut self, param: &str, uri: &str) {
        self.add(format!("{}^{}", clean(param), clean(uri)));
    }

    /// A reference; `target` (type, id) when it is a relative one.
    pub fn reference(&mut self, param: &str, target: Option<(&str, &str)>) {
        self.add(format!("{}@", clean(param)));
        if let Some((t, i)) = target {
            let r = AuditRef {
                param: param.to_string(),
                target_type: t.to_string(),
                target_id: i.to_string(),
            };
            if !self.index.refs.contains(&r) {
                self.index.refs.push(r);
            }
        }
    }

    /// The `date` (`recorded`) range.
    pub fn date(&mut self, lo: i64, hi: i64) {
        self.index.date = Some(match self.index.date {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }

    pub fn finish(mut self) -> AuditIndex {
        self.index.terms = if self.terms.is_empty() {
            SEP.to_string()
        } else {
            format!("{SEP}{}{SEP}", self.terms.join(&SEP.to_string()))
        };
        self.index
    }
}

/// An AuditEvent's index rows (`index::extract`) in the audit store's form: the reference the
/// writer's direct reading of the body (`audit::index`) is held to in tests.
pub fn index(rows: &[IndexRow]) -> AuditIndex {
    let mut b = AuditIndexBuilder::default();
    for row in rows {
        let p = row.param.as_str();
        match &row.value {
            IndexValue::Token { system, code, .. } => {
                b.token(p, system.as_deref(), code.as_deref())
            }
            IndexValue::String { norm, exact } => b.string(p, norm, exact),
            IndexValue::Uri { uri } => b.uri(p, uri),
            IndexValue::Reference {
                target_type,
                target_id,
                ..
            } => b.reference(p, target_type.as_deref().zip(target_id.as_deref())),
            IndexValue::Date { lo, hi } if p == "date" => b.date(*lo, *hi),
            _ => {}
        }
    }
    b.finish()
}

/// Refuses (or, under lenient handling, drops into `ignored`) what the audit store cannot
/// answer. Every search passes here: `_has:AuditEvent` is refused on any type.
pub fn check(req: &mut SearchRequest, lenient: bool) -> Result<(), SearchError> {
    let audit = req.resource_type == AUDIT;
    let mut refused: Option<SearchError> = None;
    let mut ignored = Vec::new();
    let mut refuse = |name: &str, why: &str| {
        if lenient {
            ignored.push(name.to_string());
        } else if refused.is_none() {
            refused = Some(SearchError::unsupported(
                format!("{why} is not supported on AuditEvent"),
                Some(name),
            ));
        }
    };
    req.filters.retain(|f| {
        let why = match &f.test {
            Test::Has { source_type, .. } if source_type == AUDIT => Some("_has"),
            _ if !audit => None,
            Test::Param(p) => unsupported(p),
            Test::Chain { .. } | Test::Has { .. } => None,
        };
        match why {
            Some(why) => {
                refuse(&f.name, why);
                false
            }
            None => true,
        }
    });
    if audit {
        req.sort.retain(|k| {
            let ok = match k.kind {
                SortKind::Id | SortKind::LastUpdated => true,
                SortKind::Index(ParamType::Date) => k.param == "date",
                SortKind::Index(_) => false,
            };
            if !ok {
                refuse(
                    "_sort",
                    "_sort by another parameter than date, _lastUpdated or _id",
                );
            }
            ok
        });
        if !req.revinclude.is_empty() {
            refuse("_revinclude", "_revinclude");
            req.revinclude.clear();
        }
    }
    req.ignored.extend(ignored);
    match refused {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn unsupported(p: &ParamTest) -> Option<&'static str> {
    match &p.kind {
        TestKind::TokenText(_) => Some(":text"),
        TestKind::String {
            mode: StringMode::Contains,
            ..
        } => Some(":contains"),
        _ => None,
    }
}

/// The page: `rid` (negated), `id`, `body` of up to `count + 1` matches after `offset`.
pub(super) fn page_query(req: &SearchRequest, dialect: Dialect) -> SqlQuery {
    let mut b = Builder::new(dialect);
    let mut sql = String::from("SELECT -a.rid AS rid, a.id, a.body FROM audit_event a WHERE ");
    sql.push_str(&where_clause(req, &mut b));
    sql.push_str(" ORDER BY ");
    let mut last = "ASC";
    for key in &req.sort {
        let dir = if key.descending { "DESC" } else { "ASC" };
        let col = match key.kind {
            SortKind::Id => "a.id",
            SortKind::LastUpdated => "a.last_updated",
            // `recorded` is an instant: one precision, so `lo` orders both ways (and the
            // `(date_lo, rid)` index serves either direction).
            SortKind::Index(_) => "a.date_lo",
        };
        sql.push_str(&format!("{col} {dir}, "));
        last = dir;
    }
    sql.push_str(&format!("a.rid {last} LIMIT "));
    let limit = i64::try_from(req.count.saturating_add(1)).unwrap_or(i64::MAX);
    sql.push_str(&b.int(limit));
    sql.push_str(" OFFSET ");
    sql.push_str(&b.int(i64::try_from(req.offset).unwrap_or(i64::MAX)));
    b.finish(sql)
}

/// `SELECT COUNT(*)` of all matches.
pub(super) fn count_query(req: &SearchRequest, dialect: Dialect) -> SqlQuery {
    let mut b = Builder::new(dialect);
    let mut sql = String::from("SELECT COUNT(*) FROM audit_event a WHERE ");
    sql.push_str(&where_clause(req, &mut b));
    b.finish(sql)
}

fn where_clause(req: &SearchRequest, b: &mut Builder) -> String {
    let conds: Vec<String> = req.filters.iter().map(|f| test_cond(b, &f.test)).collect();
    if conds.is_empty() {
        "1 = 1".to_string()
    } else {
        conds.join(" AND ")
    }
}

fn test_cond(b: &mut Builder, test: &Test) -> String {
    match test {
        Test::Param(p) => param_cond(b, p),
        Test::Chain { param, targets } => {
            let x = b.alias("x");
            let p = b.text(param);
            let alts = chain_targets(b, targets, &x);
            format!("a.rid IN (SELECT {x}.rid FROM audit_ref {x} WHERE {x}.param = {p} AND {alts})")
        }
        // Resources of other types that reference the AuditEvent: their own index rows.
        Test::Has { .. } => test_sql(b, test, AUDIT, Scope::Row("a"), Form::In),
    }
}

/// `terms` holds `needle`.
fn holds(b: &mut Builder, needle: String) -> String {
    let n = b.text(&needle);
    match b.dialect {
        Dialect::Sqlite => format!("instr(a.terms, {n}) > 0"),
        Dialect::Postgres => format!("strpos(a.terms, {n}) > 0"),
    }
}

/// `terms` holds the whole term `t`; nothing when `t` has a separator of its own.
fn holds_term(b: &mut Builder, t: &str) -> String {
    if t.contains(SEP) {
        return "1 = 0".to_string();
    }
    holds(b, format!("{SEP}{t}{SEP}"))
}

/// `terms` holds a term starting with `t`.
fn holds_prefix(b: &mut Builder, t: &str) -> String {
    if t.contains(SEP) {
        return "1 = 0".to_string();
    }
    holds(b, format!("{SEP}{t}"))
}

fn marker(table: IndexTable) -> Option<char> {
    match table {
        IndexTable::Token => Some('|'),
        IndexTable::String => Some('~'),
        IndexTable::Reference => Some('@'),
        IndexTable::Uri => Some('^'),
        _ => None,
    }
}

fn param_cond(b: &mut Builder, test: &ParamTest) -> String {
    let code = test.code.as_str();
    match &test.kind {
        TestKind::Id(ids) => {
            let list: Vec<String> = ids.iter().map(|i| b.text(i)).collect();
            if list.is_empty() {
                "1 = 0".to_string()
            } else {
                format!("a.id IN ({})", list.join(", "))
            }
        }
        TestKind::LastUpdated(values) => {
            let alts = values
                .iter()
                .map(|v| date_cond(b, v, "a.last_updated", "a.last_updated"))
                .collect();
            or_all(alts)
        }
        TestKind::Missing { table, missing } => {
            let present = match (table, marker(*table)) {
                (IndexTable::Date, _) if code == "date" => "1 = 1".to_string(),
                (_, Some(m)) => holds_prefix(b, &format!("{code}{m}")),
                _ => "1 = 0".to_string(),
            };
            if *missing {
                format!("NOT ({present})")
            } else {
                present
            }
        }
        TestKind::Token { not, values } => {
            let alts = values.iter().map(|v| token_cond(b, code, v)).collect();
            let any = or_all(alts);
            if *not {
                format!("NOT ({any})")
            } else {
                any
            }
        }
        TestKind::String { mode, values } => {
            let alts = values
                .iter()
                .map(|v| match mode {
                    StringMode::Exact => holds_term(b, &format!("{code}={v}")),
                    // Refused by `check`.
                    StringMode::Contains => "1 = 0".to_string(),
                    StringMode::StartsWith => {
                        holds_prefix(b, &format!("{code}~{}", super::normalize(v)))
                    }
                })
                .collect();
            or_all(alts)
        }
        TestKind::Date(values) if code == "date" => {
            let alts = values
                .iter()
                .map(|v| date_cond(b, v, "a.date_lo", "a.date_hi"))
                .collect();
            or_all(alts)
        }
        TestKind::Reference(values) => {
            let x = b.alias("x");
            let mut alts = Vec::new();
            for v in values {
                if let RefValue::Local { type_, id } = v {
                    let i = b.text(id);
                    alts.push(match type_ {
                        Some(t) => {
                            format!("({x}.target_id = {i} AND {x}.target_type = {})", b.text(t))
                        }
                        None => format!("{x}.target_id = {i}"),
                    });
                }
            }
            if alts.is_empty() {
                // Absolute URLs: the audit log holds relative references only.
                return "1 = 0".to_string();
            }
            let p = b.text(code);
            format!(
                "a.rid IN (SELECT {x}.rid FROM audit_ref {x} WHERE {x}.param = {p} AND {})",
                or_all(alts)
            )
        }
        TestKind::Uri { mode, values } => {
            let mut alts = Vec::new();
            for v in values {
                match mode {
                    UriMode::Exact => alts.push(holds_term(b, &format!("{code}^{v}"))),
                    UriMode::Below => alts.push(holds_prefix(b, &format!("{code}^{v}"))),
                    UriMode::Above => {
                        for u in uri_ancestors(v) {
                            alts.push(holds_term(b, &format!("{code}^{u}")));
                        }
                    }
                }
            }
            or_all(alts)
        }
        // `:text` (refused by `check`), and types AuditEvent has no parameter of.
        _ => "1 = 0".to_string(),
    }
}

fn token_cond(b: &mut Builder, code: &str, v: &TokenValue) -> String {
    match (&v.system, &v.code) {
        (None, Some(c)) => holds_term(b, &format!("{code}:{c}")),
        (Some(s), Some(c)) => holds_term(
            b,
            &format!("{code}|{}|{c}", s.as_deref().unwrap_or_default()),
        ),
        (Some(s), None) => {
            holds_prefix(b, &format!("{code}|{}|", s.as_deref().unwrap_or_default()))
        }
        (None, None) => holds_prefix(b, &format!("{code}|")),
    }
}

/// `_include` of an AuditEvent search: the live resources the page's AuditEvents reference
/// through `includes`, read from their bodies (`rid, res_type, id, body`, at most `limit`).
pub fn include_query(
    registry: &Registry,
    includes: &[Include],
    bodies: &[&str],
    limit: usize,
    dialect: Dialect,
) -> Option<SqlQuery> {
    let mut targets: Vec<(String, String)> = Vec::new();
    for body in bodies {
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        for row in crate::fhir::index::extract(registry, &v) {
            let IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(i),
                ..
            } = &row.value
            else {
                continue;
            };
            let wanted = includes.iter().any(|inc| {
                inc.source_type == AUDIT
                    && inc.param == row.param
                    && inc.target_type.as_deref().is_none_or(|w| w == t)
            });
            let pair = (t.clone(), i.clone());
            if wanted && !targets.contains(&pair) && targets.len() < limit {
                targets.push(pair);
            }
        }
    }
    if targets.is_empty() {
        return None;
    }
    let mut b = Builder::new(dialect);
    let alts: Vec<String> = targets
        .iter()
        .map(|(t, i)| format!("(t.res_type = {} AND t.id = {})", b.text(t), b.text(i)))
        .collect();
    let sql = format!(
        "SELECT t.rid, t.res_type, t.id, t.body FROM resources t \
         WHERE t.deleted = FALSE AND {} ORDER BY t.rid LIMIT {}",
        or_all(alts),
        b.int(i64::try_from(limit).unwrap_or(i64::MAX))
    );
    Some(b.finish(sql))
}

/// `_revinclude=AuditEvent:param[:Type]` of another type's search: the AuditEvents that
/// reference one of the resources `rids` (`rid` negated, `res_type`, `id`, `body`).
pub fn revinclude_query(
    revincludes: &[Include],
    rids: &[i64],
    limit: usize,
    dialect: Dialect,
) -> Option<SqlQuery> {
    let mine: Vec<&Include> = revincludes
        .iter()
        .filter(|i| i.source_type == AUDIT)
        .collect();
    let rids: Vec<i64> = rids.iter().copied().filter(|r| *r > 0).collect();
    if mine.is_empty() || rids.is_empty() {
        return None;
    }
    let mut b = Builder::new(dialect);
    let list: Vec<String> = rids.iter().map(|r| b.int(*r)).collect();
    let alts: Vec<String> = mine
        .iter()
        .map(|inc| {
            let mut c = format!("x.param = {}", b.text(&inc.param));
            if let Some(t) = &inc.target_type {
                c.push_str(&format!(" AND p.res_type = {}", b.text(t)));
            }
            c
        })
        .collect();
    let sql = format!(
        "SELECT -a.rid AS rid, 'AuditEvent' AS res_type, a.id, a.body FROM audit_event a \
         WHERE a.rid IN (SELECT x.rid FROM resources p \
         JOIN audit_ref x ON x.target_id = p.id AND x.target_type = p.res_type \
         WHERE p.rid IN ({list}) AND {alts}) ORDER BY a.rid LIMIT {limit}",
        list = list.join(", "),
        alts = or_all(alts),
        limit = b.int(i64::try_from(limit).unwrap_or(i64::MAX))
    );
    Some(b.finish(sql))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::index::IndexRow;

    fn token(param: &str, system: Option<&str>, code: &str) -> IndexRow {
        IndexRow {
            param: param.into(),
            value: IndexValue::Token {
                system: system.map(String::from),
                code: Some(code.into()),
                text: None,
            },
        }
    }

    #[test]
    fn terms_hold_each_value_once_between_separators() {
        let rows = vec![
            token("action", None, "R"),
            token(
                "subtype",
                Some("http://hl7.org/fhir/restful-interaction"),
                "read",
            ),
            token("action", None, "R"),
            IndexRow {
                param: "address".into(),
                value: IndexValue::String {
                    norm: "192.0.2.1".into(),
                    exact: "192.0.2.1".into(),
                },
            },
            IndexRow {
                param: "entity".into(),
                value: IndexValue::Reference {
                    target_type: Some("Patient".into()),
                    target_id: Some("p1".into()),
                    url: None,
                },
            },
            IndexRow {
                param: "date".into(),
                value: IndexValue::Date { lo: 10, hi: 19 },
            },
        ];
        let ix = index(&rows);
        let s = SEP;
        assert_eq!(
            ix.terms,
            format!(
                "{s}action:R{s}action||R{s}subtype:read{s}\
                 subtype|http://hl7.org/fhir/restful-interaction|read{s}\
                 address~192.0.2.1{s}address=192.0.2.1{s}entity@{s}"
            )
        );
        assert_eq!(ix.date, Some((10, 19)));
        assert_eq!(
            ix.refs,
            vec![AuditRef {
                param: "entity".into(),
                target_type: "Patient".into(),
                target_id: "p1".into()
            }]
        );
    }
}
