//! The walk of the open-slot index (`open_slot`, written with every Slot: see
//! `index::open_slot_rows`) that `$find` asks for: free Slots starting in a window, in start
//! order, optionally of some schedules and of some specialties. Each row carries the slot's
//! start, schedule and one specialty coding, so the walk tests them on the row it reads; the
//! Slot rows are read for the page only.

use crate::store::{Bind, SqlQuery};

/// One specialty asked for, in token form: `code` (any system), `|code` (no system),
/// `system|code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coding {
    /// `None`: any system; `Some("")`: none.
    pub system: Option<String>,
    pub code: String,
}

impl Coding {
    /// A token value `$find` can match on the open-slot index; `None` for forms it cannot
    /// (`system|`: every code of a system), which the generic search serves.
    pub fn parse(token: &str) -> Option<Coding> {
        match token.split_once('|') {
            Some((_, "")) => None,
            Some((s, c)) => Some(Coding {
                system: Some(s.to_string()),
                code: c.to_string(),
            }),
            None if !token.is_empty() => Some(Coding {
                system: None,
                code: token.to_string(),
            }),
            None => None,
        }
    }
}

/// What `$find` asks of the open-slot index.
#[derive(Debug, Clone, Default)]
pub struct OpenSlots {
    /// Start in `[from, to)`, µs.
    pub from: i64,
    pub to: i64,
    /// Schedule ids, any of them (`None`: every schedule).
    pub schedules: Option<Vec<String>>,
    /// Any of these specialties (empty: any slot).
    pub specialties: Vec<Coding>,
    pub limit: usize,
}

fn coding_cond(q: &mut SqlQuery, c: &Coding, x: &str) -> String {
    let code = q.push(Bind::Text(c.code.clone()));
    match c.system.as_deref() {
        None => format!("{x}.code = {code}"),
        Some("") => format!("{x}.code = {code} AND {x}.system IS NULL"),
        Some(s) => {
            let sys = q.push(Bind::Text(s.to_string()));
            format!("{x}.code = {code} AND {x}.system = {sys}")
        }
    }
}

/// `SELECT rid, id, body` of the Slots of the page, in start order (then rid).
pub fn open_slot_query(o: &OpenSlots) -> SqlQuery {
    let mut q = SqlQuery::default();
    let (from, to) = (q.push(Bind::Int(o.from)), q.push(Bind::Int(o.to)));
    let mut conds = vec![format!("x.lo >= {from}"), format!("x.lo < {to}")];
    match o.specialties.as_slice() {
        // Each slot once: its first row (a literal, so that SQLite uses the partial index).
        [] => conds.push("x.ord = 0".into()),
        // One coding with its system: a slot has one row of it at most.
        [c] if c.system.as_deref().is_some_and(|s| !s.is_empty()) => {
            conds.push(coding_cond(&mut q, c, "x"));
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
            let here = any(&mut q, "x");
            let before = any(&mut q, "y");
            conds.push(here);
            conds.push(format!(
                "NOT EXISTS (SELECT 1 FROM open_slot y WHERE y.rid = x.rid AND y.ord < x.ord \
                 AND {before})"
            ));
        }
    }
    if let Some(ids) = &o.schedules {
        let list: Vec<String> = ids.iter().map(|i| q.push(Bind::Text(i.clone()))).collect();
        conds.push(if list.is_empty() {
            "1 = 0".into()
        } else {
            format!("x.schedule IN ({})", list.join(", "))
        });
    }
    let limit = q.push(Bind::Int(i64::try_from(o.limit).unwrap_or(i64::MAX)));
    q.sql = format!(
        "SELECT o.rid, o.id, o.body FROM resources o JOIN \
         (SELECT x.rid AS rid, x.lo AS k FROM open_slot x WHERE {} \
         ORDER BY x.lo, x.rid LIMIT {limit}) p ON o.rid = p.rid \
         WHERE o.deleted = FALSE ORDER BY p.k, p.rid",
        conds.join(" AND ")
    );
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_in_token_form() {
        let c = |s: Option<&str>, code: &str| Coding {
            system: s.map(String::from),
            code: code.into(),
        };
        assert_eq!(Coding::parse("123"), Some(c(None, "123")));
        assert_eq!(Coding::parse("|123"), Some(c(Some(""), "123")));
        assert_eq!(
            Coding::parse("http://snomed.info/sct|123"),
            Some(c(Some("http://snomed.info/sct"), "123"))
        );
        assert_eq!(Coding::parse("http://snomed.info/sct|"), None);
        assert_eq!(Coding::parse(""), None);
    }

    #[test]
    fn walk_shapes() {
        let base = OpenSlots {
            from: 1,
            to: 2,
            limit: 10,
            ..Default::default()
        };
        let q = open_slot_query(&base);
        assert!(q.sql.contains("x.ord = 0"), "{}", q.sql);
        assert!(!q.sql.contains("NOT EXISTS"));
        assert_eq!(q.binds, vec![Bind::Int(1), Bind::Int(2), Bind::Int(10)]);

        let one = OpenSlots {
            specialties: vec![Coding::parse("s|c").unwrap()],
            schedules: Some(vec!["a".into(), "b".into()]),
            ..base.clone()
        };
        let q = open_slot_query(&one);
        assert!(q.sql.contains("x.code = $3 AND x.system = $4"), "{}", q.sql);
        assert!(q.sql.contains("x.schedule IN ($5, $6)"), "{}", q.sql);
        assert!(!q.sql.contains("ord"), "{}", q.sql);

        let many = OpenSlots {
            specialties: vec![Coding::parse("c").unwrap(), Coding::parse("|d").unwrap()],
            ..base.clone()
        };
        let q = open_slot_query(&many);
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
        assert!(open_slot_query(&none).sql.contains("1 = 0"));
    }
}
