//! The admission queue in front of booking: a bounded FIFO served by a fixed number of workers
//! (database transactions at once). Past its depth a request is refused at once with 429 and
//! `Retry-After` — the server sheds load rather than timing out or failing with 5xx. Depth, wait
//! time and outcomes are exported at `/metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::fhir::FhirError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub operation: String,
    pub outcome: String,
}

/// The booking metrics.
pub struct Metrics {
    pub depth: Gauge,
    pub in_flight: Gauge,
    pub wait_seconds: Histogram,
    pub outcomes: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        Self {
            depth: Gauge::default(),
            in_flight: Gauge::default(),
            wait_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            outcomes: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "booking_queue_depth",
            "Booking requests waiting for a worker",
            self.depth.clone(),
        );
        registry.register(
            "booking_in_flight",
            "Booking requests being served",
            self.in_flight.clone(),
        );
        registry.register(
            "booking_queue_wait_seconds",
            "Time a booking request waited in the queue",
            self.wait_seconds.clone(),
        );
        registry.register(
            "booking_requests",
            "Booking operations by outcome (ok, conflict, rejected, client_error, error)",
            self.outcomes.clone(),
        );
    }
}

/// A bounded FIFO queue with `workers` servers.
pub struct AdmissionQueue {
    workers: Semaphore,
    max_waiting: i64,
    waiting: AtomicI64,
    /// Seconds a refused client is told to wait.
    pub retry_after: u64,
    pub metrics: Metrics,
}

impl AdmissionQueue {
    pub fn new(workers: usize, max_waiting: usize) -> Self {
        Self {
            workers: Semaphore::new(workers.max(1)),
            max_waiting: max_waiting as i64,
            waiting: AtomicI64::new(0),
            retry_after: 1,
            metrics: Metrics::new(),
        }
    }

    /// Runs `job` when a worker is free, in arrival order; refuses at once when `max_waiting`
    /// requests are already waiting.
    pub async fn run<T>(
        &self,
        operation: &str,
        job: impl Future<Output = Result<T, FhirError>>,
    ) -> Result<T, FhirError> {
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_waiting && self.workers.available_permits() == 0 {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.count(operation, "rejected");
            return Err(FhirError::Overloaded {
                retry_after: self.retry_after,
            });
        }
        self.metrics.depth.set(before + 1);
        let start = Instant::now();
        let permit = self.workers.acquire().await;
        let now_waiting = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        self.metrics.depth.set(now_waiting);
        self.metrics
            .wait_seconds
            .observe(start.elapsed().as_secs_f64());
        let Ok(_permit) = permit else {
            return Err(FhirError::Internal("admission queue closed".into()));
        };
        self.metrics.in_flight.inc();
        let result = job.await;
        self.metrics.in_flight.dec();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(FhirError::Conflict(_) | FhirError::Scheduling(_)) => "conflict",
            Err(FhirError::Store(crate::store::StoreError::Overlap(_))) => "conflict",
            Err(FhirError::Store(crate::store::StoreError::Conflict)) => "conflict",
            Err(FhirError::Store(_) | FhirError::Internal(_)) => "error",
            Err(_) => "client_error",
        };
        self.count(operation, outcome);
        result
    }

    fn count(&self, operation: &str, outcome: &str) {
        self.metrics
            .outcomes
            .get_or_create(&OutcomeLabels {
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn past_its_depth_the_queue_refuses_at_once() {
        let q = Arc::new(AdmissionQueue::new(1, 1));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // One running (holding the only worker) and one waiting fill it.
        let q1 = q.clone();
        let running = tokio::spawn(async move {
            q1.run("book", async {
                let _ = rx.await;
                Ok::<_, FhirError>(1)
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let q2 = q.clone();
        let waiting =
            tokio::spawn(async move { q2.run("book", async { Ok::<_, FhirError>(2) }).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let refused = q.run("book", async { Ok::<_, FhirError>(3) }).await;
        assert!(matches!(
            refused,
            Err(FhirError::Overloaded { retry_after: 1 })
        ));
        tx.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), 1);
        assert_eq!(waiting.await.unwrap().unwrap(), 2);
        let mut text = String::new();
        let mut reg = Registry::default();
        q.metrics.register(&mut reg);
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains("booking_requests_total{operation=\"book\",outcome=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("booking_requests_total{operation=\"book\",outcome=\"ok\"} 2"),
            "{text}"
        );
    }
}
