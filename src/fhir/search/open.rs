//! The statements `$find` runs besides searches. Chiefly the walk of the open-slot index
//! (`open_slot`, written with every Slot: see `index::open_slot_rows`): free Slots starting in
//! a window, in start order, optionally of some schedules and of some specialties. Each row
//! carries the slot's start, schedule and one specialty coding, so the walk tests them on the
//! row it reads; the Slot rows are read for the page only. Also the walk's keys alone (for a
//! long schedule list the server tests itself), and reads by rid and by id (the proposals'
//! Schedules).
//!
//! All are marked `generic_plan`: one plan is right for every value (the walk's index follows
//! from the statement's shape: `ord = 0`, a code, or a list of schedules; rids and ids read by
//! key), and
//! PostgreSQL spent longer planning the walk for its values (0.5–0.9 ms with a few hundred
//! schedules) than running it (0.1–0.3 ms).

use crate::fhir::search::TokenValue;
use crate::store::{Bind, SqlQuery};

/// What `$find` asks of the open-slot index.
#[derive(Debug, Clone, Default)]
pub struct OpenSlots {
    /// Start in `[from, to)`, µs.
    pub from: i64,
    pub to: i64,
    /// Schedule ids, any of them (`None`: every schedule).
    pub schedules: Option<Vec<String>>,
    /// Any of these specialties (empty: any slot), each with a code (`system|` is not served
    /// by the index: see [`servable`]).
    pub specialties: Vec<TokenValue>,
    pub limit: usize,
}

/// Can the open-slot index match this token? Only with a code: `system|` (every code of a
/// system) is left to the generic search.
pub fn servable(t: &TokenValue) -> bool {
    t.code.is_some()
}

fn coding_cond(q: &mut SqlQuery, t: &TokenValue, x: &str) -> String {
    let code = q.push(Bind::Text(t.code.clone().unwrap_or_default()));
    match &t.system {
        None => format!("{x}.code = {code}"),
        Some(None) => format!("{x}.code = {code} AND {x}.system IS NULL"),
        Some(Some(s)) => {
            let sys = q.push(Bind::Text(s.clone()));
            format!("{x}.code = {code} AND {x}.system = {sys}")
        }
    }
}

/// Schedule lists longer than this are not sent with the walk: PostgreSQL tests a list of
/// bound values against each row walked one element at a time (a plan made for the values
/// hashes it, but planning a few hundred values took longer than the walk: 0.8 ms), so the
/// server walks the keys a page at a time and tests the schedule itself ([`open_keys_query`]).
pub const LIST_MAX: usize = 64;

/// The walk's conditions on `x` (window, after the cursor, specialties, schedules unless
/// `with_schedules` is false).
fn walk_conds(
    q: &mut SqlQuery,
    o: &OpenSlots,
    after: Option<(i64, i64)>,
    with_schedules: bool,
) -> Vec<String> {
    let (from, to) = (q.push(Bind::Int(o.from)), q.push(Bind::Int(o.to)));
    let mut conds = vec![format!("x.lo >= {from}"), format!("x.lo < {to}")];
    if let Some((lo, rid)) = after {
        let (lo, rid) = (q.push(Bind::Int(lo)), q.push(Bind::Int(rid)));
        conds.push(format!("(x.lo, x.rid) > ({lo}, {rid})"));
    }
    match o.specialties.as_slice() {
        // Each slot once: its first row (a literal, so that SQLite uses the partial index).
        [] => conds.push("x.ord = 0".into()),
        // One coding with its system: a slot has one row of it at most.
        [c] if matches!(c.system, Some(Some(_))) => {
            conds.push(coding_cond(q, c, "x"));
        }
        // Several, or a code of any system: a slot once, at its first matching row.
        many => {
            let any = |q: &mut SqlQuery, x: &str| {
                let alts: Vec<String> = many
                    .iter()
                    .map(|c| format!("({})", coding_cond(q, c, x)))
                    .collect();
                format!("({})", alts.join(" OR "))
            };
            let here = any(q, "x");
            let before = any(q, "y");
            conds.push(here);
            conds.push(format!(
                "NOT EXISTS (SELECT 1 FROM open_slot y WHERE y.rid = x.rid AND y.ord < x.ord \
                 AND {before})"
            ));
        }
    }
    if let (Some(ids), true) = (&o.schedules, with_schedules) {
        let list: Vec<String> = ids.iter().map(|i| q.push(Bind::Text(i.clone()))).collect();
        conds.push(if list.is_empty() {
            "1 = 0".into()
        } else {
            format!("x.schedule IN ({})", list.join(", "))
        });
    }
    conds
}

/// `SELECT rid, id, body` of the Slots of the page, in start order (then rid), walked after
/// `after` (`(lo, rid)` of the last row already taken), the schedule list in the statement.
pub fn open_slot_query(o: &OpenSlots, after: Option<(i64, i64)>) -> SqlQuery {
    let mut q = SqlQuery::default();
    let conds = walk_conds(&mut q, o, after, true);
    let limit = q.push(Bind::Int(i64::try_from(o.limit).unwrap_or(i64::MAX)));
    q.sql = format!(
        "SELECT o.rid, o.id, o.body FROM resources o JOIN \
         (SELECT x.rid AS rid, x.lo AS k FROM open_slot x WHERE {} \
         ORDER BY x.lo, x.rid LIMIT {limit}) p ON o.rid = p.rid \
         WHERE o.deleted = FALSE ORDER BY p.k, p.rid",
        conds.join(" AND ")
    );
    q.generic_plan = true;
    q
}

/// `SELECT rid, lo, schedule` of `page` rows of the walk after `after`, whatever their
/// schedule (the caller tests it): index-only, nothing of the Slots read.
pub fn open_keys_query(o: &OpenSlots, after: Option<(i64, i64)>, page: usize) -> SqlQuery {
    let mut q = SqlQuery::default();
    let conds = walk_conds(&mut q, o, after, false);
    let limit = q.push(Bind::Int(i64::try_from(page).unwrap_or(i64::MAX)));
    q.sql = format!(
        "SELECT x.rid, x.lo, x.schedule FROM open_slot x WHERE {} \
         ORDER BY x.lo, x.rid LIMIT {limit}",
        conds.join(" AND ")
    );
    q.generic_plan = true;
    q
}

/// `SELECT rid, id, body` of the live resources with these rids.
pub fn by_rids_query(rids: &[i64]) -> Option<SqlQuery> {
    if rids.is_empty() {
        return None;
    }
    let mut q = SqlQuery::default();
    let list: Vec<String> = rids.iter().map(|r| q.push(Bind::Int(*r))).collect();
    q.sql = format!(
        "SELECT rid, id, body FROM resources WHERE rid IN ({}) AND deleted = FALSE",
        list.join(", ")
    );
    q.generic_plan = true;
    Some(q)
}

/// `SELECT rid, id, body` of the live resources of type `rt` with these ids (at most as many
/// as ids), by key. `None` without ids.
pub fn by_ids_query(rt: &str, ids: &[&str]) -> Option<SqlQuery> {
    if ids.is_empty() {
        return None;
    }
    let mut q = SqlQuery::default();
    let t = q.push(Bind::Text(rt.to_string()));
    let list: Vec<String> = ids
        .iter()
        .map(|i| q.push(Bind::Text(i.to_string())))
        .collect();
    q.sql = format!(
        "SELECT rid, id, body FROM resources WHERE res_type = {t} AND id IN ({}) \
         AND deleted = FALSE",
        list.join(", ")
    );
    q.generic_plan = true;
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(v: &str) -> Vec<TokenValue> {
        crate::fhir::search::parse::token_list(v).unwrap()
    }

    #[test]
    fn tokens_as_a_search_reads_them() {
        let t = |s: Option<Option<&str>>, code: Option<&str>| TokenValue {
            system: s.map(|s| s.map(String::from)),
            code: code.map(String::from),
        };
        assert_eq!(tokens("123"), [t(None, Some("123"))]);
        assert_eq!(tokens("|123"), [t(Some(None), Some("123"))]);
        assert_eq!(
            tokens("http://snomed.info/sct|1,2"),
            [
                t(Some(Some("http://snomed.info/sct")), Some("1")),
                t(None, Some("2"))
            ]
        );
        assert_eq!(tokens(r"a\,b"), [t(None, Some("a,b"))]);
        assert!(!servable(&tokens("http://snomed.info/sct|")[0]));
        assert!(crate::fhir::search::parse::token_list("a|b|c").is_none());
    }

    #[test]
    fn walk_shapes() {
        let base = OpenSlots {
            from: 1,
            to: 2,
            limit: 10,
            ..Default::default()
        };
        let q = open_slot_query(&base, None);
        assert!(q.sql.contains("x.ord = 0"), "{}", q.sql);
        assert!(!q.sql.contains("NOT EXISTS"));
        assert_eq!(q.binds, vec![Bind::Int(1), Bind::Int(2), Bind::Int(10)]);
        assert!(q.generic_plan);

        let one = OpenSlots {
            specialties: tokens("s|c"),
            schedules: Some(vec!["a".into(), "b".into()]),
            ..base.clone()
        };
        let q = open_slot_query(&one, None);
        assert!(q.sql.contains("x.code = $3 AND x.system = $4"), "{}", q.sql);
        assert!(q.sql.contains("x.schedule IN ($5, $6)"), "{}", q.sql);
        assert!(!q.sql.contains("ord"), "{}", q.sql);

        let many = OpenSlots {
            specialties: tokens("c,|d"),
            ..base.clone()
        };
        let q = open_slot_query(&many, None);
        assert!(
            q.sql.contains(
                "NOT EXISTS (SELECT 1 FROM open_slot y WHERE y.rid = x.rid AND y.ord < x.ord"
            ),
            "{}",
            q.sql
        );

        let none = OpenSlots {
            schedules: Some(Vec::new()),
            ..base
        };
        assert!(open_slot_query(&none, None).sql.contains("1 = 0"));

        let keys = open_keys_query(&one, Some((5, 6)), 256);
        assert!(
            keys.sql.contains("(x.lo, x.rid) > ($3, $4)"),
            "{}",
            keys.sql
        );
        assert!(!keys.sql.contains("schedule IN"), "{}", keys.sql);
        assert_eq!(keys.binds.last(), Some(&Bind::Int(256)));
    }
}
