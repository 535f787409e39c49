//! Connections for single read statements (PostgreSQL, and SQLite on a file), kept outside
//! sqlx's pool: sqlx pings every connection handed back to its pool
//! (`PoolConnection::return_to_pool`, unconditionally) — on PostgreSQL a round trip per
//! request that took 12 % of the server's CPU under read load, plus PostgreSQL's wake-up on
//! the other side; on SQLite a hop to the connection's worker thread and back. A [`Lease`]
//! hands its connection back without that ping, but only once its statement ran to the end
//! ([`Lease::done`]); a lease dropped before (its request cancelled mid-statement) or after an
//! error closes its connection instead, so no connection is reused in a state nobody knows.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::AnyConnection;
use sqlx::ConnectOptions;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{StoreError, StoreResult};

/// How long a statement waits for a connection before failing (like the pools' acquire timeout).
const WAIT: Duration = Duration::from_secs(30);

pub(crate) struct Leases {
    options: AnyConnectOptions,
    /// Run on each new connection (session settings).
    init: &'static [&'static str],
    idle: Mutex<Vec<AnyConnection>>,
    permits: Semaphore,
}

impl Leases {
    /// At most `max` connections, opened on first use, each running `init` first.
    pub(crate) fn new(options: AnyConnectOptions, max: u32, init: &'static [&'static str]) -> Self {
        Self {
            options,
            init,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max.max(1) as usize),
        }
    }

    /// A connection of its own for one statement: an idle one, or a new one.
    pub(crate) async fn get(&self) -> StoreResult<Lease<'_>> {
        let permit = tokio::time::timeout(WAIT, self.permits.acquire())
            .await
            .map_err(|_| StoreError::other("timed out waiting for a database connection"))?
            .map_err(StoreError::other)?;
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let conn = match idle {
            Some(c) => c,
            None => {
                let mut c = self.options.connect().await?;
                for sql in self.init {
                    sqlx::query(sql).execute(&mut c).await?;
                }
                c
            }
        };
        Ok(Lease {
            leases: self,
            conn: Some(conn),
            done: false,
            _permit: permit,
        })
    }
}

pub(crate) struct Lease<'a> {
    leases: &'a Leases,
    conn: Option<AnyConnection>,
    done: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub(crate) fn conn(&mut self) -> StoreResult<&mut AnyConnection> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::other("a lease without its connection"))
    }

    /// The statement ran to the end: the connection may serve the next one.
    pub(crate) fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let (true, Some(conn)) = (self.done, self.conn.take()) {
            if let Ok(mut idle) = self.leases.idle.lock() {
                idle.push(conn);
            }
        }
        // Otherwise the connection is dropped here, which closes it.
    }
}
