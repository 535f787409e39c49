//! The audit log's tables: the AuditEvents in their own store (migration `0018_audit_store`:
//! `audit_event`, one row per event with its body and search terms, and `audit_ref`, its
//! references; the search over them is `fhir::search::audit`), and the hash chain (`0007_audit`:
//! one link per stored AuditEvent, in the order they were written). Hashing is
//! `audit::chain`'s business. Plain SQL with `$n` placeholders, valid on SQLite and PostgreSQL.

use sqlx::Row;

use super::{
    bind_all, history_entries, is_unique_violation, stored_from, Bind, Dialect, HistoryEntry,
    SqlQuery, SqlStore, SqlTx, StoreError, StoreResult, Stored,
};
use crate::fhir::search::audit::AuditIndex;

/// An AuditEvent to store: its body (the JSON returned to clients) and its search values.
#[derive(Debug, Clone)]
pub struct AuditWrite {
    pub id: String,
    pub last_updated: i64,
    pub body: String,
    pub index: AuditIndex,
}

/// An AuditEvent as a `Stored` (version 1, never deleted; its rid negated like in searches).
macro_rules! audit_columns {
    () => {
        "-rid AS rid, 'AuditEvent' AS res_type, id, CAST(1 AS BIGINT) AS version, \
         last_updated, CAST(0 AS BIGINT) AS deleted, body"
    };
}
const AUDIT_COLUMNS: &str = audit_columns!();

/// One AuditEvent by id.
pub(super) const READ_SQL: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_event WHERE id = $1"
);

/// Rows per multi-row INSERT into the audit store on SQLite.
const AUDIT_CHUNK: usize = 100;

/// A link of the chain as stored: `hash = sha256(prev_hash ‖ body_hash ‖ seq)` (see
/// `audit::chain`). Hashes are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// 1, 2, 3 … without gaps.
    pub seq: i64,
    /// The id of the AuditEvent (`audit_event.id`).
    pub resource_id: String,
    /// SHA-256 of the exact stored body (`audit_event.body`).
    pub body_hash: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A chain row with what the audit store holds for its AuditEvent now (for verification).
#[derive(Debug, Clone)]
pub struct ChainCheckRow {
    pub link: ChainRow,
    /// The current stored body; `None` when the AuditEvent's row is gone.
    pub body: Option<String>,
    pub deleted: bool,
    pub version: i64,
}

/// Rows per multi-row INSERT (5 binds each).
const INSERT_CHUNK: usize = 200;

impl SqlTx {
    /// Stores AuditEvents: their rows (rids returned), then their references. PostgreSQL
    /// reads each as one JSON bind (one statement text, prepared once per connection).
    pub(super) async fn audit_event_insert(&mut self, rows: &[AuditWrite]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let dup = |e: sqlx::Error| {
            if is_unique_violation(&e) {
                StoreError::Duplicate
            } else {
                e.into()
            }
        };
        let date = |w: &AuditWrite| w.index.date.unwrap_or((w.last_updated, w.last_updated));
        let mut inserted: Vec<sqlx::any::AnyRow> = Vec::with_capacity(rows.len());
        if self.dialect == Dialect::Postgres {
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|w| {
                    let (lo, hi) = date(w);
                    serde_json::json!({"i": w.id, "l": lo, "h": hi, "u": w.last_updated,
                        "t": w.index.terms, "b": w.body})
                })
                .collect();
            let json = serde_json::to_string(&json).map_err(StoreError::other)?;
            inserted = sqlx::query(
                "INSERT INTO audit_event (id, date_lo, date_hi, last_updated, terms, body) \
                 SELECT x.i, x.l, x.h, x.u, x.t, x.b FROM json_to_recordset($1::json) \
                 AS x(i text, l bigint, h bigint, u bigint, t text, b text) RETURNING rid, id",
            )
            .bind(json)
            .fetch_all(self.tx.conn())
            .await
            .map_err(dup)?;
        } else {
            for chunk in rows.chunks(AUDIT_CHUNK) {
                let mut q = SqlQuery::default();
                let mut values = Vec::with_capacity(chunk.len());
                for w in chunk {
                    let (lo, hi) = date(w);
                    let ph = [
                        q.push(Bind::Text(w.id.clone())),
                        q.push(Bind::Int(lo)),
                        q.push(Bind::Int(hi)),
                        q.push(Bind::Int(w.last_updated)),
                        q.push(Bind::Text(w.index.terms.clone())),
                        q.push(Bind::Text(w.body.clone())),
                    ];
                    values.push(format!("({})", ph.join(", ")));
                }
                q.sql = format!(
                    "INSERT INTO audit_event (id, date_lo, date_hi, last_updated, terms, body) \
                     VALUES {} RETURNING rid, id",
                    values.join(", ")
                );
                let sql = self.bulk_sql(&q.sql);
                inserted.extend(
                    bind_all(sqlx::query(&sql), &q.binds)
                        .persistent(false)
                        .fetch_all(self.tx.conn())
                        .await
                        .map_err(dup)?,
                );
            }
        }
        let mut rid_of: std::collections::HashMap<String, i64> =
            std::collections::HashMap::with_capacity(rows.len());
        for r in &inserted {
            rid_of.insert(r.try_get(1)?, r.try_get(0)?);
        }
        let mut refs = Vec::new();
        for w in rows {
            let rid = *rid_of
                .get(&w.id)
                .ok_or_else(|| StoreError::other("an audit insert returned no rid"))?;
            refs.extend(w.index.refs.iter().map(|r| (rid, r)));
        }
        if refs.is_empty() {
            return Ok(());
        }
        if self.dialect == Dialect::Postgres {
            let json: Vec<serde_json::Value> = refs
                .iter()
                .map(|(rid, r)| {
                    serde_json::json!({"r": rid, "p": r.param, "t": r.target_type,
                        "i": r.target_id})
                })
                .collect();
            let json = serde_json::to_string(&json).map_err(StoreError::other)?;
            sqlx::query(
                "INSERT INTO audit_ref (rid, param, target_type, target_id) \
                 SELECT x.r, x.p, x.t, x.i FROM json_to_recordset($1::json) \
                 AS x(r bigint, p text, t text, i text)",
            )
            .bind(json)
            .execute(self.tx.conn())
            .await?;
            return Ok(());
        }
        for chunk in refs.chunks(AUDIT_CHUNK * 2) {
            let mut q = SqlQuery::default();
            let mut values = Vec::with_capacity(chunk.len());
            for (rid, r) in chunk {
                let ph = [
                    rid.to_string(),
                    q.push(Bind::Text(r.param.clone())),
                    q.push(Bind::Text(r.target_type.clone())),
                    q.push(Bind::Text(r.target_id.clone())),
                ];
                values.push(format!("({})", ph.join(", ")));
            }
            q.sql = format!(
                "INSERT INTO audit_ref (rid, param, target_type, target_id) VALUES {}",
                values.join(", ")
            );
            let sql = self.bulk_sql(&q.sql);
            bind_all(sqlx::query(&sql), &q.binds)
                .persistent(false)
                .execute(self.tx.conn())
                .await?;
        }
        Ok(())
    }

    /// The last link, after taking the chain's write lock on PostgreSQL (appenders of other
    /// processes queue; readers are not blocked). SQLite's `BEGIN IMMEDIATE` already serializes
    /// writers.
    pub(super) async fn chain_head(&mut self) -> StoreResult<Option<(i64, String)>> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("LOCK TABLE audit_chain IN EXCLUSIVE MODE")
                .execute(self.tx.conn())
                .await?;
        }
        let row = sqlx::query("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(self.tx.conn())
            .await?;
        match row {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    pub(super) async fn chain_insert(&mut self, rows: &[ChainRow]) -> StoreResult<()> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = SqlQuery {
                sql: "INSERT INTO audit_chain (seq, resource_id, body_hash, prev_hash, hash) \
                      VALUES "
                    .into(),
                binds: Vec::with_capacity(chunk.len() * 5),
                generic_plan: false,
            };
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    q.sql.push_str(", ");
                }
                let ph = [
                    q.push(Bind::Int(r.seq)),
                    q.push(Bind::Text(r.resource_id.clone())),
                    q.push(Bind::Text(r.body_hash.clone())),
                    q.push(Bind::Text(r.prev_hash.clone())),
                    q.push(Bind::Text(r.hash.clone())),
                ];
                q.sql.push_str(&format!("({})", ph.join(", ")));
            }
            // Unnamed: its text differs with the batch's size; kept, such statements would fill
            // each connection's statement cache and push out the ones every request uses.
            bind_all(sqlx::query(&q.sql), &q.binds)
                .persistent(false)
                .execute(self.tx.conn())
                .await?;
        }
        Ok(())
    }
}

impl SqlStore {
    /// An AuditEvent by id.
    pub(super) async fn audit_read(&self, id: &str) -> StoreResult<Option<Stored>> {
        let row = self.read_one(sqlx::query(READ_SQL).bind(id)).await?;
        row.as_ref().map(stored_from).transpose()
    }

    /// `AuditEvent/_history` (every AuditEvent, newest first) or one AuditEvent's history
    /// (its one version), with the total.
    pub(super) async fn audit_history(
        &self,
        id: Option<&str>,
        since: Option<i64>,
        count: usize,
        offset: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)> {
        let mut q = SqlQuery::default();
        let mut cond = String::from("1 = 1");
        if let Some(id) = id {
            let p = q.push(Bind::Text(id.to_string()));
            cond.push_str(&format!(" AND id = {p}"));
        }
        if let Some(s) = since {
            let p = q.push(Bind::Int(s));
            cond.push_str(&format!(" AND last_updated >= {p}"));
        }
        let count_sql = format!("SELECT COUNT(*) FROM audit_event WHERE {cond}");
        let total: i64 = bind_all(sqlx::query(&count_sql), &q.binds)
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        let pl = q.push(Bind::Int(i64::try_from(count).unwrap_or(i64::MAX)));
        let po = q.push(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {AUDIT_COLUMNS}, 'POST' AS method FROM audit_event WHERE {cond} \
             ORDER BY last_updated DESC, audit_event.rid DESC LIMIT {pl} OFFSET {po}"
        );
        let rows = bind_all(sqlx::query(&sql), &q.binds)
            .fetch_all(self.pool())
            .await?;
        Ok((history_entries(&rows)?, total))
    }

    /// Up to `limit` links with `seq > after`, in order, each with its AuditEvent's current row.
    pub async fn audit_chain_page(
        &self,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<ChainCheckRow>> {
        let rows = sqlx::query(
            "SELECT c.seq, c.resource_id, c.body_hash, c.prev_hash, c.hash, r.body, \
             CAST(CASE WHEN r.deleted THEN 1 ELSE 0 END AS BIGINT) AS deleted, \
             COALESCE(r.version, 0) AS version \
             FROM audit_chain c LEFT JOIN (SELECT id, body, FALSE AS deleted, \
             CAST(1 AS BIGINT) AS version FROM audit_event) r ON r.id = c.resource_id \
             WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChainCheckRow {
                    link: ChainRow {
                        seq: r.try_get(0)?,
                        resource_id: r.try_get(1)?,
                        body_hash: r.try_get(2)?,
                        prev_hash: r.try_get(3)?,
                        hash: r.try_get(4)?,
                    },
                    body: r.try_get(5)?,
                    deleted: r.try_get::<Option<i64>, _>(6)?.unwrap_or(0) != 0,
                    version: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Ids of stored AuditEvents that no chain row covers (at most `limit`).
    pub async fn audit_unchained(&self, limit: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT r.id FROM audit_event r WHERE NOT EXISTS \
             (SELECT 1 FROM audit_chain c WHERE c.resource_id = r.id) ORDER BY r.rid LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
