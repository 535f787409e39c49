//! The audit hash chain's table (migrations `0007_audit`): one row per stored AuditEvent, in
//! the order they were written. The AuditEvents themselves are ordinary rows of `resources`
//! (written with `StoreTx::put`), so FHIR search over them works; this module only knows the
//! chain's SQL. Hashing is `audit::chain`'s business. Plain SQL with `$n` placeholders, valid on
//! SQLite and PostgreSQL.

use sqlx::Row;

use super::{bind_all, Bind, Dialect, SqlQuery, SqlStore, SqlTx, StoreResult};

/// A link of the chain as stored: `hash = sha256(prev_hash ‖ body_hash ‖ seq)` (see
/// `audit::chain`). Hashes are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// 1, 2, 3 … without gaps.
    pub seq: i64,
    /// The id of the AuditEvent (`resources.res_type = 'AuditEvent'`).
    pub resource_id: String,
    /// SHA-256 of the exact stored body (`resources.body`).
    pub body_hash: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A chain row with what `resources` holds for its AuditEvent now (for verification).
#[derive(Debug, Clone)]
pub struct ChainCheckRow {
    pub link: ChainRow,
    /// The current stored body; `None` when the resource row is gone.
    pub body: Option<String>,
    pub deleted: bool,
    pub version: i64,
}

/// Rows per multi-row INSERT (5 binds each).
const INSERT_CHUNK: usize = 200;

impl SqlTx {
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
            // Unnamed: its text differs with the batch's size (see `create_chunk`).
            bind_all(sqlx::query(&q.sql), &q.binds)
                .persistent(false)
                .execute(self.tx.conn())
                .await?;
        }
        Ok(())
    }
}

impl SqlStore {
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
             FROM audit_chain c LEFT JOIN resources r \
             ON r.res_type = 'AuditEvent' AND r.id = c.resource_id \
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
            "SELECT r.id FROM resources r WHERE r.res_type = 'AuditEvent' AND NOT EXISTS \
             (SELECT 1 FROM audit_chain c WHERE c.resource_id = r.id) ORDER BY r.rid LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
