//! The `Auditor`: a bounded buffer in front of one writer task. The writer takes up to
//! `AuditConfig::batch` records at a time and stores them in one transaction: each AuditEvent
//! as an ordinary resource (current row, history row, search index rows — what a create
//! writes) and its link of the hash chain. A failed write is retried with backoff and the
//! records are kept; once writes have failed for `fail_after`, `record` refuses new records
//! (the caller fails its request) until a write succeeds again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{chain, render, AuditError, Record};
use crate::fhir::{datetime, index, Fhir};
use crate::store::audit::ChainRow;
use crate::store::{StoreError, Write};

/// How the audit writer runs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Records the buffer holds; `record` waits while it is full.
    pub capacity: usize,
    /// Most records stored per transaction.
    pub batch: usize,
    /// After failing this long without a success, `record` refuses new records.
    pub fail_after: Duration,
    /// This server's name in `source.observer` and the destination agent.
    pub observer: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            capacity: 4096,
            batch: 256,
            fail_after: Duration::from_secs(10),
            observer: "fhir-scheduler".into(),
        }
    }
}

enum Msg {
    Record(Box<Record>),
    /// Answered once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The handle the HTTP layer records through. Cheap to clone; the writer stops when the last
/// handle is dropped, after storing what it holds.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    /// `true` while the writer is healthy.
    healthy: watch::Receiver<bool>,
}

impl Auditor {
    /// Starts the writer task (on the current tokio runtime) over `fhir`'s store.
    pub fn new(fhir: Arc<Fhir>, config: AuditConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let (health_tx, healthy) = watch::channel(true);
        tokio::spawn(run(fhir, rx, health_tx, config));
        Self { tx, healthy }
    }

    /// Puts `rec` in the buffer, waiting only while it is full. `Err` when the writer cannot
    /// write (the caller fails its request: an event that cannot be recorded is refused).
    pub async fn record(&self, rec: Record) -> Result<(), AuditError> {
        self.send(Msg::Record(Box::new(rec))).await
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
    let mut msgs = Vec::with_capacity(batch);
    loop {
        if rx.recv_many(&mut msgs, batch).await == 0 {
            return; // every handle dropped and the buffer drained
        }
        let mut records = Vec::with_capacity(msgs.len());
        let mut flushes = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Record(r) => records.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        if !records.is_empty() {
            write_until_stored(&fhir, &records, &healthy, &config).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Retries with backoff until the batch is stored; records are never dropped.
async fn write_until_stored(
    fhir: &Fhir,
    records: &[Record],
    healthy: &watch::Sender<bool>,
    config: &AuditConfig,
) {
    let first_failure = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match write_batch(fhir, records, &config.observer).await {
            Ok(()) => {
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

/// One transaction: every record as an AuditEvent resource, and the chain links after the
/// current head. Ids are fresh on every attempt, so a retry after a commit whose answer was lost
/// stores the batch twice rather than not at all.
async fn write_batch(fhir: &Fhir, records: &[Record], observer: &str) -> Result<(), StoreError> {
    // Like the engine's writes: lastUpdated to the millisecond.
    let last_updated = datetime::now_micros() / 1000 * 1000;
    let mut prepared = Vec::with_capacity(records.len());
    for rec in records {
        let id = uuid::Uuid::new_v4().to_string();
        let body = render(rec, &id, last_updated, observer);
        let index = index::extract(&fhir.registry, &body);
        let text = serde_json::to_string(&body).map_err(StoreError::other)?;
        prepared.push((id, text, index));
    }
    let mut tx = fhir.store.begin().await?;
    let (mut seq, mut prev) = tx
        .audit_head()
        .await?
        .unwrap_or((0, chain::GENESIS.to_string()));
    let mut links = Vec::with_capacity(prepared.len());
    for (id, body, index) in prepared {
        seq += 1;
        let body_hash = chain::body_hash(&body);
        let hash = chain::link_hash(&prev, &body_hash, seq);
        tx.put(
            Write {
                res_type: "AuditEvent".into(),
                id: id.clone(),
                version: 1,
                last_updated,
                method: "POST",
                body,
                index,
                holds: Vec::new(),
            },
            None,
        )
        .await?;
        links.push(ChainRow {
            seq,
            resource_id: id,
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
            assert!(accepted <= 4, "the buffer is bounded");
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
