//! The `Auditor`: a bounded buffer in front of one writer task. The writer takes up to
//! `AuditConfig::batch` records at a time and stores them in one transaction: each AuditEvent
//! in the audit log's own store (one row with its search terms, plus a row per reference:
//! `StoreTx::audit_insert`, `fhir::search::audit`) and its link of the hash chain. A failed
//! write is retried with backoff and the
//! records are kept; once writes have failed for `fail_after`, `record` refuses new records
//! (the caller fails its request) until a write succeeds again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use super::{chain, render, AuditError, Record};
use crate::fhir::{datetime, Fhir};
use crate::store::audit::{AuditWrite, ChainRow};
use crate::store::{Dialect, StoreError};

/// How the audit writer runs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Records the buffer holds; `record` waits while it is full. Besides the buffer, at most
    /// `writers + 1` batches are held (being stored, or waiting for a writer).
    pub capacity: usize,
    /// Most records stored per transaction.
    pub batch: usize,
    /// After failing this long without a success, `record` refuses new records.
    pub fail_after: Duration,
    /// Batches stored at the same time on PostgreSQL (SQLite: always one).
    pub writers: usize,
    /// This server's name in `source.observer` and the destination agent.
    pub observer: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            capacity: 4096,
            batch: 256,
            fail_after: Duration::from_secs(10),
            writers: 4,
            observer: "fhir-scheduler".into(),
        }
    }
}

enum Msg {
    /// A record rendered by the task that recorded it (so rendering runs in parallel, outside
    /// the one writer): the AuditEvent as the store writes it (id, JSON, search index rows).
    Record(Box<AuditWrite>),
    /// Answered once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The handle the HTTP layer records through. Cheap to clone; the writer stops when the last
/// handle is dropped, after storing what it holds.
#[derive(Clone)]
pub struct Auditor {
    observer: Arc<str>,
    tx: mpsc::Sender<Msg>,
    /// `true` while the writer is healthy.
    healthy: watch::Receiver<bool>,
}

impl Auditor {
    /// Starts the writer task (on the current tokio runtime) over `fhir`'s store.
    pub fn new(fhir: Arc<Fhir>, config: AuditConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let (health_tx, healthy) = watch::channel(true);
        let observer: Arc<str> = config.observer.as_str().into();
        tokio::spawn(run(fhir, rx, health_tx, config));
        Self {
            observer,
            tx,
            healthy,
        }
    }

    /// Renders `rec` and puts it in the buffer, waiting only while it is full. `Err` when the
    /// writer cannot write (the caller fails its request: an event that cannot be recorded is
    /// refused).
    pub async fn record(&self, rec: Record) -> Result<(), AuditError> {
        if !self.is_healthy() {
            return Err(AuditError::Unavailable);
        }
        // Time-ordered ids: each batch appends to the id indexes instead of dirtying a page per
        // record all over them.
        let id = uuid::Uuid::now_v7().to_string();
        // Like the engine's writes: lastUpdated to the millisecond.
        let last_updated = datetime::now_micros() / 1000 * 1000;
        let body = render(&rec, &id, last_updated, &self.observer);
        let index = super::index::index(&body);
        let body = serde_json::to_string(&body).map_err(|_| AuditError::Unavailable)?;
        self.send(Msg::Record(Box::new(AuditWrite {
            id,
            last_updated,
            body,
            index,
        })))
        .await
    }

    /// Waits until everything recorded before this call is stored.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, rx) = oneshot::channel();
        self.send(Msg::Flush(done)).await?;
        let mut healthy = self.healthy.clone();
        tokio::select! {
            r = rx => r.map_err(|_| AuditError::Closed),
            _ = healthy.wait_for(|ok| !*ok) => Err(AuditError::Unavailable),
        }
    }

    /// Is the writer keeping up (no write failing for longer than `fail_after`)?
    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    async fn send(&self, msg: Msg) -> Result<(), AuditError> {
        if !self.is_healthy() {
            return Err(AuditError::Unavailable);
        }
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(AuditError::Closed),
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        let mut healthy = self.healthy.clone();
        tokio::select! {
            r = self.tx.send(msg) => r.map_err(|_| AuditError::Closed),
            _ = healthy.wait_for(|ok| !*ok) => Err(AuditError::Unavailable),
        }
    }
}

async fn run(
    fhir: Arc<Fhir>,
    mut rx: mpsc::Receiver<Msg>,
    healthy: watch::Sender<bool>,
    config: AuditConfig,
) {
    let batch = config.batch.max(1);
    // SQLite takes one writer at a time; on PostgreSQL batches are stored side by side and
    // only their chain links and commits take turns (see `write_batch`).
    let writers = match fhir.store.dialect() {
        Dialect::Sqlite => 1,
        Dialect::Postgres => config.writers.max(1),
    };
    let permits = Arc::new(Semaphore::new(writers));
    let healthy = Arc::new(healthy);
    let config = Arc::new(config);
    let mut in_flight: Vec<JoinHandle<()>> = Vec::new();
    let mut msgs = Vec::with_capacity(batch);
    loop {
        if rx.recv_many(&mut msgs, batch).await == 0 {
            // Every handle dropped and the buffer drained: store what is in flight, then stop.
            for h in in_flight {
                let _ = h.await;
            }
            return;
        }
        let mut records: Vec<AuditWrite> = Vec::with_capacity(msgs.len());
        let mut flushes = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Record(r) => records.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        if !records.is_empty() {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return; // never closed
            };
            let (fhir, healthy, config) = (fhir.clone(), healthy.clone(), config.clone());
            in_flight.push(tokio::spawn(async move {
                write_until_stored(&fhir, &records, &healthy, &config).await;
                drop(permit);
            }));
        }
        if !flushes.is_empty() {
            // Everything received before the flush is in a batch started by now.
            for h in in_flight.drain(..) {
                let _ = h.await;
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
        in_flight.retain(|h| !h.is_finished());
    }
}

/// Retries with backoff until the batch is stored; records are never dropped.
async fn write_until_stored(
    fhir: &Fhir,
    records: &[AuditWrite],
    healthy: &watch::Sender<bool>,
    config: &AuditConfig,
) {
    let first_failure = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        match write_batch(fhir, records, attempt > 1).await {
            Ok(()) => {
                tracing::debug!(records = records.len(), elapsed = ?started.elapsed(),
                    "audit batch stored");
                if !*healthy.borrow() {
                    tracing::info!(attempt, "audit writer recovered");
                    healthy.send_replace(true);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, records = records.len(),
                    "audit write failed; retrying");
                if first_failure.elapsed() >= config.fail_after && *healthy.borrow() {
                    tracing::error!(
                        "audit writer failing for {:?}: refusing requests until it recovers",
                        config.fail_after
                    );
                    healthy.send_replace(false);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One transaction: every record in the audit store, and the chain links after the
/// current head. A retry first looks for the batch's first record: if an earlier attempt
/// committed but its answer was lost, the batch is stored (it is one transaction) and is not
/// stored twice.
async fn write_batch(fhir: &Fhir, records: &[AuditWrite], retry: bool) -> Result<(), StoreError> {
    if retry {
        if let Some(first) = records.first() {
            if fhir.store.read("AuditEvent", &first.id).await?.is_some() {
                return Ok(());
            }
        }
    }
    let hashes: Vec<String> = records.iter().map(|r| chain::body_hash(&r.body)).collect();
    let mut tx = fhir.store.begin().await?;
    // The records first, then the chain's lock (held to the commit): concurrent batches
    // take turns only for their links.
    tx.audit_insert(records).await?;
    let (mut seq, mut prev) = tx
        .audit_head()
        .await?
        .unwrap_or((0, chain::GENESIS.to_string()));
    let mut links = Vec::with_capacity(records.len());
    for (rec, body_hash) in records.iter().zip(hashes) {
        seq += 1;
        let hash = chain::link_hash(&prev, &body_hash, seq);
        links.push(ChainRow {
            seq,
            resource_id: rec.id.clone(),
            body_hash,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    tx.audit_append(&links).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::RestInteraction;
    use crate::store::SqlStore;

    fn rec(i: usize) -> Record {
        Record::rest(RestInteraction::Read, 200).entity(format!("Patient/p{i}"))
    }

    /// While the store cannot take writes, records fill the buffer, then are refused; once it
    /// can, every accepted record is stored and the chain is whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_store_refuses_new_records_and_loses_none() {
        let dir = std::env::temp_dir().join(format!("audit-writer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        // Not migrated: no tables, every write fails.
        let store = Arc::new(SqlStore::connect(&url, 2).await.unwrap());
        let fhir = Arc::new(Fhir::new(store.clone()).unwrap());
        let auditor = Auditor::new(
            fhir,
            AuditConfig {
                capacity: 2,
                batch: 2,
                fail_after: Duration::from_millis(200),
                ..AuditConfig::default()
            },
        );
        let mut accepted = 0;
        let refused = loop {
            let r = tokio::time::timeout(Duration::from_secs(10), auditor.record(rec(accepted)))
                .await
                .expect("a full buffer waits only until the writer is known to fail");
            match r {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            // The buffer (2), the batch being retried (2) and the one waiting for a writer (2).
            assert!(accepted <= 6, "the buffer is bounded");
        };
        assert_eq!(refused, AuditError::Unavailable);
        assert!(accepted >= 3, "{accepted}");
        assert!(!auditor.is_healthy());
        assert_eq!(auditor.flush().await, Err(AuditError::Unavailable));

        store.migrate().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !auditor.is_healthy() {
            assert!(Instant::now() < deadline, "the writer recovers");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        auditor.record(rec(99)).await.unwrap();
        auditor.flush().await.unwrap();
        let v = crate::audit::verify(&store).await.unwrap();
        assert_eq!(v.broken, None);
        assert_eq!(v.records, accepted as u64 + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
