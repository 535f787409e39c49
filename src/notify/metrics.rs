//! The notification worker's metrics at `/metrics`: backlog (due and not yet delivered),
//! attempts by channel and outcome (delivered, retry, given up — the dead letters) and delivery
//! latency (from when a message was due or an event happened to its delivery); in RabbitMQ
//! mode also the connection, jobs published, dead letters and each queue's depth.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

pub struct NotifyMetrics {
    pub backlog_messages: Gauge,
    pub backlog_events: Gauge,
    pub attempts: Family<Labels, Counter>,
    pub latency_seconds: Histogram,
    /// RabbitMQ mode: 1 while connected.
    pub broker_connected: Gauge,
    /// RabbitMQ mode: jobs the relay published (confirmed by the broker).
    pub published: Counter,
    /// RabbitMQ mode: jobs moved to the dead-letter queue.
    pub dead_letters: Counter,
    /// RabbitMQ mode: messages in each queue, as last read.
    pub queue_depth: Family<QueueLabel, Gauge>,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        Self {
            backlog_messages: Gauge::default(),
            backlog_events: Gauge::default(),
            attempts: Family::default(),
            latency_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            broker_connected: Gauge::default(),
            published: Counter::default(),
            dead_letters: Counter::default(),
            queue_depth: Family::default(),
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

    pub fn queue_depth(&self, queue: &str, n: i64) {
        self.queue_depth
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(n);
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
        registry.register(
            "notify_broker_connected",
            "1 while the notification worker is connected to RabbitMQ (RabbitMQ mode)",
            self.broker_connected.clone(),
        );
        registry.register(
            "notify_jobs_published",
            "Notification jobs published to RabbitMQ and confirmed by it",
            self.published.clone(),
        );
        registry.register(
            "notify_dead_letters",
            "Notification jobs moved to the dead-letter queue",
            self.dead_letters.clone(),
        );
        registry.register(
            "notify_queue_depth",
            "Jobs waiting in each RabbitMQ queue, as last read (every 5 s)",
            self.queue_depth.clone(),
        );
    }
}
