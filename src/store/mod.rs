//! Storage: one trait, one sqlx implementation speaking SQLite (the embedded default) and
//! PostgreSQL. Every write puts the resource, its history row and its search index rows in one
//! database transaction. Only this module knows SQL dialects.

pub mod audit;
pub mod auth;
mod group;
mod lease;
pub mod notify;
pub mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::fhir::index::{IndexRow, IndexValue};
use crate::fhir::search::audit::AUDIT;
pub use sql::{Bind, Dialect, SqlQuery};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the row first (optimistic concurrency lost).
    #[error("the resource was changed by another request")]
    Conflict,
    /// A resource with that type and id already exists.
    #[error("a resource with that id already exists")]
    Duplicate,
    /// The write would make two holds of one key overlap (double booking).
    #[error("{0} is already booked at that time")]
    Overlap(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Anything else that keeps the store from doing its work.
    #[error("store: {0}")]
    Other(String),
}

impl StoreError {
    pub fn other(e: impl std::fmt::Display) -> Self {
        StoreError::Other(e.to_string())
    }

    /// Did the database give up on the transaction for a reason of timing alone — PostgreSQL
    /// chose it as a deadlock's victim (40P01) or could not serialize it (40001), or SQLite
    /// stayed busy past its timeout? The same transaction, run again, may well succeed.
    pub fn is_transient(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(db)) = self else {
            return false;
        };
        matches!(
            db.code().as_deref(),
            Some("40P01" | "40001" | "5" | "6" | "261" | "262" | "517")
        ) || db.message().contains("database is locked")
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored version of a resource.
#[derive(Debug, Clone)]
pub struct Stored {
    pub rid: i64,
    pub res_type: String,
    pub id: String,
    pub version: i64,
    /// Microseconds since the epoch.
    pub last_updated: i64,
    pub deleted: bool,
    /// The JSON as returned to clients; empty for deletes in history.
    pub body: String,
}

/// A history entry carries the method that produced it.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub stored: Stored,
    pub method: String,
}

/// What a history request covers.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

/// A resource version to write.
#[derive(Debug, Clone)]
pub struct Write {
    pub res_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    pub method: &'static str,
    pub body: String,
    pub index: Vec<IndexRow>,
    /// Time this version holds (active appointments); replaces what the previous version held.
    pub holds: Vec<Hold>,
}

/// A held time range `[lo, hi)` of `key` (`Practitioner/1`, `Slot/3`). No two holds of one key
/// overlap: the database refuses the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub key: String,
    pub lo: i64,
    pub hi: i64,
}

/// A row of the open-slot index: a free Slot's rid, start and Schedule id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenKey {
    pub rid: i64,
    pub lo: i64,
    pub schedule: String,
}

/// A row of a search or include query: `rid, res_type, id, body` (res_type may be absent).
#[derive(Debug, Clone)]
pub struct FoundRow {
    pub rid: i64,
    pub res_type: String,
    pub id: String,
    pub body: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;
    /// The current version, deleted or not.
    async fn read(&self, res_type: &str, id: &str) -> StoreResult<Option<Stored>>;
    async fn vread(&self, res_type: &str, id: &str, version: i64) -> StoreResult<Option<Stored>>;
    async fn history(
        &self,
        scope: &HistoryScope,
        since: Option<i64>,
        count: usize,
        offset: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)>;
    /// Runs a search-planner query returning `rid, [res_type,] id, body` rows.
    async fn find(&self, query: &SqlQuery) -> StoreResult<Vec<FoundRow>>;
    /// Runs a walk of the open-slot index returning `rid, lo, schedule` rows.
    async fn find_open_keys(&self, query: &SqlQuery) -> StoreResult<Vec<OpenKey>>;
    /// Runs a `SELECT COUNT(*)` query.
    async fn count(&self, query: &SqlQuery) -> StoreResult<i64>;
    /// Starts a write transaction (immediate on SQLite).
    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>>;
    /// Is the database reachable?
    async fn ping(&self) -> StoreResult<()>;
    /// A number that changes after every commit (by this process) that wrote one of the
    /// `DIRECTORY_TYPES`, for caches of what they say; None: unknown, cache nothing.
    fn directory_generation(&self) -> Option<u64> {
        None
    }
}

/// Who and where care is given: what `$find` expands its actor filters through.
pub const DIRECTORY_TYPES: [&str; 6] = [
    "Practitioner",
    "PractitionerRole",
    "Schedule",
    "Location",
    "Organization",
    "HealthcareService",
];

/// A write transaction. Dropped without `commit`, it rolls back.
#[async_trait]
pub trait StoreTx: Send {
    async fn read(&mut self, res_type: &str, id: &str) -> StoreResult<Option<Stored>>;
    async fn find(&mut self, query: &SqlQuery) -> StoreResult<Vec<FoundRow>>;
    /// Writes a new current version. `expected` is the version being replaced (None: the
    /// resource must not exist yet). Fails with `Conflict` if another writer got there first.
    async fn put(&mut self, write: Write, expected: Option<i64>) -> StoreResult<Stored>;
    /// Marks the resource deleted as version `version`, removing its index rows.
    async fn delete(
        &mut self,
        res_type: &str,
        id: &str,
        version: i64,
        expected: i64,
        last_updated: i64,
    ) -> StoreResult<()>;
    async fn commit(self: Box<Self>) -> StoreResult<()>;
    /// The audit chain's last link `(seq, hash)`, taking the chain's write lock for the rest of
    /// the transaction (see `store::audit`).
    async fn audit_head(&mut self) -> StoreResult<Option<(i64, String)>> {
        Err(StoreError::other("this store keeps no audit chain"))
    }
    /// Appends links to the audit chain.
    async fn audit_append(&mut self, _rows: &[audit::ChainRow]) -> StoreResult<()> {
        Err(StoreError::other("this store keeps no audit chain"))
    }
    /// Stores AuditEvents in the audit log's own store (see `store::audit`).
    async fn audit_insert(&mut self, _rows: &[audit::AuditWrite]) -> StoreResult<()> {
        Err(StoreError::other("this store keeps no audit log"))
    }
    /// Appends topic events to the outbox (see `store::notify`).
    async fn outbox_append(&mut self, _rows: &[notify::OutboxRow]) -> StoreResult<()> {
        Err(StoreError::other("this store keeps no outbox"))
    }
    /// Restarts a subscription's delivery state at `status`.
    async fn subscription_reset(&mut self, _id: &str, _status: &str, _now: i64) -> StoreResult<()> {
        Err(StoreError::other("this store keeps no subscriptions"))
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The sqlx store for both dialects.
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite allows one writer at a time: writers of this process queue here (FIFO) instead of
    /// contending for the database lock with sleeps and retries, and share commits (`group`).
    /// `BEGIN IMMEDIATE` still guards against writers in other processes.
    sqlite_writer: group::GroupWriter,
    /// The SQLite database file (None for PostgreSQL and in-memory databases).
    sqlite_file: Option<std::path::PathBuf>,
    /// SQLite on a file: the one connection write transactions use (see `connect`).
    sqlite_writer_pool: Option<AnyPool>,
    /// Connections for single reads, handed back without sqlx's ping (`lease`): PostgreSQL,
    /// and SQLite on a file.
    leases: Option<lease::Leases>,
    /// PostgreSQL: leased connections that plan prepared statements once, without their values
    /// (`plan_cache_mode = force_generic_plan`), for the searches whose `SqlQuery::generic_plan`
    /// says that plan is right for any values. Made as needed, up to the main pool's size.
    generic_leases: Option<lease::Leases>,
    /// A permit whenever a transaction that appended outbox rows commits: the in-process
    /// notification worker wakes on it instead of waiting for its next poll.
    outbox_signal: Arc<tokio::sync::Notify>,
    /// PostgreSQL: the URL, for the outbox listener's own connection (`listen_outbox`).
    pg_url: Option<String>,
    /// See `Store::directory_generation`.
    directory_generation: Arc<std::sync::atomic::AtomicU64>,
}

/// The channel of the outbox's `NOTIFY` (`SqlStore::listen_outbox`).
const OUTBOX_CHANNEL: &str = "fhir_scheduler_outbox";

/// Listens on `OUTBOX_CHANNEL` until the connection fails, a permit for each notification.
async fn listen_outbox(url: &str, signal: &tokio::sync::Notify) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    // Whatever was committed while nobody listened.
    signal.notify_one();
    loop {
        listener.recv().await?;
        signal.notify_one();
    }
}

/// What every SQLite connection sets first.
/// Every SQLite connection's settings.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA synchronous = NORMAL",
    // Pages read through a memory map instead of a read() call each, and a page cache
    // that holds the hot index pages (the default is 2 MB).
    "PRAGMA mmap_size = 4294967296",
    "PRAGMA cache_size = -65536",
];

async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    for pragma in SQLITE_PRAGMAS {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The file of a `sqlite://path?…` / `sqlite:path` URL.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.into())
}

impl SqlStore {
    /// The row of a single read statement that returns at most one (`read_all`).
    async fn read_one<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> StoreResult<Option<AnyRow>> {
        Ok(self.read_all(q, false).await?.into_iter().next())
    }

    /// All rows of a single read statement: on a leased connection (no ping on its return)
    /// where there are leases, from the pool otherwise; `generic` on the connections that plan
    /// every statement once (`generic_leases`).
    async fn read_all<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        generic: bool,
    ) -> StoreResult<Vec<AnyRow>> {
        let leases = if generic {
            &self.generic_leases
        } else {
            &self.leases
        };
        match leases {
            Some(leases) => {
                let mut lease = leases.get().await?;
                let rows = q.fetch_all(lease.conn()?).await?;
                lease.done();
                Ok(rows)
            }
            None => Ok(q.fetch_all(&self.pool).await?),
        }
    }

    /// The rows of a search-shaped query: on the generic-plan connections when the planner
    /// marked it so (PostgreSQL), else as `search_query` sends it.
    async fn fetch_search(&self, query: &SqlQuery) -> StoreResult<Vec<AnyRow>> {
        if query.generic_plan && self.generic_leases.is_some() {
            return self
                .read_all(bind_all(sqlx::query(&query.sql), &query.binds), true)
                .await;
        }
        self.read_all(search_query(query, self.dialect), false)
            .await
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            // A broken connection fails its query and is replaced; pinging before every use
            // costs a round trip per request.
            .test_before_acquire(false);
        if dialect == Dialect::Sqlite {
            opts = opts.after_connect(|conn, _| Box::pin(sqlite_pragmas(conn)));
        }
        let options = sqlx::any::AnyConnectOptions::from_str(url)?;
        let pool = opts.connect_with(options.clone()).await?;
        let sqlite_file = sqlite_file(url).filter(|_| dialect == Dialect::Sqlite);
        // Not for an in-memory SQLite database: each connection would open an empty one.
        let leases = match dialect {
            Dialect::Postgres => Some(lease::Leases::new(options.clone(), max_connections, &[])),
            Dialect::Sqlite => sqlite_file
                .as_ref()
                .map(|_| lease::Leases::new(options.clone(), max_connections, SQLITE_PRAGMAS)),
        };
        let generic_leases = (dialect == Dialect::Postgres)
            .then(|| lease::Leases::new(options.clone(), max_connections, &[GENERIC_PLANS]));
        // SQLite: every write transaction of this process on one connection. A connection's
        // page cache is thrown away whenever another connection has written since its last
        // transaction; with writes spread over the pool, each began with an empty cache.
        // One writing connection keeps its own (create benchmark, 64 clients: 490 → 615
        // creates/s).
        let sqlite_writer_pool = match &sqlite_file {
            Some(_) => Some(
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .test_before_acquire(false)
                    .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn)))
                    .connect_with(options)
                    .await?,
            ),
            None => None,
        };
        Ok(Self {
            pool,
            dialect,
            leases,
            generic_leases,
            sqlite_writer: group::GroupWriter::default(),
            sqlite_writer_pool,
            sqlite_file,
            outbox_signal: Arc::new(tokio::sync::Notify::new()),
            pg_url: (dialect == Dialect::Postgres).then(|| url.to_string()),
            directory_generation: Default::default(),
        })
    }

    /// PostgreSQL: from now on `outbox_signal` is also given a permit when any process commits
    /// outbox rows (each such transaction sends `NOTIFY`; a task of this process `LISTEN`s
    /// on a connection of its own, made again after a loss). A separate worker process then
    /// wakes at once instead of at its next poll; the poll still finds what a lost wake-up
    /// missed. Nothing on SQLite, where every writer is this process or polls.
    pub fn listen_outbox(&self) {
        let Some(url) = self.pg_url.clone() else {
            return;
        };
        let signal = self.outbox_signal.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen_outbox(&url, &signal).await {
                    tracing::warn!(error = %e, "outbox listener disconnected; polling until it is back");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    /// Applies the migrations not applied yet. Processes starting together (a server and its
    /// workers) take turns: PostgreSQL through sqlx's advisory lock, SQLite through an
    /// exclusive lock on `<database>.migrate-lock` (sqlx takes none there).
    pub async fn migrate(&self) -> StoreResult<()> {
        let _turn = match &self.sqlite_file {
            Some(db) => {
                let mut name = db.clone().into_os_string();
                name.push(".migrate-lock");
                let lock = tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::create(name)?;
                    f.lock()?;
                    std::io::Result::Ok(f)
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(e)))?;
                Some(lock)
            }
            None => None,
        };
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// A write transaction (immediate on SQLite, after the in-process writer lock).
    pub(crate) async fn begin_sql(&self) -> StoreResult<SqlTx> {
        // Begun on a task of its own, which the caller's cancellation (a request whose client
        // went away, a consumer stopped with its broker) cannot cut off mid-BEGIN: a BEGIN cut
        // off there left its connection inside a transaction nobody would end — on SQLite
        // holding the write lock, so every other writer got "database is locked"; on
        // PostgreSQL "there is already a transaction in progress" at its next BEGIN (test:
        // `a_cancelled_begin_leaves_no_transaction_open`). A transaction whose caller is gone
        // is dropped when the task ends: rolled back.
        // SQLite: a member of the writer's group commit (`group`).
        let tx = match self.dialect {
            Dialect::Sqlite => {
                let pool = self
                    .sqlite_writer_pool
                    .clone()
                    .unwrap_or_else(|| self.pool.clone());
                TxConn::Group(self.sqlite_writer.begin(pool).await?)
            }
            Dialect::Postgres => {
                let pool = self.pool.clone();
                let begun = tokio::spawn(async move { pool.begin().await }).await;
                TxConn::Own(begun.map_err(StoreError::other)??)
            }
        };
        Ok(SqlTx {
            tx,
            dialect: self.dialect,
            outbox_signal: self.outbox_signal.clone(),
            appended_outbox: false,
            directory_generation: self.directory_generation.clone(),
            wrote_directory: false,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Given a permit whenever this process commits outbox rows (other processes' commits
    /// are seen by polling).
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }
}

/// The session setting of the connections that plan each statement once, generically.
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

/// `deleted` is read as an integer: sqlx's Any driver cannot decode SQLite booleans.
const STORED_COLUMNS: &str = "rid, res_type, id, version, last_updated, \
     CAST(CASE WHEN deleted THEN 1 ELSE 0 END AS BIGINT) AS deleted, body";

fn get_bool(row: &AnyRow, col: &str) -> StoreResult<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

fn stored_from(row: &AnyRow) -> StoreResult<Stored> {
    Ok(Stored {
        rid: row.try_get("rid")?,
        res_type: row.try_get("res_type")?,
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        last_updated: row.try_get("last_updated")?,
        deleted: get_bool(row, "deleted")?,
        body: row.try_get("body")?,
    })
}

/// History rows: a `Stored` and its `method` each.
fn history_entries(rows: &[AnyRow]) -> StoreResult<Vec<HistoryEntry>> {
    rows.iter()
        .map(|r| {
            Ok(HistoryEntry {
                stored: stored_from(r)?,
                method: r.try_get("method")?,
            })
        })
        .collect()
}

fn found_from(row: &AnyRow) -> StoreResult<FoundRow> {
    Ok(FoundRow {
        rid: row.try_get("rid")?,
        res_type: row.try_get("res_type").unwrap_or_default(),
        id: row.try_get("id")?,
        body: row.try_get("body")?,
    })
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.as_str()),
            Bind::Int(i) => q.bind(*i),
            Bind::Float(f) => q.bind(*f),
            Bind::Bool(v) => q.bind(*v),
            Bind::Null => q.bind(None::<String>),
        };
    }
    q
}

/// A search-planner statement. PostgreSQL: sent unnamed, so each execution is planned for its
/// values; a cached generic plan of a search can drive from its least selective filter
/// (measured: 587 ms instead of 3 ms for the slot search). Plain reads and writes keep their
/// cached plans, and so do the searches that run on `SqlStore::generic_leases`. SQLite plans
/// without the values anyway (no STAT4): the statement is kept prepared.
fn search_query(
    q: &SqlQuery,
    dialect: Dialect,
) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
    bind_all(sqlx::query(&q.sql), &q.binds).persistent(dialect == Dialect::Sqlite)
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db.code().as_deref() == Some("23505")
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

#[async_trait]
impl Store for SqlStore {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn read(&self, res_type: &str, id: &str) -> StoreResult<Option<Stored>> {
        if res_type == AUDIT {
            return self.audit_read(id).await;
        }
        let row = self
            .read_one(
                sqlx::query(&format!(
                    "SELECT {STORED_COLUMNS} FROM resources WHERE res_type = $1 AND id = $2"
                ))
                .bind(res_type)
                .bind(id),
            )
            .await?;
        row.as_ref().map(stored_from).transpose()
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn vread(&self, res_type: &str, id: &str, version: i64) -> StoreResult<Option<Stored>> {
        if res_type == AUDIT {
            // AuditEvents are never changed: version 1 is the only one.
            return Ok(if version == 1 {
                self.audit_read(id).await?
            } else {
                None
            });
        }
        let row = self
            .read_one(
                sqlx::query(&format!(
                    "SELECT {STORED_COLUMNS} FROM resource_history \
                     WHERE res_type = $1 AND id = $2 AND version = $3"
                ))
                .bind(res_type)
                .bind(id)
                .bind(version),
            )
            .await?;
        row.as_ref().map(stored_from).transpose()
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        since: Option<i64>,
        count: usize,
        offset: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)> {
        match scope {
            HistoryScope::Type(t) if t == AUDIT => {
                return self.audit_history(None, since, count, offset).await
            }
            HistoryScope::Instance(t, id) if t == AUDIT => {
                return self.audit_history(Some(id), since, count, offset).await
            }
            _ => {}
        }
        let mut q = SqlQuery::default();
        let mut cond = match scope {
            // The audit log is not part of the system's history (reading that history is itself
            // audited, which would feed it without end): its own store has no history rows.
            // `AuditEvent/_history` has it.
            HistoryScope::System => String::from("1 = 1"),
            HistoryScope::Type(t) => {
                let p = q.push(Bind::Text(t.clone()));
                format!("res_type = {p}")
            }
            HistoryScope::Instance(t, id) => {
                let p1 = q.push(Bind::Text(t.clone()));
                let p2 = q.push(Bind::Text(id.clone()));
                format!("res_type = {p1} AND id = {p2}")
            }
        };
        if let Some(s) = since {
            let p = q.push(Bind::Int(s));
            cond.push_str(&format!(" AND last_updated >= {p}"));
        }
        let count_sql = format!("SELECT COUNT(*) FROM resource_history WHERE {cond}");
        let total: i64 = bind_all(sqlx::query(&count_sql), &q.binds)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let pl = q.push(Bind::Int(count as i64));
        let po = q.push(Bind::Int(offset as i64));
        let sql = format!(
            "SELECT {STORED_COLUMNS}, method FROM resource_history WHERE {cond} \
             ORDER BY last_updated DESC, rid DESC, version DESC LIMIT {pl} OFFSET {po}"
        );
        let rows = bind_all(sqlx::query(&sql), &q.binds)
            .fetch_all(&self.pool)
            .await?;
        Ok((history_entries(&rows)?, total))
    }

    async fn find(&self, query: &SqlQuery) -> StoreResult<Vec<FoundRow>> {
        let rows = self.fetch_search(query).await?;
        rows.iter().map(found_from).collect()
    }

    async fn find_open_keys(&self, query: &SqlQuery) -> StoreResult<Vec<OpenKey>> {
        let rows = self.fetch_search(query).await?;
        rows.iter()
            .map(|r| {
                Ok(OpenKey {
                    rid: r.try_get(0)?,
                    lo: r.try_get(1)?,
                    schedule: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn count(&self, query: &SqlQuery) -> StoreResult<i64> {
        let row = self
            .read_one(search_query(query, self.dialect))
            .await?
            .ok_or_else(|| StoreError::other("a count returned no row"))?;
        Ok(row.try_get(0)?)
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        Ok(Box::new(self.begin_sql().await?))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn directory_generation(&self) -> Option<u64> {
        Some(
            self.directory_generation
                .load(std::sync::atomic::Ordering::SeqCst),
        )
    }
}

/// A transaction: PostgreSQL's own; on SQLite a member of the writer's group commit.
enum TxConn {
    Own(Transaction<'static, Any>),
    Group(group::Turn),
}

impl TxConn {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match self {
            Self::Own(tx) => tx,
            Self::Group(turn) => turn.conn(),
        }
    }

    async fn commit(self) -> StoreResult<()> {
        match self {
            Self::Own(tx) => Ok(tx.commit().await?),
            Self::Group(turn) => turn.commit().await,
        }
    }
}

/// Dropped uncommitted, the transaction rolls back.
pub(crate) struct SqlTx {
    tx: TxConn,
    dialect: Dialect,
    /// The store's outbox signal, given a permit on commit when this transaction appended
    /// outbox rows (`SqlStore::outbox_signal`).
    outbox_signal: Arc<tokio::sync::Notify>,
    appended_outbox: bool,
    /// The store's directory generation, advanced on commit when this transaction wrote one
    /// of the `DIRECTORY_TYPES` (`Store::directory_generation`).
    directory_generation: Arc<std::sync::atomic::AtomicU64>,
    wrote_directory: bool,
}

impl SqlTx {
    fn wrote(&mut self, res_type: &str) {
        self.wrote_directory |= DIRECTORY_TYPES.contains(&res_type);
    }
}

/// Index rows of one table: its value columns and, per row, the param and the values.
struct IndexGroup {
    table: &'static str,
    cols: &'static str,
    rows: Vec<(String, Vec<Bind>)>,
}

/// Index rows grouped by table, in `INDEX_TABLES` order.
fn index_groups(rows: &[IndexRow]) -> Vec<IndexGroup> {
    let mut groups: Vec<IndexGroup> = Vec::new();
    for row in rows {
        let (slot, cols, values): (usize, &'static str, Vec<Bind>) = match &row.value {
            IndexValue::Token { system, code, text } => (
                0,
                "system, code, text",
                vec![opt(system), opt(code), opt(text)],
            ),
            IndexValue::String { norm, exact } => (
                1,
                "norm, exact",
                vec![Bind::Text(norm.clone()), Bind::Text(exact.clone())],
            ),
            IndexValue::Date { lo, hi } => (2, "lo, hi", vec![Bind::Int(*lo), Bind::Int(*hi)]),
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => (
                3,
                "target_type, target_id, url",
                vec![opt(target_type), opt(target_id), opt(url)],
            ),
            IndexValue::Number { value, lo, hi } => (
                4,
                "value, lo, hi",
                vec![Bind::Float(*value), Bind::Float(*lo), Bind::Float(*hi)],
            ),
            IndexValue::Quantity {
                value,
                lo,
                hi,
                system,
                code,
                unit,
            } => (
                5,
                "value, lo, hi, system, code, unit",
                vec![
                    Bind::Float(*value),
                    Bind::Float(*lo),
                    Bind::Float(*hi),
                    opt(system),
                    opt(code),
                    opt(unit),
                ],
            ),
            IndexValue::Uri { uri } => (6, "uri", vec![Bind::Text(uri.clone())]),
            IndexValue::Geo { lat, lon } => {
                (7, "lat, lon", vec![Bind::Float(*lat), Bind::Float(*lon)])
            }
            IndexValue::Open {
                lo,
                schedule,
                system,
                code,
                ord,
            } => (
                8,
                "lo, schedule, system, code, ord",
                vec![
                    Bind::Int(*lo),
                    Bind::Text(schedule.clone()),
                    opt(system),
                    opt(code),
                    Bind::Int(*ord),
                ],
            ),
        };
        let table = INDEX_TABLES[slot];
        match groups.iter_mut().find(|g| g.table == table) {
            Some(g) => g.rows.push((row.param.clone(), values)),
            None => groups.push(IndexGroup {
                table,
                cols,
                rows: vec![(row.param.clone(), values)],
            }),
        }
    }
    groups.sort_by_key(|g| INDEX_TABLES.iter().position(|t| *t == g.table));
    groups
}

/// Adds binds and returns their placeholders, comma-separated.
fn push_all(q: &mut SqlQuery, binds: impl IntoIterator<Item = Bind>) -> String {
    binds
        .into_iter()
        .map(|b| q.push(b))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds a new resource row's `res_type, id, version, last_updated, deleted, body` in `q` and
/// returns their placeholders.
fn resource_values(q: &mut SqlQuery, w: &Write) -> String {
    push_all(
        q,
        [
            Bind::Text(w.res_type.clone()),
            Bind::Text(w.id.clone()),
            Bind::Int(w.version),
            Bind::Int(w.last_updated),
            Bind::Bool(false),
            Bind::Text(w.body.clone()),
        ],
    )
}

/// `INSERT INTO resources … RETURNING rid` for a new resource, its values bound in `q` (the
/// type and id first: `$1`, `$2` when `q` is empty).
fn insert_resource(q: &mut SqlQuery, w: &Write) -> String {
    let ph = resource_values(q, w);
    format!(
        "INSERT INTO resources (res_type, id, version, last_updated, deleted, body) \
         VALUES ({ph}) RETURNING rid"
    )
}

/// The single PostgreSQL statement of `put_postgres`. Returns the rid, or no row when the
/// expected version is no longer current.
fn postgres_put(w: &Write, expected: Option<i64>) -> SqlQuery {
    let mut q = SqlQuery::default();
    let mut sql = String::from("WITH r AS (");
    match expected {
        None => {
            sql.push_str(&insert_resource(&mut q, w));
            sql.push(')');
        }
        Some(prev) => {
            let v = q.push(Bind::Int(w.version));
            let lu = q.push(Bind::Int(w.last_updated));
            let del = q.push(Bind::Bool(false));
            let body = q.push(Bind::Text(w.body.clone()));
            let rt = q.push(Bind::Text(w.res_type.clone()));
            let id = q.push(Bind::Text(w.id.clone()));
            let pv = q.push(Bind::Int(prev));
            sql.push_str(&format!(
                "UPDATE resources SET version = {v}, last_updated = {lu}, deleted = {del}, \
                 body = {body} WHERE res_type = {rt} AND id = {id} AND version = {pv} \
                 RETURNING rid)"
            ));
            // Old index rows out (the statement's snapshot does not see the new ones).
            for (i, table) in index_tables(&w.res_type).enumerate() {
                sql.push_str(&format!(
                    ", d{i} AS (DELETE FROM {table} WHERE rid IN (SELECT rid FROM r))"
                ));
            }
        }
    }
    let ph = push_all(
        &mut q,
        [
            Bind::Text(w.res_type.clone()),
            Bind::Text(w.id.clone()),
            Bind::Int(w.version),
            Bind::Int(w.last_updated),
            Bind::Bool(false),
            Bind::Text(w.method.to_string()),
            Bind::Text(w.body.clone()),
        ],
    );
    sql.push_str(&format!(
        ", h AS (INSERT INTO resource_history \
         (rid, res_type, id, version, last_updated, deleted, method, body) SELECT rid, {ph} FROM r)"
    ));
    for (n, group) in index_groups(&w.index).into_iter().enumerate() {
        let width = group.cols.split(',').count() + 2;
        let names: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
        let mut rows = Vec::with_capacity(group.rows.len());
        for (param, values) in group.rows {
            let mut ph = vec![
                q.push(Bind::Text(w.res_type.clone())),
                q.push(Bind::Text(param)),
            ];
            ph.extend(values.into_iter().map(|v| q.push(v)));
            rows.push(format!("({})", ph.join(", ")));
        }
        sql.push_str(&format!(
            ", i{n} AS (INSERT INTO {} (rid, res_type, param, {}) SELECT r.rid, {} FROM r, \
             (VALUES {}) AS v({}))",
            group.table,
            group.cols,
            names
                .iter()
                .map(|c| format!("v.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            rows.join(", "),
            names.join(", ")
        ));
    }
    sql.push_str(" SELECT rid FROM r");
    q.sql = sql;
    q
}

/// The index tables a resource of `res_type` may have rows in (`open_slot`: Slots only).
fn index_tables(res_type: &str) -> impl Iterator<Item = &'static str> + '_ {
    INDEX_TABLES
        .into_iter()
        .filter(move |t| *t != "open_slot" || res_type == "Slot")
}

/// SQLite: `DELETE FROM idx_… WHERE rid = <rid>` for every index table, as one batch.
fn sqlite_clear_index_sql(rid: &str, res_type: &str) -> String {
    index_tables(res_type)
        .map(|t| format!("DELETE FROM {t} WHERE rid = {rid}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `$1 … $n` → `?` (each placeholder used once, in order; no `$` elsewhere in the text).
fn anonymous_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

const INDEX_TABLES: [&str; 9] = [
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_number",
    "idx_quantity",
    "idx_uri",
    "idx_geo",
    // Not a search parameter's: the open-slot index `$find` walks (Slots only).
    "open_slot",
];

/// SQLite: appends `; INSERT INTO idx_… (rid, res_type, param, …) VALUES (…), …` per index table
/// to a multi-statement batch. `rid` and `res_type` are SQL expressions (placeholders already in
/// `q`). The SQLite driver binds `$n` across the statements of one batch by number.
fn sqlite_index_inserts(q: &mut SqlQuery, rid: &str, res_type: &str, rows: &[IndexRow]) {
    for group in index_groups(rows) {
        q.sql.push_str(&format!(
            "; INSERT INTO {} (rid, res_type, param, {}) VALUES ",
            group.table, group.cols
        ));
        for (i, (param, values)) in group.rows.into_iter().enumerate() {
            if i > 0 {
                q.sql.push_str(", ");
            }
            let mut ph = vec![
                rid.to_string(),
                res_type.to_string(),
                q.push(Bind::Text(param)),
            ];
            ph.extend(values.into_iter().map(|v| q.push(v)));
            q.sql.push_str(&format!("({})", ph.join(", ")));
        }
    }
}

/// SQLite: the history row of the current version of `rid` (whose body is already stored),
/// appended to a multi-statement batch.
fn sqlite_history_insert(q: &mut SqlQuery, rid: &str, method: &str) {
    let m = q.push(Bind::Text(method.to_string()));
    q.sql.push_str(&format!(
        "; INSERT INTO resource_history \
         (rid, res_type, id, version, last_updated, deleted, method, body) \
         SELECT rid, res_type, id, version, last_updated, deleted, {m}, body \
         FROM resources WHERE rid = {rid}"
    ));
}

impl SqlTx {
    /// SQLite: the whole write in at most two round trips to the connection's worker thread
    /// (each statement otherwise costs one, with two thread hand-offs: under load the write
    /// path was dominated by them). A create is one batch: the resource row, then history and
    /// index rows keyed by a lookup of the new rid. An update first swaps the row (optimistic
    /// check), then sends old index rows out, history and new index rows as one batch.
    /// A batch stops at its first failing statement; the transaction then rolls back.
    async fn put_sqlite(&mut self, w: &Write, expected: Option<i64>) -> StoreResult<i64> {
        match expected {
            None => {
                let mut q = SqlQuery::default();
                q.sql = insert_resource(&mut q, w);
                // $1, $2: the type and id just inserted.
                let rid = "(SELECT rid FROM resources WHERE res_type = $1 AND id = $2)";
                sqlite_history_insert(&mut q, rid, w.method);
                sqlite_index_inserts(&mut q, rid, "$1", &w.index);
                // fetch_all runs every statement of the batch.
                let rows = bind_all(sqlx::query(&q.sql), &q.binds)
                    .fetch_all(self.tx.conn())
                    .await;
                match rows {
                    Ok(rows) => {
                        let row = rows.first().ok_or_else(|| {
                            StoreError::other("the resource insert returned no rid")
                        })?;
                        Ok(row.try_get(0)?)
                    }
                    Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate),
                    Err(e) => Err(e.into()),
                }
            }
            Some(prev) => {
                let row = sqlx::query(
                    "UPDATE resources SET version = $1, last_updated = $2, deleted = $3, body = $4 \
                     WHERE res_type = $5 AND id = $6 AND version = $7 RETURNING rid",
                )
                .bind(w.version)
                .bind(w.last_updated)
                .bind(false)
                .bind(&w.body)
                .bind(&w.res_type)
                .bind(&w.id)
                .bind(prev)
                .fetch_optional(self.tx.conn())
                .await?;
                let rid: i64 = row.ok_or(StoreError::Conflict)?.try_get(0)?;
                let mut q = SqlQuery::default();
                let r = q.push(Bind::Int(rid));
                let rt = q.push(Bind::Text(w.res_type.clone()));
                q.sql = sqlite_clear_index_sql(&r, &w.res_type);
                sqlite_history_insert(&mut q, &r, w.method);
                sqlite_index_inserts(&mut q, &r, &rt, &w.index);
                bind_all(sqlx::query(&q.sql), &q.binds)
                    .execute(self.tx.conn())
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::Conflict
                        } else {
                            e.into()
                        }
                    })?;
                Ok(rid)
            }
        }
    }

    /// PostgreSQL: the whole write — resource, history row, old index rows out, new ones in —
    /// as one statement of data-modifying CTEs: one round trip instead of one per table.
    async fn put_postgres(&mut self, w: &Write, expected: Option<i64>) -> StoreResult<i64> {
        let q = postgres_put(w, expected);
        let row = bind_all(sqlx::query(&q.sql), &q.binds)
            .fetch_optional(self.tx.conn())
            .await;
        match row {
            Ok(Some(row)) => Ok(row.try_get(0)?),
            Ok(None) => Err(StoreError::Conflict),
            Err(e) if is_unique_violation(&e) && expected.is_none() => Err(StoreError::Duplicate),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// A bulk statement's SQL for this dialect. Its `$n` placeholders appear once each, in
    /// order; on SQLite they become anonymous `?`: SQLite looks numbered and named parameters
    /// up in a list, by scanning it, when it parses the statement and again when sqlx binds each
    /// value — quadratic in their number (a 9,000-value insert spent most of the audit writer's
    /// time in `sqlite3_bind_parameter_name`).
    fn bulk_sql(&self, sql: &str) -> String {
        match self.dialect {
            Dialect::Postgres => sql.to_string(),
            Dialect::Sqlite => anonymous_placeholders(sql),
        }
    }

    /// Replaces the holds of `rid`, one row per hold, so the error names what is taken. On
    /// PostgreSQL the exclusion constraint is the check (it also sees, and waits for, a
    /// concurrent writer); SQLite, whose writers take turns, checks first.
    async fn replace_holds(&mut self, rid: i64, holds: &[Hold], existed: bool) -> StoreResult<()> {
        if existed {
            sqlx::query("DELETE FROM booking WHERE rid = $1")
                .bind(rid)
                .execute(self.tx.conn())
                .await?;
        }
        for h in holds {
            if self.dialect == Dialect::Sqlite {
                let taken = sqlx::query(
                    "SELECT 1 FROM booking WHERE hold_key = $1 AND lo < $2 AND hi > $3 LIMIT 1",
                )
                .bind(&h.key)
                .bind(h.hi)
                .bind(h.lo)
                .fetch_optional(self.tx.conn())
                .await?;
                if taken.is_some() {
                    return Err(StoreError::Overlap(h.key.clone()));
                }
            }
            sqlx::query("INSERT INTO booking (rid, hold_key, lo, hi) VALUES ($1, $2, $3, $4)")
                .bind(rid)
                .bind(&h.key)
                .bind(h.lo)
                .bind(h.hi)
                .execute(self.tx.conn())
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.code().as_deref() == Some("23P01") => {
                        StoreError::Overlap(h.key.clone())
                    }
                    _ => e.into(),
                })?;
        }
        Ok(())
    }

    async fn clear_index(&mut self, rid: i64, res_type: &str) -> StoreResult<()> {
        if self.dialect == Dialect::Sqlite {
            sqlx::query(&sqlite_clear_index_sql("$1", res_type))
                .bind(rid)
                .execute(self.tx.conn())
                .await?;
            return Ok(());
        }
        for table in index_tables(res_type) {
            sqlx::query(&format!("DELETE FROM {table} WHERE rid = $1"))
                .bind(rid)
                .execute(self.tx.conn())
                .await?;
        }
        Ok(())
    }

    async fn insert_history(&mut self, s: &Stored, method: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO resource_history \
             (rid, res_type, id, version, last_updated, deleted, method, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(s.rid)
        .bind(&s.res_type)
        .bind(&s.id)
        .bind(s.version)
        .bind(s.last_updated)
        .bind(s.deleted)
        .bind(method)
        .bind(&s.body)
        .execute(self.tx.conn())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict
            } else {
                e.into()
            }
        })?;
        Ok(())
    }
}

fn opt(v: &Option<String>) -> Bind {
    match v {
        Some(s) => Bind::Text(s.clone()),
        None => Bind::Null,
    }
}

#[async_trait]
impl StoreTx for SqlTx {
    async fn read(&mut self, res_type: &str, id: &str) -> StoreResult<Option<Stored>> {
        if res_type == AUDIT {
            let row = sqlx::query(audit::READ_SQL)
                .bind(id)
                .fetch_optional(self.tx.conn())
                .await?;
            return row.as_ref().map(stored_from).transpose();
        }
        let row = sqlx::query(&format!(
            "SELECT {STORED_COLUMNS} FROM resources WHERE res_type = $1 AND id = $2"
        ))
        .bind(res_type)
        .bind(id)
        .fetch_optional(self.tx.conn())
        .await?;
        row.as_ref().map(stored_from).transpose()
    }

    async fn find(&mut self, query: &SqlQuery) -> StoreResult<Vec<FoundRow>> {
        let rows = search_query(query, self.dialect)
            .fetch_all(self.tx.conn())
            .await?;
        rows.iter().map(found_from).collect()
    }

    async fn put(&mut self, w: Write, expected: Option<i64>) -> StoreResult<Stored> {
        if w.res_type == AUDIT {
            // Only the audit writer stores AuditEvents, in their own store (`audit_insert`).
            return Err(StoreError::other(
                "AuditEvents are written by the audit log only",
            ));
        }
        self.wrote(&w.res_type);
        if self.dialect == Dialect::Postgres {
            let rid = self.put_postgres(&w, expected).await?;
            if expected.is_some() || !w.holds.is_empty() {
                self.replace_holds(rid, &w.holds, expected.is_some())
                    .await?;
            }
            return Ok(Stored {
                rid,
                res_type: w.res_type,
                id: w.id,
                version: w.version,
                last_updated: w.last_updated,
                deleted: false,
                body: w.body,
            });
        }
        let rid = self.put_sqlite(&w, expected).await?;
        let stored = Stored {
            rid,
            res_type: w.res_type,
            id: w.id,
            version: w.version,
            last_updated: w.last_updated,
            deleted: false,
            body: w.body,
        };
        if expected.is_some() || !w.holds.is_empty() {
            self.replace_holds(rid, &w.holds, expected.is_some())
                .await?;
        }
        Ok(stored)
    }

    async fn delete(
        &mut self,
        res_type: &str,
        id: &str,
        version: i64,
        expected: i64,
        last_updated: i64,
    ) -> StoreResult<()> {
        self.wrote(res_type);
        let row = sqlx::query(
            "UPDATE resources SET version = $1, last_updated = $2, deleted = $3 \
             WHERE res_type = $4 AND id = $5 AND version = $6 RETURNING rid",
        )
        .bind(version)
        .bind(last_updated)
        .bind(true)
        .bind(res_type)
        .bind(id)
        .bind(expected)
        .fetch_optional(self.tx.conn())
        .await?;
        let rid: i64 = row.ok_or(StoreError::Conflict)?.try_get(0)?;
        self.clear_index(rid, res_type).await?;
        self.replace_holds(rid, &[], true).await?;
        let s = Stored {
            rid,
            res_type: res_type.to_string(),
            id: id.to_string(),
            version,
            last_updated,
            deleted: true,
            body: String::new(),
        };
        self.insert_history(&s, "DELETE").await
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let signal = self.appended_outbox.then(|| self.outbox_signal.clone());
        let generation = self
            .wrote_directory
            .then(|| self.directory_generation.clone());
        self.tx.commit().await?;
        if let Some(g) = generation {
            g.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(s) = signal {
            s.notify_one();
        }
        Ok(())
    }

    async fn audit_head(&mut self) -> StoreResult<Option<(i64, String)>> {
        self.chain_head().await
    }

    async fn audit_append(&mut self, rows: &[audit::ChainRow]) -> StoreResult<()> {
        self.chain_insert(rows).await
    }

    async fn audit_insert(&mut self, rows: &[audit::AuditWrite]) -> StoreResult<()> {
        self.audit_event_insert(rows).await
    }

    async fn outbox_append(&mut self, rows: &[notify::OutboxRow]) -> StoreResult<()> {
        self.outbox_insert(rows).await?;
        if !rows.is_empty() && !self.appended_outbox && self.dialect == Dialect::Postgres {
            // Delivered to the listeners when (and only if) this transaction commits.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(OUTBOX_CHANNEL)
                .execute(self.tx.conn())
                .await?;
        }
        self.appended_outbox |= !rows.is_empty();
        Ok(())
    }

    async fn subscription_reset(&mut self, id: &str, status: &str, now: i64) -> StoreResult<()> {
        self.sub_reset(id, status, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::{anonymous_placeholders, sqlite_file, SqlStore};

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///tmp/x/t.db?mode=rwc"),
            Some("/tmp/x/t.db".into())
        );
        assert_eq!(sqlite_file("sqlite:data/t.db"), Some("data/t.db".into()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    /// Processes starting together on a new database: each migrates it, none fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_take_turns() {
        let dir = std::env::temp_dir().join(format!("fhir-mig-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let runs = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let s = SqlStore::connect(&url, 2).await.unwrap();
                s.migrate().await
            })
        });
        for r in futures::future::join_all(runs).await {
            r.unwrap().expect("migrated");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SQLite's group commit: concurrent transactions share commits, and each is kept or
    /// rolled back on its own — committed ones are all there, dropped ones (one after a failed
    /// statement) left nothing, whichever group they were in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_members_commit_together_and_roll_back_alone() {
        use super::{Store, StoreError, Write};
        let dir = std::env::temp_dir().join(format!("fhir-group-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let store = std::sync::Arc::new(SqlStore::connect(&url, 4).await.unwrap());
        store.migrate().await.unwrap();
        let write = |id: String| Write {
            res_type: "Basic".into(),
            body: format!("{{\"resourceType\":\"Basic\",\"id\":\"{id}\"}}"),
            id,
            version: 1,
            last_updated: 1,
            method: "POST",
            index: Vec::new(),
            holds: Vec::new(),
        };
        let mut first = store.begin().await.unwrap();
        first.put(write("taken".into()), None).await.unwrap();
        first.commit().await.unwrap();
        let before = store.sqlite_writer.commits();
        let n = 90;
        let tasks = (0..n).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                match i % 3 {
                    // Written, then dropped uncommitted.
                    0 => {
                        tx.put(write(format!("p{i}")), None).await.unwrap();
                    }
                    // A statement that fails (the id is taken), then dropped.
                    1 => {
                        tx.put(write(format!("q{i}")), None).await.unwrap();
                        let dup = tx.put(write("taken".into()), None).await;
                        assert!(matches!(dup, Err(StoreError::Duplicate)), "{dup:?}");
                    }
                    _ => {
                        tx.put(write(format!("p{i}")), None).await.unwrap();
                        tx.commit().await.unwrap();
                    }
                }
            })
        });
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM resources WHERE res_type = 'Basic' AND id <> 'taken' ORDER BY id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let mut want: Vec<String> = (0..n)
            .filter(|i| i % 3 == 2)
            .map(|i| format!("p{i}"))
            .collect();
        want.sort();
        assert_eq!(ids, want);
        // Shared commits: fewer groups than committed members (a cancelled or failed member
        // commits nothing of its own).
        let groups = store.sqlite_writer.commits() - before;
        assert!(
            groups < want.len(),
            "{groups} commits for {} members",
            want.len()
        );
        // Nothing left open: a plain write commits at once.
        let mut last = store.begin().await.unwrap();
        last.put(write("last".into()), None).await.unwrap();
        last.commit().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn numbered_placeholders_become_anonymous() {
        assert_eq!(
            anonymous_placeholders("INSERT INTO t (a, b) VALUES ($1, $2), (7, $10)"),
            "INSERT INTO t (a, b) VALUES (?, ?), (7, ?)"
        );
    }
}
