//! The notification worker's metrics at `/metrics`: backlog (due and not yet delivered),
//! attempts by channel and outcome (delivered, retry, given up — the dead letters) and delivery
//! latency (from when a message was due or an event happened to its delivery).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    /// rest-hook | email | sms
    pub channel: String,
    /// delivered | retry | given_up
    pub outcome: String,
}

pub struct NotifyMetrics {
    pub backlog_messages: Gauge,
    pub backlog_events: Gauge,
    pub attempts: Family<Labels, Counter>,
    pub latency_seconds: Histogram,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        Self {
            backlog_messages: Gauge::default(),
            backlog_events: Gauge::default(),
            attempts: Family::default(),
            latency_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
        }
    }
}

impl NotifyMetrics {
    pub fn count(&self, channel: &str, outcome: &str) {
        self.attempts
            .get_or_create(&Labels {
                channel: channel.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A delivery `micros` after it was due.
    pub fn delivered_after(&self, micros: i64) {
        self.latency_seconds
            .observe((micros.max(0) as f64) / 1_000_000.0);
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notify_backlog_messages",
            "Patient messages due and not sent yet",
            self.backlog_messages.clone(),
        );
        registry.register(
            "notify_backlog_events",
            "Subscription events not delivered yet (given-up ones excluded)",
            self.backlog_events.clone(),
        );
        registry.register(
            "notify_attempts",
            "Delivery attempts by channel and outcome (delivered, retry, given_up)",
            self.attempts.clone(),
        );
        registry.register(
            "notify_delivery_latency_seconds",
            "From when a message was due, or an event happened, to its delivery",
            self.latency_seconds.clone(),
        );
    }
}
