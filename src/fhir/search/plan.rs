//! `SearchRequest` → SQL over `resources` and the `idx_*` tables.
//!
//! Shape: the filter expected to be the most selective drives, as a semi-join
//! `r.rid IN (SELECT x.rid FROM idx_… x WHERE x.res_type = $ AND x.param = $ AND …)` served by the
//! `(res_type, param, value…)` indexes; every other filter is a correlated
//! `EXISTS (SELECT 1 FROM idx_… x WHERE x.rid = r.rid AND x.param = $ AND …)` probe on the
//! `(rid, param)` indexes. PostgreSQL turns both into semi-joins and orders them by its
//! statistics; SQLite, which has none unless ANALYZE ran, follows the shape: one list, then
//! probes. Negations (`:not`, `:missing=true`) are `NOT EXISTS` probes. Values only ever appear
//! as binds.

use std::borrow::Cow;

use crate::fhir::registry::{ParamType, Registry};
use crate::store::sql::{Bind, Dialect, SqlQuery};

use super::{
    DateValue, Filter, Include, IndexTable, NearValue, NumberValue, ParamTest, Prefix,
    QuantityValue, RefValue, SearchRequest, SortKind, StringMode, Test, TestKind, TokenValue,
    UriMode,
};

/// Marks a bind in SQL under construction; `finish` turns the marks into `$1..$n` in order of
/// appearance. SQL text never holds user input, so the mark cannot collide.
const MARK: char = '\u{1}';

/// The largest character: `prefix || MAX_CHAR` bounds every string that starts with `prefix`.
const MAX_CHAR: char = '\u{10FFFF}';

pub(super) struct Builder {
    pub(super) dialect: Dialect,
    binds: Vec<Bind>,
    aliases: usize,
    /// See `SqlQuery::generic_plan`.
    generic_plan: bool,
}

impl Builder {
    pub(super) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            binds: Vec::new(),
            aliases: 0,
            generic_plan: false,
        }
    }

    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("{MARK}{}{MARK}", self.binds.len() - 1)
    }

    pub(super) fn text(&mut self, s: &str) -> String {
        self.bind(Bind::Text(s.to_string()))
    }

    pub(super) fn int(&mut self, i: i64) -> String {
        self.bind(Bind::Int(i))
    }

    fn float(&mut self, f: f64) -> String {
        self.bind(Bind::Float(f))
    }

    /// A fresh table alias for a subquery.
    pub(super) fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    /// Numbers the binds in order of their appearance in `sql`.
    pub(super) fn finish(self, sql: String) -> SqlQuery {
        let mut slots: Vec<Option<Bind>> = self.binds.into_iter().map(Some).collect();
        let mut out = SqlQuery {
            sql: String::with_capacity(sql.len()),
            binds: Vec::with_capacity(slots.len()),
            generic_plan: self.generic_plan,
        };
        let mut parts = sql.split(MARK);
        if let Some(first) = parts.next() {
            out.sql.push_str(first);
        }
        // After the first part, the parts alternate: bind index, text.
        while let Some(index) = parts.next() {
            let bind = index
                .parse::<usize>()
                .ok()
                .and_then(|i| slots.get_mut(i))
                .and_then(Option::take);
            if let Some(bind) = bind {
                let placeholder = out.push(bind);
                out.sql.push_str(&placeholder);
            }
            if let Some(text) = parts.next() {
                out.sql.push_str(text);
            }
        }
        out
    }
}

/// How a test on indexed values is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// `rid IN (SELECT rid FROM idx … WHERE res_type AND param AND values)`: drives.
    In,
    /// `EXISTS (SELECT 1 FROM idx … WHERE rid = outer AND param AND values)`: probes.
    Exists,
}

/// How the resource row a test applies to is reachable.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    /// A `resources` alias: `rid`, `id`, `last_updated` are at hand.
    Row(&'a str),
    /// Only the rid, as this SQL expression.
    Rid(&'a str),
}

impl SearchRequest {
    /// The page: `rid, id, body` of up to `count + 1` matches (the extra row tells whether there
    /// is a next page), skipping `offset`.
    pub fn page_query(&self, registry: &Registry, dialect: Dialect) -> SqlQuery {
        if self.resource_type == super::audit::AUDIT {
            return super::audit::page_query(self, dialect);
        }
        self.merged(registry).page_query_merged(registry, dialect)
    }

    fn page_query_merged(&self, registry: &Registry, dialect: Dialect) -> SqlQuery {
        let mut b = Builder::new(dialect);
        if self.sort.is_empty() {
            if let Some(sql) = self.rid_page_sql(&mut b) {
                return b.finish(sql);
            }
        }
        if let Some(sql) = self.date_sort_sql(registry, &mut b) {
            return b.finish(sql);
        }
        let mut sql = String::from("SELECT r.rid, r.id, r.body FROM resources r WHERE ");
        sql.push_str(&self.where_clause(registry, &mut b));
        sql.push_str(" ORDER BY ");
        for key in &self.sort {
            let dir = if key.descending { "DESC" } else { "ASC" };
            let expr = match key.kind {
                SortKind::Id => "r.id".to_string(),
                SortKind::LastUpdated => "r.last_updated".to_string(),
                SortKind::Index(ptype) => match sort_column(ptype, key.descending) {
                    Some((table, agg)) => {
                        let x = b.alias("s");
                        let param = b.text(&key.param);
                        let col = agg_column(ptype, key.descending);
                        format!(
                            "(SELECT {agg}({x}.{col}) FROM {table} {x} \
                             WHERE {x}.rid = r.rid AND {x}.param = {param})"
                        )
                    }
                    None => continue,
                },
            };
            sql.push_str(&format!("{expr} {dir} NULLS LAST, "));
        }
        sql.push_str("r.rid ASC LIMIT ");
        let limit = i64::try_from(self.count.saturating_add(1)).unwrap_or(i64::MAX);
        sql.push_str(&b.int(limit));
        sql.push_str(" OFFSET ");
        sql.push_str(&b.int(i64::try_from(self.offset).unwrap_or(i64::MAX)));
        b.finish(sql)
    }

    /// The page in the default order (`rid`) with the LIMIT pushed into the driving subquery:
    /// `r.rid IN (SELECT x.rid FROM idx_… x WHERE <driver> AND <probes on x.rid> GROUP BY x.rid
    /// ORDER BY x.rid LIMIT n OFFSET o)`. Every filter is tested on the index rows, so only the
    /// page's resource rows (bodies) are read, instead of every match's before the sort (the
    /// slot search: 21 rows instead of ~200). `GROUP BY` keeps a resource with several matching
    /// index rows to one place. None when no filter can drive from an index table.
    fn rid_page_sql(&self, b: &mut Builder) -> Option<String> {
        let driver = self.driver()?;
        let Test::Param(p) = &self.filters.get(driver)?.test else {
            return None;
        };
        let (table, kind) = match &p.kind {
            TestKind::Missing {
                table,
                missing: false,
            } => (*table, None),
            TestKind::Missing { .. }
            | TestKind::Token { not: true, .. }
            | TestKind::Id(_)
            | TestKind::LastUpdated(_) => return None,
            kind => (table_of(kind)?, Some(kind)),
        };
        let rt = b.text(&self.resource_type);
        let outer = format!(
            "SELECT r.rid, r.id, r.body FROM resources r WHERE r.res_type = {rt} AND \
             r.deleted = FALSE AND "
        );
        let mut sql = String::from("r.rid IN (");
        let x = b.alias("x");
        let (t, code) = (b.text(&self.resource_type), b.text(&p.code));
        sql.push_str(&format!(
            "SELECT {x}.rid FROM {table} {x} WHERE {x}.res_type = {t} AND {x}.param = {code}",
            table = table.name()
        ));
        if let Some(kind) = kind {
            let cond = values_cond(b, kind, &x);
            sql.push_str(" AND ");
            sql.push_str(&cond);
        }
        let rid = format!("{x}.rid");
        for (i, f) in self.filters.iter().enumerate() {
            if i == driver {
                continue;
            }
            sql.push_str(" AND ");
            sql.push_str(&test_sql(
                b,
                &f.test,
                &self.resource_type,
                Scope::Rid(&rid),
                Form::Exists,
            ));
        }
        let limit = i64::try_from(self.count.saturating_add(1)).unwrap_or(i64::MAX);
        let offset = i64::try_from(self.offset).unwrap_or(i64::MAX);
        // One value of full equality on the lookup index (a Slot's schedule) is read in rid
        // order from it (the index ends in rid) and the walk stops at the page. A few other
        // references or ids drive too: their rows come from the lookup index and are sorted.
        // Ordering by `rid + 0` keeps PostgreSQL from walking the whole `(rid, param)` index in
        // rid order instead, hoping to meet the page early — what its estimates choose once
        // they drift, though a resource's matches sit together in rid order (a schedule's
        // slots). Measured on the 100k-slot benchmark after a read and a create run had added
        // audit rows: 316 instead of 1,036 slot searches/s.
        let test = &self.filters[driver].test;
        // Walked in rid order and every other filter a probe of the walked rid on its
        // `(rid, param)` index: the only plan worth making, whatever the values. Planned per
        // execution it cost PostgreSQL twice what running it did (0.5 ms for the slot
        // search), as much CPU as the rest of the request.
        b.generic_plan = rid_ordered(test)
            && self.filters.iter().enumerate().all(|(i, f)| {
                i == driver
                    || matches!(&f.test, Test::Param(p)
                        if !matches!(p.kind, TestKind::Id(_) | TestKind::LastUpdated(_)))
            });
        let order = if few_values(test) && !rid_ordered(test) {
            format!("{rid} + 0")
        } else {
            rid.clone()
        };
        sql.push_str(&format!(
            " GROUP BY {rid} ORDER BY {order} LIMIT {} OFFSET {})",
            b.int(limit),
            b.int(offset)
        ));
        // PostgreSQL: the page's rids as an array computed first, then read by primary key.
        // As a semi-join it may instead scan every resource of the type and probe the page
        // for each, when its statistics say the type is rare (they lag behind a table that
        // grows: 7.8 ms instead of 0.1 ms for the booking's hold check).
        if b.dialect == Dialect::Postgres {
            sql = in_as_array(sql, "r.rid");
        }
        Some(format!("{outer}{sql} ORDER BY r.rid ASC"))
    }

    /// The index of the filter expected to be the most selective that can drive.
    fn driver(&self) -> Option<usize> {
        self.filters
            .iter()
            .enumerate()
            .filter(|(_, f)| rank(&f.test) < NOT_A_DRIVER)
            .min_by_key(|(i, f)| (rank(&f.test), *i))
            .map(|(i, _)| i)
    }

    /// `SELECT COUNT(*)` of all matches.
    pub fn count_query(&self, registry: &Registry, dialect: Dialect) -> SqlQuery {
        if self.resource_type == super::audit::AUDIT {
            return super::audit::count_query(self, dialect);
        }
        let req = self.merged(registry);
        let mut b = Builder::new(dialect);
        let mut sql = String::from("SELECT COUNT(*) FROM resources r WHERE ");
        sql.push_str(&req.where_clause(registry, &mut b));
        b.finish(sql)
    }

    /// The request with the date tests of each parameter that indexes at most one narrow value
    /// per resource (`Registry::date_width`) merged into one `DateRow` test, at the place of the
    /// first: for such a resource, `start=ge…&start=lt…` (two tests that any values may meet)
    /// is the same as both on its one row, which bounds `lo` from both sides: one index range
    /// instead of two open-ended probes. Only when two or more tests merge, or the parameter
    /// is the `_sort` key (the ordered walk of `date_sort_sql` is bounded by it).
    fn merged(&self, registry: &Registry) -> Cow<'_, SearchRequest> {
        let sort_param = match self.sort.as_slice() {
            [key] if key.kind == SortKind::Index(ParamType::Date) => Some(key.param.as_str()),
            _ => None,
        };
        // Parameter code → (width, indexes of its date filters).
        let mut groups: Vec<(&str, i64, Vec<usize>)> = Vec::new();
        for (i, f) in self.filters.iter().enumerate() {
            let Test::Param(ParamTest {
                code,
                kind: TestKind::Date(_),
            }) = &f.test
            else {
                continue;
            };
            let Some(width) = registry.date_width(&self.resource_type, code) else {
                continue;
            };
            match groups.iter_mut().find(|(c, _, _)| c == code) {
                Some((_, _, members)) => members.push(i),
                None => groups.push((code, width, vec![i])),
            }
        }
        groups.retain(|(code, _, members)| members.len() > 1 || sort_param == Some(*code));
        if groups.is_empty() {
            return Cow::Borrowed(self);
        }
        let mut out = self.clone();
        out.filters.clear();
        for (i, f) in self.filters.iter().enumerate() {
            let Some((code, width, members)) = groups.iter().find(|(_, _, m)| m.contains(&i))
            else {
                out.filters.push(f.clone());
                continue;
            };
            if members.first() != Some(&i) {
                continue;
            }
            let groups: Vec<Vec<DateValue>> = members
                .iter()
                .filter_map(|m| match &self.filters.get(*m)?.test {
                    Test::Param(ParamTest {
                        kind: TestKind::Date(values),
                        ..
                    }) => Some(values.clone()),
                    _ => None,
                })
                .collect();
            let (lo_min, lo_max) = row_lo_bounds(&groups, *width);
            out.filters.push(Filter {
                name: code.to_string(),
                value: String::new(),
                test: Test::Param(ParamTest {
                    code: code.to_string(),
                    kind: TestKind::DateRow {
                        groups,
                        lo_min,
                        lo_max,
                    },
                }),
            });
        }
        Cow::Owned(out)
    }

    /// The page when the one `_sort` key is a date parameter: the matches are read from
    /// `idx_date` in the order of the sort (`lo, rid` ascending, `hi DESC, rid` descending), and
    /// the walk stops at the page, instead of the sort value of every match being computed
    /// (a correlated `MIN`/`MAX`) and sorted. A resource's sort value is the lowest `lo` of its
    /// values ascending, the highest `hi` descending: a row is kept only when no other row of
    /// its resource comes before it (`NOT EXISTS`), rows equal in both kept once (`GROUP BY`).
    /// Unneeded for a parameter of one value per resource, whose merged tests (`DateRow`) then
    /// apply to the walked row itself and bound the walk. Resources without a value come last
    /// (by rid), read only when the walk did not fill the page; not at all when a filter needs
    /// a value of the parameter.
    fn date_sort_sql(&self, registry: &Registry, b: &mut Builder) -> Option<String> {
        let [key] = self.sort.as_slice() else {
            return None;
        };
        if key.kind != SortKind::Index(ParamType::Date) {
            return None;
        }
        let desc = key.descending;
        let (col, dir, before) = if desc {
            ("hi", "DESC", ">")
        } else {
            ("lo", "ASC", "<")
        };
        let on_row = self.filters.iter().position(|f| {
            matches!(&f.test, Test::Param(ParamTest { code, kind: TestKind::DateRow { .. } })
                if *code == key.param)
        });
        let needs_value = self.filters.iter().any(|f| match &f.test {
            Test::Param(p) if p.code == key.param => matches!(
                p.kind,
                TestKind::Date(_)
                    | TestKind::DateRow { .. }
                    | TestKind::Missing { missing: false, .. }
            ),
            _ => false,
        });
        let limit = i64::try_from(self.count.saturating_add(1)).unwrap_or(i64::MAX);
        let offset = i64::try_from(self.offset).unwrap_or(i64::MAX);
        let walk_limit = limit.saturating_add(offset);

        // The walk over the sort parameter's index rows.
        let x = b.alias("x");
        let rid = format!("{x}.rid");
        let (t, p) = (b.text(&self.resource_type), b.text(&key.param));
        let mut walk = format!(
            "SELECT {rid} AS rid, {x}.{col} AS k FROM idx_date {x} \
             WHERE {x}.res_type = {t} AND {x}.param = {p}"
        );
        if let Some(Test::Param(pt)) = on_row.and_then(|i| self.filters.get(i)).map(|f| &f.test) {
            walk.push_str(" AND ");
            walk.push_str(&values_cond(b, &pt.kind, &x));
        }
        // The filter expected to be the most selective, if more than a date range, as a list
        // the rows may come from instead, then sorted (SQLite plans by the shape: a list it
        // may start from, probes it may not; PostgreSQL, by its statistics, either way). When
        // the walk is a bounded range, only a list of a few ids or references: a token, a
        // chain or a long list of references (`$find`: the schedules of a location) may match
        // far more rows than the walk needs to read.
        let bounded = matches!(
            on_row.and_then(|i| self.filters.get(i)).map(|f| &f.test),
            Some(Test::Param(ParamTest {
                kind: TestKind::DateRow {
                    lo_min: Some(_),
                    lo_max: Some(_),
                    ..
                },
                ..
            }))
        );
        let list = self
            .filters
            .iter()
            .enumerate()
            .filter(|(i, f)| Some(*i) != on_row && rank(&f.test) < rank_of_date())
            .filter(|(_, f)| !bounded || few_values(&f.test))
            .min_by_key(|(i, f)| (rank(&f.test), *i))
            .map(|(i, _)| i);
        for (i, f) in self.filters.iter().enumerate() {
            if Some(i) == on_row {
                continue;
            }
            let form = if Some(i) == list {
                Form::In
            } else {
                Form::Exists
            };
            let mut cond = test_sql(b, &f.test, &self.resource_type, Scope::Rid(&rid), form);
            if Some(i) == list && few_values(&f.test) && b.dialect == Dialect::Postgres {
                cond = in_as_array(cond, &rid);
            }
            walk.push_str(" AND ");
            walk.push_str(&cond);
        }
        if on_row.is_none() {
            let (y, p2) = (b.alias("y"), b.text(&key.param));
            walk.push_str(&format!(
                " AND NOT EXISTS (SELECT 1 FROM idx_date {y} WHERE {y}.rid = {rid} \
                 AND {y}.param = {p2} AND {y}.{col} {before} {x}.{col}) \
                 GROUP BY {x}.{col}, {rid}"
            ));
        }
        walk.push_str(&format!(
            " ORDER BY {x}.{col} {dir}, {rid} ASC LIMIT {}",
            b.int(walk_limit)
        ));

        let rt = b.text(&self.resource_type);
        let page = format!(
            " WHERE o.res_type = {rt} AND o.deleted = FALSE \
             ORDER BY p.part, p.k {dir}, p.rid ASC LIMIT {} OFFSET {}",
            b.int(limit),
            b.int(offset)
        );
        if needs_value {
            return Some(format!(
                "SELECT o.rid, o.id, o.body FROM resources o JOIN \
                 (SELECT w.rid, 0 AS part, w.k FROM ({walk}) w) p ON o.rid = p.rid{page}"
            ));
        }
        // The matches without a value, by rid; only read when the walk found fewer than it
        // may keep: `g` has its one row only then, and is the outer loop (`CROSS JOIN` fixes
        // the order on SQLite, which does not test the condition once first by itself;
        // PostgreSQL does: a one-time filter).
        let z = b.alias("z");
        let p3 = b.text(&key.param);
        let enough = b.int(walk_limit);
        let cond = self.where_clause(registry, b);
        let missing = format!(
            "SELECT r.rid FROM (SELECT 1 AS one WHERE (SELECT COUNT(*) FROM a) < {enough}) g \
             CROSS JOIN resources r WHERE {cond} AND NOT EXISTS \
             (SELECT 1 FROM idx_date {z} WHERE {z}.rid = r.rid AND {z}.param = {p3}) \
             ORDER BY r.rid LIMIT {}",
            b.int(walk_limit)
        );
        Some(format!(
            "WITH a AS ({walk}) SELECT o.rid, o.id, o.body FROM resources o JOIN \
             (SELECT a.rid, 0 AS part, a.k FROM a UNION ALL \
             SELECT m.rid, 1 AS part, NULL AS k FROM ({missing}) m) p ON o.rid = p.rid{page}"
        ))
    }

    fn where_clause(&self, _registry: &Registry, b: &mut Builder) -> String {
        let rt = b.text(&self.resource_type);
        let mut conds = vec![
            format!("r.res_type = {rt}"),
            "r.deleted = FALSE".to_string(),
        ];
        let driver = self.driver();
        let order = driver
            .into_iter()
            .chain((0..self.filters.len()).filter(|i| Some(*i) != driver));
        for i in order {
            let Some(f) = self.filters.get(i) else {
                continue;
            };
            let form = if Some(i) == driver {
                Form::In
            } else {
                Form::Exists
            };
            conds.push(test_sql(
                b,
                &f.test,
                &self.resource_type,
                Scope::Row("r"),
                form,
            ));
        }
        conds.join(" AND ")
    }
}

/// Rank at and above which a filter cannot drive (negations, unindexable patterns).
const NOT_A_DRIVER: u8 = 9;

/// How selective a filter is expected to be, lower = more (a heuristic for SQLite, which plans
/// without statistics; PostgreSQL reorders by its own).
fn rank(test: &Test) -> u8 {
    match test {
        Test::Chain { .. } | Test::Has { .. } => 2,
        Test::Param(p) => match &p.kind {
            TestKind::Id(_) => 0,
            TestKind::Reference(_) => 1,
            TestKind::Token { not: false, values }
                if values
                    .iter()
                    .all(|v| v.code.is_some() && v.system.is_some()) =>
            {
                1
            }
            TestKind::Token { not: false, .. } => 4,
            TestKind::String {
                mode: StringMode::Exact,
                ..
            }
            | TestKind::Uri {
                mode: UriMode::Exact | UriMode::Above,
                ..
            } => 2,
            TestKind::String {
                mode: StringMode::StartsWith,
                ..
            }
            | TestKind::Uri {
                mode: UriMode::Below,
                ..
            } => 3,
            // One bounded range on the index.
            TestKind::DateRow { .. } => 3,
            TestKind::Date(_)
            | TestKind::LastUpdated(_)
            | TestKind::Number(_)
            | TestKind::Quantity(_)
            | TestKind::Near(_) => 4,
            TestKind::Missing { missing: false, .. } => 5,
            TestKind::String {
                mode: StringMode::Contains,
                ..
            }
            | TestKind::TokenText(_) => 6,
            TestKind::Missing { missing: true, .. } | TestKind::Token { not: true, .. } => {
                NOT_A_DRIVER
            }
        },
    }
}

/// `{rid} IN (subquery)` → `{rid} = ANY(ARRAY(subquery))` (PostgreSQL): the list is computed
/// first (an InitPlan) and its rows are read by key, whatever PostgreSQL's estimates say. As a
/// semi-join, a date walk's list may instead be probed for every row of the whole date range
/// when the range's estimate is low — it is, for a window of `Slot.start` among millions of
/// dates: `$find` for one practitioner walked 9,933 index rows in 44 ms instead of reading
/// the schedule's 200 in 0.4 ms. For lists whose rows are few: a page, or a few values
/// (`few_values`).
fn in_as_array(cond: String, rid: &str) -> String {
    match cond.strip_prefix(&format!("{rid} IN (")) {
        Some(rest) => format!("{rid} = ANY(ARRAY({rest})"),
        None => cond,
    }
}

/// A test of a few ids or local references: a short list to start from.
fn few_values(test: &Test) -> bool {
    match test {
        Test::Param(ParamTest {
            kind: TestKind::Id(ids),
            ..
        }) => ids.len() <= FEW,
        Test::Param(ParamTest {
            kind: TestKind::Reference(values),
            ..
        }) => values.len() <= FEW,
        _ => false,
    }
}

/// One typed local reference: an equality on every column of `idx_reference_lookup` before
/// `rid` (migrations 0016), so its rows come from the index in rid order.
fn rid_ordered(test: &Test) -> bool {
    matches!(
        test,
        Test::Param(ParamTest { kind: TestKind::Reference(values), .. })
            if matches!(values.as_slice(), [RefValue::Local { type_: Some(_), .. }])
    )
}

/// How many values are "a few" (`few_values`).
const FEW: usize = 5;

/// The rank of a plain date test.
fn rank_of_date() -> u8 {
    4
}

/// Bounds on the `lo` of a row of a parameter narrower than `width` (`hi - lo < width`) that
/// meets every group of date tests (values ORed), as an index range; `None` = unbounded.
fn row_lo_bounds(groups: &[Vec<DateValue>], width: i64) -> (Option<i64>, Option<i64>) {
    let one = |v: &DateValue| -> (Option<i64>, Option<i64>) {
        let below = |x: i64| Some(x.saturating_sub(width));
        match v.prefix {
            Prefix::Eq => (Some(v.lo), Some(v.hi)),
            Prefix::Ne => (None, None),
            // hi > shi, hi >= slo: lo > hi - width.
            Prefix::Gt => (below(v.hi), None),
            Prefix::Ge => (below(v.lo), None),
            Prefix::Lt => (None, Some(v.lo.saturating_sub(1))),
            Prefix::Le => (None, Some(v.hi)),
            Prefix::Sa => (Some(v.hi.saturating_add(1)), None),
            // hi < slo, and lo <= hi.
            Prefix::Eb => (None, Some(v.lo.saturating_sub(1))),
            Prefix::Ap => (below(v.lo), Some(v.hi)),
        }
    };
    let (mut lo_min, mut lo_max): (Option<i64>, Option<i64>) = (None, None);
    for group in groups {
        // ORed values: the loosest bound of each side, none if any value has none.
        let mut g_min = Some(i64::MAX);
        let mut g_max = Some(i64::MIN);
        for v in group {
            let (a, c) = one(v);
            g_min = g_min.zip(a).map(|(x, y)| x.min(y));
            g_max = g_max.zip(c).map(|(x, y)| x.max(y));
        }
        if group.is_empty() {
            (g_min, g_max) = (None, None);
        }
        // ANDed groups: the tightest.
        lo_min = match (lo_min, g_min) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        lo_max = match (lo_max, g_max) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
    }
    (lo_min, lo_max)
}

/// The index table and aggregate that give a resource's sort value for a parameter type.
fn sort_column(ptype: ParamType, descending: bool) -> Option<(&'static str, &'static str)> {
    let table = IndexTable::of(ptype)?.name();
    Some((table, if descending { "MAX" } else { "MIN" }))
}

fn agg_column(ptype: ParamType, descending: bool) -> &'static str {
    match ptype {
        ParamType::Date if descending => "hi",
        ParamType::Date => "lo",
        ParamType::String => "norm",
        ParamType::Token => "code",
        ParamType::Number | ParamType::Quantity => "value",
        ParamType::Uri => "uri",
        _ => "target_id",
    }
}

/// A chain's targets as a test on the reference row `c`: it points at a live resource of one of
/// the types that matches that type's test.
pub(super) fn chain_targets(b: &mut Builder, targets: &[(String, ParamTest)], c: &str) -> String {
    let mut alts = Vec::new();
    for (target, inner) in targets {
        let t = b.alias("t");
        let tt = b.text(target);
        let tt2 = b.text(target);
        let cond = param_sql(b, inner, target, Scope::Row(&t), Form::In);
        alts.push(format!(
            "({c}.target_type = {tt} AND {c}.target_id IN \
             (SELECT {t}.id FROM resources {t} \
             WHERE {t}.res_type = {tt2} AND {t}.deleted = FALSE AND {cond}))"
        ));
    }
    or_all(alts)
}

pub(super) fn test_sql(b: &mut Builder, test: &Test, rt: &str, scope: Scope, form: Form) -> String {
    match test {
        Test::Param(p) => param_sql(b, p, rt, scope, form),
        Test::Chain { param, targets } => {
            let c = b.alias("c");
            let src = b.text(rt);
            let p = b.text(param);
            let alts = chain_targets(b, targets, &c);
            let rid = rid_of(scope);
            match form {
                Form::In => format!(
                    "{rid} IN (SELECT {c}.rid FROM idx_reference {c} \
                     WHERE {c}.res_type = {src} AND {c}.param = {p} AND {c}.url IS NULL AND {alts})"
                ),
                Form::Exists => format!(
                    "EXISTS (SELECT 1 FROM idx_reference {c} \
                     WHERE {c}.rid = {rid} AND {c}.param = {p} AND {c}.res_type = {src} \
                     AND {c}.url IS NULL AND {alts})"
                ),
            }
        }
        Test::Has {
            source_type,
            ref_param,
            inner,
        } => {
            let h = b.alias("h");
            let src = b.text(source_type);
            let p = b.text(ref_param);
            let target = b.text(rt);
            let h_rid = format!("{h}.rid");
            let cond = param_sql(b, inner, source_type, Scope::Rid(&h_rid), Form::In);
            let refs =
                format!("{h}.res_type = {src} AND {h}.param = {p} AND {h}.url IS NULL AND {cond}");
            with_row(b, scope, rt, |_, row| match form {
                Form::In => format!(
                    "{row}.id IN (SELECT {h}.target_id FROM idx_reference {h} \
                     WHERE {h}.target_type = {target} AND {refs})"
                ),
                Form::Exists => format!(
                    "EXISTS (SELECT 1 FROM idx_reference {h} \
                     WHERE {h}.target_type = {target} AND {h}.target_id = {row}.id AND {refs})"
                ),
            })
        }
    }
}

fn rid_of(scope: Scope) -> String {
    match scope {
        Scope::Row(a) => format!("{a}.rid"),
        Scope::Rid(e) => e.to_string(),
    }
}

/// Runs `f` with a `resources` alias for the scope, adding a lookup by rid when only the rid is
/// known.
fn with_row(
    b: &mut Builder,
    scope: Scope,
    rt: &str,
    f: impl FnOnce(&mut Builder, &str) -> String,
) -> String {
    match scope {
        Scope::Row(a) => f(b, a),
        Scope::Rid(e) => {
            let s = b.alias("w");
            let t = b.text(rt);
            let cond = f(b, &s);
            format!(
                "{e} IN (SELECT {s}.rid FROM resources {s} \
                 WHERE {s}.res_type = {t} AND {s}.deleted = FALSE AND {cond})"
            )
        }
    }
}

pub(super) fn or_all(alts: Vec<String>) -> String {
    match alts.len() {
        0 => "1 = 0".to_string(),
        1 => alts.into_iter().next().unwrap_or_default(),
        _ => format!(
            "({})",
            alts.iter()
                .map(|a| format!("({a})"))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
    }
}

pub(super) fn param_sql(
    b: &mut Builder,
    test: &ParamTest,
    rt: &str,
    scope: Scope,
    form: Form,
) -> String {
    let code = test.code.as_str();
    match &test.kind {
        TestKind::Id(ids) => with_row(b, scope, rt, |b, row| {
            let list: Vec<String> = ids.iter().map(|i| b.text(i)).collect();
            if list.is_empty() {
                "1 = 0".to_string()
            } else {
                format!("{row}.id IN ({})", list.join(", "))
            }
        }),
        TestKind::LastUpdated(values) => with_row(b, scope, rt, |b, row| {
            let col = format!("{row}.last_updated");
            let alts = values.iter().map(|v| date_cond(b, v, &col, &col)).collect();
            or_all(alts)
        }),
        TestKind::Missing { table, missing } => {
            let x = b.alias("x");
            if *missing {
                let p = b.text(code);
                format!(
                    "NOT EXISTS (SELECT 1 FROM {t} {x} WHERE {x}.rid = {rid} AND {x}.param = {p})",
                    t = table.name(),
                    rid = rid_of(scope)
                )
            } else {
                index_test(b, *table, rt, code, scope, &x, None, form)
            }
        }
        TestKind::Token { not: true, values } => {
            let x = b.alias("x");
            let p = b.text(code);
            let alts = values.iter().map(|v| token_cond(b, v, &x)).collect();
            format!(
                "NOT EXISTS (SELECT 1 FROM idx_token {x} \
                 WHERE {x}.rid = {rid} AND {x}.param = {p} AND {cond})",
                rid = rid_of(scope),
                cond = or_all(alts)
            )
        }
        _ => {
            let Some(table) = table_of(&test.kind) else {
                return "1 = 0".to_string();
            };
            let x = b.alias("x");
            index_test(b, table, rt, code, scope, &x, Some(&test.kind), form)
        }
    }
}

fn table_of(kind: &TestKind) -> Option<IndexTable> {
    Some(match kind {
        TestKind::Token { .. } | TestKind::TokenText(_) => IndexTable::Token,
        TestKind::String { .. } => IndexTable::String,
        TestKind::Date(_) | TestKind::DateRow { .. } => IndexTable::Date,
        TestKind::Number(_) => IndexTable::Number,
        TestKind::Quantity(_) => IndexTable::Quantity,
        TestKind::Reference(_) => IndexTable::Reference,
        TestKind::Uri { .. } => IndexTable::Uri,
        TestKind::Near(_) => IndexTable::Geo,
        TestKind::Id(_) | TestKind::LastUpdated(_) | TestKind::Missing { .. } => return None,
    })
}

/// `rid IN (SELECT x.rid FROM idx_… x WHERE x.res_type = $ AND x.param = $ [AND values])`, or
/// `EXISTS (SELECT 1 FROM idx_… x WHERE x.rid = rid AND x.param = $ AND x.res_type = $ [AND …])`.
#[allow(clippy::too_many_arguments)]
fn index_test(
    b: &mut Builder,
    table: IndexTable,
    rt: &str,
    code: &str,
    scope: Scope,
    x: &str,
    kind: Option<&TestKind>,
    form: Form,
) -> String {
    let (rid, table) = (rid_of(scope), table.name());
    let mut sql = match form {
        Form::In => {
            let t = b.text(rt);
            let p = b.text(code);
            format!(
                "{rid} IN (SELECT {x}.rid FROM {table} {x} \
                 WHERE {x}.res_type = {t} AND {x}.param = {p}"
            )
        }
        Form::Exists => {
            // `rid` already implies the type; naming it again tempts SQLite's planner into
            // the (res_type, param, value) indexes instead of the per-row (rid, param) one.
            let _ = rt;
            let p = b.text(code);
            format!(
                "EXISTS (SELECT 1 FROM {table} {x} \
                 WHERE {x}.rid = {rid} AND {x}.param = {p}"
            )
        }
    };
    if let Some(kind) = kind {
        let cond = values_cond(b, kind, x);
        sql.push_str(" AND ");
        sql.push_str(&cond);
    }
    sql.push(')');
    sql
}

fn values_cond(b: &mut Builder, kind: &TestKind, x: &str) -> String {
    let alts: Vec<String> = match kind {
        TestKind::Token { values, .. } => values.iter().map(|v| token_cond(b, v, x)).collect(),
        TestKind::TokenText(values) => values
            .iter()
            .map(|v| {
                let esc = like_escape(v);
                let starts = b.text(&format!("{esc}%"));
                let word = b.text(&format!("% {esc}%"));
                format!("({x}.text LIKE {starts} ESCAPE '\\' OR {x}.text LIKE {word} ESCAPE '\\')")
            })
            .collect(),
        TestKind::String { mode, values } => {
            values.iter().map(|v| string_cond(b, *mode, v, x)).collect()
        }
        TestKind::Date(values) => {
            let (lo, hi) = (format!("{x}.lo"), format!("{x}.hi"));
            values.iter().map(|v| date_cond(b, v, &lo, &hi)).collect()
        }
        TestKind::DateRow {
            groups,
            lo_min,
            lo_max,
        } => {
            let (lo, hi) = (format!("{x}.lo"), format!("{x}.hi"));
            let mut parts = Vec::new();
            if let Some(m) = lo_min {
                parts.push(format!("{lo} >= {}", b.int(*m)));
            }
            if let Some(m) = lo_max {
                parts.push(format!("{lo} <= {}", b.int(*m)));
            }
            for group in groups {
                let alts = group.iter().map(|v| date_cond(b, v, &lo, &hi)).collect();
                parts.push(or_all(alts));
            }
            if parts.is_empty() {
                parts.push("1 = 1".to_string());
            }
            vec![parts.join(" AND ")]
        }
        TestKind::Number(values) => values.iter().map(|v| number_cond(b, v, x)).collect(),
        TestKind::Quantity(values) => values.iter().map(|v| quantity_cond(b, v, x)).collect(),
        TestKind::Reference(values) => reference_conds(b, values, x),
        TestKind::Uri { mode, values } => values.iter().map(|v| uri_cond(b, *mode, v, x)).collect(),
        TestKind::Near(values) => values.iter().map(|v| near_cond(b, v, x)).collect(),
        TestKind::Id(_) | TestKind::LastUpdated(_) | TestKind::Missing { .. } => Vec::new(),
    };
    or_all(alts)
}

fn token_cond(b: &mut Builder, v: &TokenValue, x: &str) -> String {
    let mut parts = Vec::new();
    if let Some(code) = &v.code {
        parts.push(format!("{x}.code = {}", b.text(code)));
    }
    match &v.system {
        None => {}
        Some(None) => parts.push(format!("{x}.system IS NULL")),
        Some(Some(s)) => parts.push(format!("{x}.system = {}", b.text(s))),
    }
    if parts.is_empty() {
        "1 = 1".to_string()
    } else {
        parts.join(" AND ")
    }
}

/// `col` starts with `prefix`, as a range the `(res_type, param, col)` index serves: plain
/// comparisons on SQLite (BINARY collation), the byte-wise `text_pattern_ops` operators on
/// PostgreSQL.
fn prefix_cond(b: &mut Builder, col: &str, prefix: &str) -> String {
    let lo = b.text(prefix);
    let hi = b.text(&format!("{prefix}{MAX_CHAR}"));
    match b.dialect {
        Dialect::Sqlite => format!("{col} >= {lo} AND {col} < {hi}"),
        Dialect::Postgres => format!("{col} ~>=~ {lo} AND {col} ~<~ {hi}"),
    }
}

fn string_cond(b: &mut Builder, mode: StringMode, v: &str, x: &str) -> String {
    let norm = super::normalize(v);
    match mode {
        StringMode::StartsWith => prefix_cond(b, &format!("{x}.norm"), &norm),
        StringMode::Exact => {
            // `norm` is a function of the exact value: comparing it too lets the index serve.
            let n = b.text(&norm);
            let e = b.text(v);
            format!("{x}.norm = {n} AND {x}.exact = {e}")
        }
        StringMode::Contains => {
            let pat = b.text(&format!("%{}%", like_escape(&norm)));
            format!("{x}.norm LIKE {pat} ESCAPE '\\'")
        }
    }
}

/// Escapes `%`, `_` and the escape character itself for `LIKE … ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// R4 date prefixes: the search range `[slo, shi]` against the stored range `[lo, hi]`.
/// The redundant first comparison in `eq`, `ge` and `le` bounds an index range scan.
pub(super) fn date_cond(b: &mut Builder, v: &DateValue, lo: &str, hi: &str) -> String {
    let (slo, shi) = (v.lo, v.hi);
    match v.prefix {
        // The search range contains the stored range.
        Prefix::Eq => {
            let (a, c, d) = (b.int(slo), b.int(shi), b.int(shi));
            format!("{lo} >= {a} AND {lo} <= {c} AND {hi} <= {d}")
        }
        Prefix::Ne => {
            let (a, c) = (b.int(slo), b.int(shi));
            format!("({lo} < {a} OR {hi} > {c})")
        }
        // The range above the search value overlaps the stored range.
        Prefix::Gt => format!("{hi} > {}", b.int(shi)),
        Prefix::Lt => format!("{lo} < {}", b.int(slo)),
        // gt or eq = ends after the search range, or starts inside it.
        Prefix::Ge => {
            let (a, c, d) = (b.int(slo), b.int(shi), b.int(slo));
            format!("{hi} >= {a} AND ({hi} > {c} OR {lo} >= {d})")
        }
        Prefix::Le => {
            let (a, c, d) = (b.int(shi), b.int(slo), b.int(shi));
            format!("{lo} <= {a} AND ({lo} < {c} OR {hi} <= {d})")
        }
        Prefix::Sa => format!("{lo} > {}", b.int(shi)),
        Prefix::Eb => format!("{hi} < {}", b.int(slo)),
        // Overlap with the (already widened) search range.
        Prefix::Ap => {
            let (a, c) = (b.int(shi), b.int(slo));
            format!("{lo} <= {a} AND {hi} >= {c}")
        }
    }
}

/// Numbers compare the stored value; `eq`/`ne`/`ap` use the search value's implicit range.
fn number_cond(b: &mut Builder, v: &NumberValue, x: &str) -> String {
    let col = format!("{x}.value");
    match v.prefix {
        Prefix::Eq => {
            let (lo, hi) = (b.float(v.lo), b.float(v.hi));
            format!("{col} >= {lo} AND {col} < {hi}")
        }
        Prefix::Ne => {
            let (lo, hi) = (b.float(v.lo), b.float(v.hi));
            format!("({col} < {lo} OR {col} >= {hi})")
        }
        Prefix::Ap => {
            let (lo, hi) = (b.float(v.lo), b.float(v.hi));
            format!("{col} >= {lo} AND {col} <= {hi}")
        }
        Prefix::Gt | Prefix::Sa => format!("{col} > {}", b.float(v.value)),
        Prefix::Lt | Prefix::Eb => format!("{col} < {}", b.float(v.value)),
        Prefix::Ge => format!("{col} >= {}", b.float(v.value)),
        Prefix::Le => format!("{col} <= {}", b.float(v.value)),
    }
}

fn quantity_cond(b: &mut Builder, v: &QuantityValue, x: &str) -> String {
    let mut sql = number_cond(b, &v.number, x);
    match (&v.system, &v.code) {
        (Some(s), Some(c)) => {
            let (s, c) = (b.text(s), b.text(c));
            sql.push_str(&format!(" AND {x}.system = {s} AND {x}.code = {c}"));
        }
        (None, Some(c)) => {
            let (c1, c2) = (b.text(c), b.text(c));
            sql.push_str(&format!(" AND ({x}.code = {c1} OR {x}.unit = {c2})"));
        }
        (Some(s), None) => sql.push_str(&format!(" AND {x}.system = {}", b.text(s))),
        (None, None) => {}
    }
    sql
}

/// The alternatives of a reference test. Several local references of one type are one
/// `target_id IN (…)` (a long list, as `$find` makes of the schedules of a location, is then
/// one index scan with a list, instead of one `OR` branch per reference); so are several
/// untyped ones and several absolute URLs.
fn reference_conds(b: &mut Builder, values: &[RefValue], x: &str) -> Vec<String> {
    // (type, ids) of local references, in order of first appearance; `None` = untyped.
    let mut local: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    let mut urls: Vec<&str> = Vec::new();
    for v in values {
        match v {
            RefValue::Local { type_, id } => {
                let t = type_.as_deref();
                match local.iter_mut().find(|(lt, _)| *lt == t) {
                    Some((_, ids)) => ids.push(id),
                    None => local.push((t, vec![id])),
                }
            }
            RefValue::Url(u) => urls.push(u),
        }
    }
    if local.iter().all(|(_, ids)| ids.len() < 2) && urls.len() < 2 {
        return values.iter().map(|v| reference_cond(b, v, x)).collect();
    }
    let mut alts = Vec::new();
    for (t, ids) in local {
        let list: Vec<String> = ids.iter().map(|id| b.text(id)).collect();
        let ids = if list.len() == 1 {
            format!("{x}.target_id = {}", list.join(""))
        } else {
            format!("{x}.target_id IN ({})", list.join(", "))
        };
        alts.push(match t {
            Some(t) => format!(
                "{ids} AND {x}.target_type = {} AND {x}.url IS NULL",
                b.text(t)
            ),
            None => format!("{ids} AND {x}.url IS NULL"),
        });
    }
    match urls.as_slice() {
        [] => {}
        [u] => alts.push(format!("{x}.url = {}", b.text(u))),
        _ => {
            let list: Vec<String> = urls.iter().map(|u| b.text(u)).collect();
            alts.push(format!("{x}.url IN ({})", list.join(", ")));
        }
    }
    alts
}

fn reference_cond(b: &mut Builder, v: &RefValue, x: &str) -> String {
    match v {
        RefValue::Local { type_: Some(t), id } => {
            let (id, t) = (b.text(id), b.text(t));
            format!("{x}.target_id = {id} AND {x}.target_type = {t} AND {x}.url IS NULL")
        }
        RefValue::Local { type_: None, id } => {
            format!("{x}.target_id = {} AND {x}.url IS NULL", b.text(id))
        }
        RefValue::Url(u) => format!("{x}.url = {}", b.text(u)),
    }
}

/// Kilometres per degree of latitude (mean Earth radius 6371.0088 km).
const KM_PER_DEGREE: f64 = 111.195;

/// Within `km` of a point: a latitude band the `(res_type, param, lat, lon)` index serves, then
/// an equirectangular distance (cos² of the latitude computed here, so SQL needs no trigonometry;
/// accurate to well under 1% at clinic distances).
fn near_cond(b: &mut Builder, v: &NearValue, x: &str) -> String {
    let deg = v.km / KM_PER_DEGREE;
    let cos2 = v.lat.to_radians().cos().powi(2);
    // Each placeholder is used once: the builder numbers binds by their position in the text.
    let (lat_lo, lat_hi) = (b.float(v.lat - deg), b.float(v.lat + deg));
    let (lat_a, lat_b) = (b.float(v.lat), b.float(v.lat));
    let (lon_a, lon_b) = (b.float(v.lon), b.float(v.lon));
    let (c2, r2) = (b.float(cos2), b.float(deg * deg));
    format!(
        "({x}.lat >= {lat_lo} AND {x}.lat <= {lat_hi} AND \
         ({x}.lat - {lat_a}) * ({x}.lat - {lat_b}) + ({x}.lon - {lon_a}) * ({x}.lon - {lon_b}) * {c2} <= {r2})"
    )
}

fn uri_cond(b: &mut Builder, mode: UriMode, v: &str, x: &str) -> String {
    let col = format!("{x}.uri");
    match mode {
        UriMode::Exact => format!("{col} = {}", b.text(v)),
        UriMode::Below => prefix_cond(b, &col, v),
        UriMode::Above => {
            let list: Vec<String> = uri_ancestors(v).iter().map(|u| b.text(u)).collect();
            format!("{col} IN ({})", list.join(", "))
        }
    }
}

/// `http://a.org/fhir/ValueSet/1` → itself, `http://a.org/fhir/ValueSet`, `http://a.org/fhir`,
/// `http://a.org` (never shorter than the authority).
pub(super) fn uri_ancestors(v: &str) -> Vec<String> {
    let min = v.find("://").map(|i| i + 3).unwrap_or(0);
    let mut out = vec![v.to_string()];
    let mut cur = v.trim_end_matches('/');
    if cur != v {
        out.push(cur.to_string());
    }
    while let Some(pos) = cur.rfind('/') {
        if pos < min {
            break;
        }
        cur = &cur[..pos];
        if cur.len() <= min {
            break;
        }
        out.push(cur.to_string());
        out.push(format!("{cur}/"));
    }
    out
}

/// `_include`: the live resources that the references `includes` name in the resources `rids`
/// point at: `rid, res_type, id, body`, at most `limit`, ordered by rid. `None` when there is
/// nothing to look up. The caller removes resources it already has (matches, or earlier
/// includes) and, for `:iterate`, calls again with the newly included rids and the iterate
/// includes.
pub fn include_query(
    includes: &[Include],
    rids: &[i64],
    limit: usize,
    dialect: Dialect,
) -> Option<SqlQuery> {
    if includes.is_empty() || rids.is_empty() {
        return None;
    }
    let mut b = Builder::new(dialect);
    let list: Vec<String> = rids.iter().map(|r| b.int(*r)).collect();
    let alts: Vec<String> = includes
        .iter()
        .map(|inc| {
            let (s, p) = (b.text(&inc.source_type), b.text(&inc.param));
            let mut c = format!("x.res_type = {s} AND x.param = {p}");
            if let Some(t) = &inc.target_type {
                c.push_str(&format!(" AND x.target_type = {}", b.text(t)));
            }
            c
        })
        .collect();
    let sql = format!(
        "SELECT t.rid, t.res_type, t.id, t.body FROM resources t \
         WHERE t.deleted = FALSE AND t.rid IN (SELECT t2.rid FROM idx_reference x \
         JOIN resources t2 ON t2.res_type = x.target_type AND t2.id = x.target_id \
         WHERE x.rid IN ({list}) AND x.url IS NULL AND {alts}) ORDER BY t.rid LIMIT {limit}",
        list = list.join(", "),
        alts = or_all(alts),
        limit = b.int(i64::try_from(limit).unwrap_or(i64::MAX))
    );
    Some(b.finish(sql))
}

/// `_revinclude`: the live resources whose references `revincludes` name point at one of the
/// resources `rids`: `rid, res_type, id, body`, at most `limit`, ordered by rid. `None` when there
/// is nothing to look up.
pub fn revinclude_query(
    revincludes: &[Include],
    rids: &[i64],
    limit: usize,
    dialect: Dialect,
) -> Option<SqlQuery> {
    if revincludes.is_empty() || rids.is_empty() {
        return None;
    }
    let mut b = Builder::new(dialect);
    let list: Vec<String> = rids.iter().map(|r| b.int(*r)).collect();
    let alts: Vec<String> = revincludes
        .iter()
        .map(|inc| {
            let (s, p) = (b.text(&inc.source_type), b.text(&inc.param));
            let mut c = format!("x.res_type = {s} AND x.param = {p}");
            if let Some(t) = &inc.target_type {
                c.push_str(&format!(" AND p.res_type = {}", b.text(t)));
            }
            c
        })
        .collect();
    let sql = format!(
        "SELECT s.rid, s.res_type, s.id, s.body FROM resources s \
         WHERE s.deleted = FALSE AND s.rid IN (SELECT x.rid FROM resources p \
         JOIN idx_reference x ON x.target_type = p.res_type AND x.target_id = p.id \
         WHERE p.rid IN ({list}) AND x.url IS NULL AND {alts}) ORDER BY s.rid LIMIT {limit}",
        list = list.join(", "),
        alts = or_all(alts),
        limit = b.int(i64::try_from(limit).unwrap_or(i64::MAX))
    );
    Some(b.finish(sql))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::parse;
    use crate::fhir::search::tests_support::registry;

    fn q(rt: &str, pairs: &[(&str, &str)], dialect: Dialect) -> SqlQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let reg = registry();
        parse(&reg, rt, &pairs, false)
            .unwrap()
            .page_query(&reg, dialect)
    }

    /// Placeholders are `$1..$n`, each once, in order of appearance, one per bind.
    fn check_placeholders(q: &SqlQuery) {
        let mut expected = 1;
        let mut rest = q.sql.as_str();
        while let Some(pos) = rest.find('$') {
            rest = &rest[pos + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            assert_eq!(digits.parse::<usize>().unwrap(), expected, "{}", q.sql);
            expected += 1;
        }
        assert_eq!(expected - 1, q.binds.len(), "{}", q.sql);
        assert!(!q.sql.contains(MARK));
    }

    #[test]
    fn slot_query_shape() {
        let sq = q(
            "Slot",
            &[
                ("schedule", "Schedule/x"),
                ("start", "ge2026-01-01"),
                ("status", "free"),
                ("_count", "20"),
            ],
            Dialect::Postgres,
        );
        check_placeholders(&sq);
        assert!(sq.sql.starts_with(
            "SELECT r.rid, r.id, r.body FROM resources r WHERE r.res_type = $1 AND r.deleted = FALSE AND \
             r.rid = ANY(ARRAY(SELECT x1.rid FROM idx_reference x1 WHERE x1.res_type = $2 AND \
             x1.param = $3 AND x1.target_id = $4 AND x1.target_type = $5 AND x1.url IS NULL AND EXISTS"
        ), "{}", sq.sql);
        // Default order: the page is cut inside the driving subquery, so only its rows are read;
        // one typed reference drives, read in rid order from its lookup index (no sort); the
        // page's rids are an array read by primary key.
        assert!(
            sq.sql.ends_with(
                "GROUP BY x1.rid ORDER BY x1.rid LIMIT $12 OFFSET $13)) ORDER BY r.rid ASC"
            ),
            "{}",
            sq.sql
        );
        // Two schedules: their rows are sorted, not walked in rid order (`+ 0`).
        let two = q(
            "Slot",
            &[("schedule", "Schedule/x,Schedule/y"), ("status", "free")],
            Dialect::Postgres,
        );
        assert!(two.sql.contains("ORDER BY x1.rid + 0 LIMIT"), "{}", two.sql);
        // One plan fits any values of the walk with probes; not when the list is sorted, nor
        // when a probe reads `resources` (`_lastUpdated`), nor for an untyped reference.
        assert!(sq.generic_plan);
        assert!(!two.generic_plan);
        let updated = q(
            "Slot",
            &[("schedule", "Schedule/x"), ("_lastUpdated", "gt2026-01-01")],
            Dialect::Postgres,
        );
        assert!(!updated.generic_plan, "{}", updated.sql);
        let untyped = q("Slot", &[("schedule", "x")], Dialect::Postgres);
        assert!(!untyped.generic_plan, "{}", untyped.sql);
        // The reference drives; the date and the status are probes on (rid, param) of its rows.
        assert!(
            sq.sql.contains(
                "AND EXISTS (SELECT 1 FROM idx_date x2 WHERE x2.rid = x1.rid AND x2.param = $6 AND \
             x2.hi >= $7 AND (x2.hi > $8 OR x2.lo >= $9)) AND EXISTS \
             (SELECT 1 FROM idx_token x3 WHERE x3.rid = x1.rid AND x3.param = $10 AND \
             x3.code = $11) GROUP BY"
            ),
            "{}",
            sq.sql
        );
        // Any other order sorts the matches: the LIMIT stays outside.
        let sorted = q(
            "Slot",
            &[("schedule", "Schedule/x"), ("_sort", "start")],
            Dialect::Sqlite,
        );
        check_placeholders(&sorted);
        // A date sort walks idx_date in its order; the LIMIT goes into the walk.
        assert!(
            sorted
                .sql
                .contains("ORDER BY x1.lo ASC, x1.rid ASC LIMIT $"),
            "{}",
            sorted.sql
        );
        assert!(!sorted.sql.contains("MIN("), "{}", sorted.sql);
        assert_eq!(sq.binds[0], Bind::Text("Slot".into()));
        assert_eq!(sq.binds[3], Bind::Text("x".into()));
        assert_eq!(sq.binds[11], Bind::Int(21));
        assert_eq!(sq.binds[12], Bind::Int(0));
    }

    /// The registry as the engine has it: `Slot.start` is one instant per Slot.
    fn engine_registry() -> Registry {
        let mut reg = registry();
        reg.learn_date_widths(|rt, e| {
            (rt == "Slot" && e == "start").then(|| "instant".to_string())
        });
        reg
    }

    fn q_with(reg: &Registry, rt: &str, pairs: &[(&str, &str)], dialect: Dialect) -> SqlQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(reg, rt, &pairs, false)
            .unwrap()
            .page_query(reg, dialect)
    }

    #[test]
    fn find_window_is_one_ordered_index_range() {
        let reg = engine_registry();
        let s = q_with(
            &reg,
            "Slot",
            &[
                ("status", "free"),
                ("start", "ge2030-01-07T10:00:00Z"),
                ("start", "lt2030-01-07T13:00:00Z"),
                ("_sort", "start"),
                ("_count", "30"),
            ],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        // Both bounds on the one row of the walk, no correlated sort value, no second part
        // (a Slot without a start cannot match), no de-duplication (one start per Slot).
        assert!(
            s.sql.starts_with(
                "SELECT o.rid, o.id, o.body FROM resources o JOIN (SELECT w.rid, 0 AS part, w.k \
                 FROM (SELECT x1.rid AS rid, x1.lo AS k FROM idx_date x1 WHERE x1.res_type = $1 \
                 AND x1.param = $2 AND x1.lo >= $3 AND x1.lo <= $4 AND x1.hi >= $5 AND \
                 (x1.hi > $6 OR x1.lo >= $7) AND x1.lo < $8 AND EXISTS (SELECT 1 FROM idx_token x2 \
                 WHERE x2.rid = x1.rid AND x2.param = $9 AND x2.code = $10) \
                 ORDER BY x1.lo ASC, x1.rid ASC LIMIT $11) w) p ON o.rid = p.rid"
            ),
            "{}",
            s.sql
        );
        for frag in ["MIN(", "NOT EXISTS", "UNION", "GROUP BY"] {
            assert!(!s.sql.contains(frag), "{frag} in {}", s.sql);
        }
        let start = crate::fhir::datetime::parse(
            "2030-01-07T10:00:00Z",
            crate::fhir::datetime::Kind::Search,
        )
        .unwrap()
        .0;
        let end = crate::fhir::datetime::parse(
            "2030-01-07T13:00:00Z",
            crate::fhir::datetime::Kind::Search,
        )
        .unwrap()
        .0;
        // A start less than a second before the window may still end inside it.
        assert_eq!(s.binds[2], Bind::Int(start.lo - 1_000_000));
        assert_eq!(s.binds[3], Bind::Int(end.lo - 1));
        assert_eq!(s.binds[10], Bind::Int(31));
        // Without a sort, the two tests still merge into one range, which then drives.
        let s = q_with(
            &reg,
            "Slot",
            &[
                ("status", "free"),
                ("start", "ge2030-01-07T10:00:00Z"),
                ("start", "lt2030-01-07T13:00:00Z"),
            ],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        assert!(
            s.sql.contains("FROM idx_date x1 WHERE x1.res_type = $2 AND x1.param = $3 AND x1.lo >= $4 AND x1.lo <= $5"),
            "{}",
            s.sql
        );
        assert_eq!(s.sql.matches("idx_date").count(), 1, "{}", s.sql);
        // The window bounds the walk: a list to start from only when it is a few references.
        let window = [
            ("start", "ge2030-01-07T10:00:00Z"),
            ("start", "lt2030-01-07T13:00:00Z"),
            ("_sort", "start"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = window.to_vec();
            pairs.extend_from_slice(extra);
            q_with(&reg, "Slot", &pairs, Dialect::Sqlite).sql
        };
        let one = with(&[("schedule", "Schedule/a")]);
        assert!(
            one.contains("AND x1.rid IN (SELECT x2.rid FROM idx_reference x2"),
            "{one}"
        );
        let many = with(&[(
            "schedule",
            "Schedule/a,Schedule/b,Schedule/c,Schedule/d,Schedule/e,Schedule/f",
        )]);
        assert!(
            many.contains("AND EXISTS (SELECT 1 FROM idx_reference x2 WHERE x2.rid = x1.rid"),
            "{many}"
        );
        let token = with(&[("service-type", "http://ex.org/st|gp")]);
        assert!(!token.contains(" IN (SELECT"), "{token}");
    }

    #[test]
    fn date_sort_of_several_values_walks_each_resource_once() {
        // Without the width (the unit registry does not know Slot.start is one instant), a
        // resource may have several values: kept at its first row only, the rest after.
        let s = q(
            "Slot",
            &[
                ("schedule", "sc1"),
                ("start", "ge2030"),
                ("_sort", "-start"),
            ],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        assert!(
            s.sql.contains(
                "NOT EXISTS (SELECT 1 FROM idx_date y4 WHERE y4.rid = x1.rid AND y4.param = $10 \
                 AND y4.hi > x1.hi) GROUP BY x1.hi, x1.rid ORDER BY x1.hi DESC, x1.rid ASC LIMIT $11"
            ),
            "{}",
            s.sql
        );
        // The reference is the list the walk may start from.
        assert!(
            s.sql
                .contains("AND x1.rid IN (SELECT x2.rid FROM idx_reference x2"),
            "{}",
            s.sql
        );
        // A filter needs a start: no second part.
        assert!(!s.sql.contains("UNION"), "{}", s.sql);
        // On PostgreSQL the list of a few values is an array, computed before the walk.
        let pg = q(
            "Slot",
            &[
                ("schedule", "sc1"),
                ("start", "ge2030"),
                ("_sort", "-start"),
            ],
            Dialect::Postgres,
        );
        check_placeholders(&pg);
        assert!(
            pg.sql
                .contains("AND x1.rid = ANY(ARRAY(SELECT x2.rid FROM idx_reference x2"),
            "{}",
            pg.sql
        );
        let s = q(
            "Slot",
            &[
                ("schedule", "sc1"),
                ("_sort", "start"),
                ("_count", "5"),
                ("_offset", "10"),
            ],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        assert!(
            s.sql
                .starts_with("WITH a AS (SELECT x1.rid AS rid, x1.lo AS k"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains(
                "UNION ALL SELECT m.rid, 1 AS part, NULL AS k FROM (SELECT r.rid FROM \
                 (SELECT 1 AS one WHERE (SELECT COUNT(*) FROM a) < $8) g CROSS JOIN resources r \
                 WHERE"
            ),
            "{}",
            s.sql
        );
        assert!(
            s.sql
                .ends_with("ORDER BY p.part, p.k ASC, p.rid ASC LIMIT $16 OFFSET $17"),
            "{}",
            s.sql
        );
        // The walk and the second part keep offset + count + 1 each.
        let ints: Vec<&Bind> = s
            .binds
            .iter()
            .filter(|b| matches!(b, Bind::Int(_)))
            .collect();
        assert_eq!(
            ints,
            [
                &Bind::Int(16),
                &Bind::Int(16),
                &Bind::Int(16),
                &Bind::Int(6),
                &Bind::Int(10)
            ]
        );
    }

    #[test]
    fn references_of_one_type_are_one_list() {
        let s = q(
            "Slot",
            &[(
                "schedule",
                "Schedule/a,Schedule/b,c,Schedule/d,http://x/S/1,http://x/S/2",
            )],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        assert!(
            s.sql.contains(
                "((x1.target_id IN ($4, $5, $6) AND x1.target_type = $7 AND x1.url IS NULL) OR \
                 (x1.target_id = $8 AND x1.url IS NULL) OR (x1.url IN ($9, $10)))"
            ),
            "{}",
            s.sql
        );
        assert_eq!(s.binds[5], Bind::Text("d".into()));
        assert_eq!(s.binds[6], Bind::Text("Schedule".into()));
        // One of each: as before.
        let s = q("Slot", &[("schedule", "Schedule/a,c")], Dialect::Postgres);
        assert!(
            s.sql.contains(
                "((x1.target_id = $4 AND x1.target_type = $5 AND x1.url IS NULL) OR \
                 (x1.target_id = $6 AND x1.url IS NULL))"
            ),
            "{}",
            s.sql
        );
    }

    #[test]
    fn lo_bounds_of_merged_date_tests() {
        let v = |prefix, lo, hi| DateValue { prefix, lo, hi };
        let w = 10;
        assert_eq!(
            row_lo_bounds(
                &[vec![v(Prefix::Ge, 100, 199)], vec![v(Prefix::Lt, 300, 399)]],
                w
            ),
            (Some(90), Some(299))
        );
        assert_eq!(
            row_lo_bounds(&[vec![v(Prefix::Eq, 100, 199)]], w),
            (Some(100), Some(199))
        );
        // ORed values: the loosest; one unbounded side makes the group unbounded there.
        assert_eq!(
            row_lo_bounds(&[vec![v(Prefix::Eq, 100, 199), v(Prefix::Sa, 500, 599)]], w),
            (Some(100), None)
        );
        assert_eq!(
            row_lo_bounds(
                &[vec![v(Prefix::Ne, 100, 199)], vec![v(Prefix::Le, 100, 199)]],
                w
            ),
            (None, Some(199))
        );
        // ANDed groups: the tightest.
        assert_eq!(
            row_lo_bounds(
                &[
                    vec![v(Prefix::Gt, 100, 199)],
                    vec![v(Prefix::Ap, 150, 250)],
                    vec![v(Prefix::Eb, 240, 260)]
                ],
                w
            ),
            (Some(189), Some(239))
        );
    }

    #[test]
    fn the_most_selective_filter_drives() {
        // `_id` before a reference before a status; written in any order.
        let s = q(
            "Slot",
            &[("status", "free"), ("schedule", "sc1"), ("_id", "a")],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        assert!(
            s.sql
                .contains("r.deleted = FALSE AND r.id IN ($2) AND EXISTS"),
            "{}",
            s.sql
        );
        // Negations never drive.
        let s = q(
            "Slot",
            &[("status:not", "free"), ("x-comment:missing", "true")],
            Dialect::Sqlite,
        );
        assert!(!s.sql.contains(" IN (SELECT"), "{}", s.sql);
        // Equal ranks: the first one written drives.
        let s = q(
            "Slot",
            &[("start", "2026"), ("x-number", "1")],
            Dialect::Sqlite,
        );
        assert!(
            s.sql.contains("r.rid IN (SELECT x1.rid FROM idx_date x1"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains("EXISTS (SELECT 1 FROM idx_number x2"),
            "{}",
            s.sql
        );
        // A chain or _has that does not drive is a probe too.
        let s = q(
            "Appointment",
            &[
                ("_id", "a"),
                ("practitioner.family", "x"),
                ("_has:AppointmentResponse:appointment:part-status", "y"),
            ],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        assert!(
            s.sql
                .contains("EXISTS (SELECT 1 FROM idx_reference c1 WHERE c1.rid = r.rid"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains("EXISTS (SELECT 1 FROM idx_reference h"),
            "{}",
            s.sql
        );
        assert!(s.sql.contains(".target_id = r.id AND"), "{}", s.sql);
    }

    #[test]
    fn user_input_only_in_binds() {
        let evil = "x'); DROP TABLE resources; --";
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let sq = q(
                "Appointment",
                &[
                    ("_id", evil),
                    ("status", evil),
                    ("practitioner.family", evil),
                    ("actor:Patient.name:contains", evil),
                    ("date", "2026"),
                    ("patient", evil),
                ],
                d,
            );
            check_placeholders(&sq);
            assert!(!sq.sql.contains("DROP"), "{}", sq.sql);
            let sq = q(
                "Patient",
                &[
                    ("_has:Appointment:patient:status", evil),
                    ("_sort", "-family,birthdate"),
                ],
                d,
            );
            check_placeholders(&sq);
            assert!(!sq.sql.contains("DROP"));
        }
    }

    #[test]
    fn string_prefix_per_dialect() {
        let s = q("Patient", &[("family", "Zoë")], Dialect::Sqlite);
        assert!(
            s.sql.contains("x1.norm >= $4 AND x1.norm < $5"),
            "{}",
            s.sql
        );
        assert_eq!(s.binds[3], Bind::Text("zoe".into()));
        assert_eq!(s.binds[4], Bind::Text(format!("zoe{MAX_CHAR}")));
        let p = q("Patient", &[("family", "Zoë")], Dialect::Postgres);
        assert!(
            p.sql.contains("x1.norm ~>=~ $4 AND x1.norm ~<~ $5"),
            "{}",
            p.sql
        );
        let c = q("Patient", &[("family:contains", "a_b%")], Dialect::Postgres);
        assert!(c.sql.contains("x1.norm LIKE $4 ESCAPE '\\'"), "{}", c.sql);
        assert_eq!(c.binds[3], Bind::Text("%a\\_b\\%%".into()));
        let e = q("Patient", &[("family:exact", "Zoë")], Dialect::Postgres);
        assert!(e.sql.contains("x1.norm = $4 AND x1.exact = $5"));
        assert_eq!(e.binds[4], Bind::Text("Zoë".into()));
    }

    #[test]
    fn negations_use_not_exists() {
        let s = q(
            "Slot",
            &[("status:not", "free,busy"), ("x-comment:missing", "true")],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        assert!(s.sql.contains(
            "NOT EXISTS (SELECT 1 FROM idx_token x1 WHERE x1.rid = r.rid AND x1.param = $2 AND ((x1.code = $3) OR (x1.code = $4)))"
        ), "{}", s.sql);
        assert!(
            s.sql.contains(
                "NOT EXISTS (SELECT 1 FROM idx_string x2 WHERE x2.rid = r.rid AND x2.param = $5)"
            ),
            "{}",
            s.sql
        );
        let s = q("Slot", &[("x-comment:missing", "false")], Dialect::Sqlite);
        assert!(
            s.sql.contains(
                "r.rid IN (SELECT x1.rid FROM idx_string x1 WHERE x1.res_type = $2 AND x1.param = $3 \
                 GROUP BY x1.rid"
            ),
            "{}",
            s.sql
        );
    }

    #[test]
    fn chains_and_has_shape() {
        let s = q(
            "Slot",
            &[("schedule.actor", "Practitioner/1")],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        assert!(s.sql.contains(
            "r.rid IN (SELECT c1.rid FROM idx_reference c1 WHERE c1.res_type = $2 AND c1.param = $3 AND \
             c1.url IS NULL AND (c1.target_type = $4 AND c1.target_id IN (SELECT t2.id FROM resources t2 WHERE t2.res_type = $5 \
             AND t2.deleted = FALSE AND t2.rid IN (SELECT x3.rid FROM idx_reference x3"
        ), "{}", s.sql);
        let s = q(
            "Patient",
            &[("_has:Appointment:patient:_id", "a1")],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        assert!(
            s.sql.contains(
                "r.id IN (SELECT h1.target_id FROM idx_reference h1 WHERE h1.target_type = $2 AND \
             h1.res_type = $3 AND h1.param = $4 AND h1.url IS NULL AND h1.rid IN \
             (SELECT w2.rid FROM resources w2 WHERE w2.res_type = $5 AND \
             w2.deleted = FALSE AND w2.id IN ($6)))"
            ),
            "{}",
            s.sql
        );
    }

    #[test]
    fn sort_and_paging() {
        let s = q(
            "Slot",
            &[
                ("_sort", "-start,status,_lastUpdated"),
                ("_count", "7"),
                ("_offset", "14"),
            ],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        assert!(s.sql.contains(
            "ORDER BY (SELECT MAX(s1.hi) FROM idx_date s1 WHERE s1.rid = r.rid AND s1.param = $2) DESC NULLS LAST, \
             (SELECT MIN(s2.code) FROM idx_token s2 WHERE s2.rid = r.rid AND s2.param = $3) ASC NULLS LAST, \
             r.last_updated ASC NULLS LAST, r.rid ASC LIMIT $4 OFFSET $5"
        ), "{}", s.sql);
        assert_eq!(s.binds[3], Bind::Int(8));
        assert_eq!(s.binds[4], Bind::Int(14));
        let reg = registry();
        let req = parse(&reg, "Slot", &[("status".into(), "free".into())], false).unwrap();
        let c = req.count_query(&reg, Dialect::Postgres);
        check_placeholders(&c);
        assert!(c.sql.starts_with("SELECT COUNT(*) FROM resources r WHERE r.res_type = $1 AND r.deleted = FALSE AND r.rid IN"));
        assert!(!c.sql.contains("LIMIT"));
    }

    #[test]
    fn date_prefix_conditions() {
        let s = q(
            "Slot",
            &[(
                "start",
                "eq2026-01-01,ne2026,sa2026,eb2026,le2026,gt2026,lt2026",
            )],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        for frag in [
            "x1.lo >= $4 AND x1.lo <= $5 AND x1.hi <= $6",
            "(x1.lo < $7 OR x1.hi > $8)",
            "x1.lo > $9",
            "x1.hi < $10",
            "x1.lo <= $11 AND (x1.lo < $12 OR x1.hi <= $13)",
            "x1.hi > $14",
            "x1.lo < $15",
        ] {
            assert!(s.sql.contains(frag), "{frag} in {}", s.sql);
        }
        let s = q("Slot", &[("_lastUpdated", "gt2001")], Dialect::Sqlite);
        assert!(s.sql.contains("r.last_updated > $2"), "{}", s.sql);
    }

    #[test]
    fn numbers_quantities_uris_text() {
        let s = q(
            "Slot",
            &[("x-number", "100,gt5"), ("x-quantity", "le5.4||mg")],
            Dialect::Postgres,
        );
        check_placeholders(&s);
        assert!(
            s.sql
                .contains("((x1.value >= $4 AND x1.value < $5) OR (x1.value > $6))"),
            "{}",
            s.sql
        );
        assert_eq!(s.binds[3], Bind::Float(99.5));
        assert!(
            s.sql
                .contains("x2.value <= $8 AND (x2.code = $9 OR x2.unit = $10)"),
            "{}",
            s.sql
        );
        let s = q(
            "Slot",
            &[
                ("_profile:above", "http://a.org/fhir/SD/x"),
                ("_profile:below", "http://a.org/"),
            ],
            Dialect::Sqlite,
        );
        check_placeholders(&s);
        assert!(
            s.sql.contains("x1.uri IN ($4, $5, $6, $7, $8, $9, $10)"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains("x2.uri >= $12 AND x2.uri < $13"),
            "{}",
            s.sql
        );
        assert_eq!(
            uri_ancestors("http://a.org/fhir/SD/x"),
            vec![
                "http://a.org/fhir/SD/x",
                "http://a.org/fhir/SD",
                "http://a.org/fhir/SD/",
                "http://a.org/fhir",
                "http://a.org/fhir/",
                "http://a.org",
                "http://a.org/"
            ]
        );
        let s = q("Slot", &[("service-type:text", "Gen_")], Dialect::Sqlite);
        assert!(
            s.sql
                .contains("(x1.text LIKE $4 ESCAPE '\\' OR x1.text LIKE $5 ESCAPE '\\')"),
            "{}",
            s.sql
        );
        assert_eq!(s.binds[4], Bind::Text("% gen\\_%".into()));
    }

    #[test]
    fn include_and_revinclude_queries() {
        let inc = Include {
            source_type: "Appointment".into(),
            param: "patient".into(),
            target_type: None,
            iterate: false,
        };
        assert!(include_query(std::slice::from_ref(&inc), &[], 100, Dialect::Sqlite).is_none());
        assert!(include_query(&[], &[1], 100, Dialect::Sqlite).is_none());
        let s = include_query(std::slice::from_ref(&inc), &[3, 4], 100, Dialect::Sqlite).unwrap();
        check_placeholders(&s);
        assert!(s.sql.contains("WHERE x.rid IN ($1, $2) AND x.url IS NULL AND x.res_type = $3 AND x.param = $4) ORDER BY t.rid LIMIT $5"), "{}", s.sql);
        let rev = Include {
            source_type: "Slot".into(),
            param: "schedule".into(),
            target_type: Some("Schedule".into()),
            iterate: false,
        };
        let s = revinclude_query(&[rev, inc], &[9], 50, Dialect::Postgres).unwrap();
        check_placeholders(&s);
        assert!(s.sql.contains(
            "WHERE p.rid IN ($1) AND x.url IS NULL AND ((x.res_type = $2 AND x.param = $3 AND p.res_type = $4) OR (x.res_type = $5 AND x.param = $6))"
        ), "{}", s.sql);
        assert_eq!(s.binds.last(), Some(&Bind::Int(50)));
    }
}
