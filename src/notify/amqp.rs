//! RabbitMQ as the notification work queue, when `AMQP_URL` is set.
//!
//! The database stays the record of what is owed (the outbox, each subscription's numbered
//! events, each patient message and its status); RabbitMQ carries the *work*: which message to
//! send, which subscription stream to deliver. So a job may be lost or repeated without a
//! notification being lost or sent twice:
//!
//! - **Relay** (every poll): publishes a job for each due message (`message.next_attempt` moves
//!   to now + `redrive` first, so relays running side by side publish it once) and one job per
//!   subscription stream with something due (`sub_state.queued_until`), each persistent and
//!   confirmed by the broker. A publication that fails puts the row back as due; work whose job
//!   the broker lost is republished after `redrive`.
//! - **Topology** (declared by every worker, idempotent): a durable topic exchange `<prefix>`
//!   with one durable queue per channel (`<prefix>.email`, `.sms`, `.rest-hook`); a retry
//!   exchange `<prefix>.retry` with delay queues `<prefix>.retry.<n>s` (n = 2, 4 … 256) whose
//!   messages expire back into the work exchange; a dead-letter exchange and queue
//!   `<prefix>.dead` (messages given up, and deliveries no consumer can read).
//! - **Consumers** (`prefetch` deliveries at a time, acknowledged after the outcome is in the
//!   database): a message job claims its message (`message.claimed_until`), so a repeat finds it
//!   sent or claimed and sends nothing; a failure goes to the delay queue of its backoff, a
//!   message past the retry period to the dead letters. A subscription job delivers its stream
//!   in order through the worker's own (leased) delivery, whose backoff lives in the stream's
//!   events: an ordered stream cannot be retried event by event.
//! - A lost connection is retried with growing pauses (1 s … 10 s); meanwhile dispatch and
//!   planning go on in the database, and unacknowledged deliveries return to their queues.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde::{Deserialize, Serialize};

use super::outreach::{self, Attempt};
use super::worker::{micros, Worker};
use crate::fhir::access;
use crate::fhir::datetime::now_micros;

#[derive(Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// Exchange and queue names start with this.
    pub prefix: String,
    /// Deliveries one worker handles at once.
    pub prefetch: u16,
    /// After how long the relay publishes again work whose job has not got it done (a job the
    /// broker lost).
    pub redrive: Duration,
}

impl fmt::Debug for AmqpConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("redrive", &self.redrive)
            .finish()
    }
}

impl AmqpConfig {
    pub fn new(url: String) -> Self {
        Self {
            url,
            prefix: "fhir-scheduler.notify".into(),
            prefetch: 16,
            redrive: Duration::from_secs(300),
        }
    }

    fn queue(&self, channel: &str) -> String {
        format!("{}.{channel}", self.prefix)
    }
    fn retry(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    fn tier(&self, secs: u64) -> String {
        format!("{}.retry.{secs}s", self.prefix)
    }
    fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// Every queue this topology has.
    fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = CHANNELS.iter().map(|c| self.queue(c)).collect();
        q.push(self.dead());
        q.extend(TIERS.iter().map(|t| self.tier(*t)));
        q
    }
}

/// The channels with a queue each.
const CHANNELS: [&str; 3] = ["email", "sms", "rest-hook"];
/// Delays of the retry queues, in seconds: the message backoff (2 s … 256 s) exactly.
const TIERS: [u64; 8] = [2, 4, 8, 16, 32, 64, 128, 256];

/// What a queued job asks for. Only ids travel: the rest is read from the database, so
/// nothing of a patient's is in the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "kebab-case")]
enum Job {
    Message { id: String },
    Subscription { id: String },
}

impl Job {
    fn id(&self) -> &str {
        match self {
            Job::Message { id } | Job::Subscription { id } => id,
        }
    }
}

/// The retry queue for a delay: the shortest that waits at least that long.
fn tier_for(delay: Duration) -> u64 {
    let secs = delay.as_secs_f64().ceil() as u64;
    TIERS
        .iter()
        .copied()
        .find(|t| *t >= secs)
        .unwrap_or(TIERS[TIERS.len() - 1])
}

/// Runs the relay and the consumers for as long as the process lives, reconnecting as needed.
pub async fn run(worker: Arc<Worker>, cfg: AmqpConfig) {
    let mut pause = Duration::from_secs(1);
    loop {
        let began = Instant::now();
        let r = access::as_system(session(&worker, &cfg)).await;
        worker.metrics.broker_connected.set(0);
        if let Err(e) = r {
            tracing::warn!(error = %e, "RabbitMQ session ended; reconnecting");
        }
        if began.elapsed() > Duration::from_secs(30) {
            pause = Duration::from_secs(1);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// A connected publisher (confirms on).
struct Link<'a> {
    channel: Channel,
    cfg: &'a AmqpConfig,
}

impl Link<'_> {
    /// Publishes a persistent job and waits for the broker to take responsibility for it.
    async fn publish(&self, exchange: &str, key: &str, job: &Job) -> anyhow::Result<()> {
        let body = serde_json::to_vec(job)?;
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(job.id().into());
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => anyhow::bail!("no queue is bound for {exchange}/{key}"),
            Confirmation::Nack(_) => anyhow::bail!("the broker refused the job"),
            Confirmation::NotRequested => anyhow::bail!("the broker did not confirm the job"),
        }
    }

    async fn work(&self, channel: &str, job: &Job) -> anyhow::Result<()> {
        self.publish(&self.cfg.prefix, channel, job).await
    }

    async fn later(&self, channel: &str, delay: Duration, job: &Job) -> anyhow::Result<()> {
        let key = format!("{}s.{channel}", tier_for(delay));
        self.publish(&self.cfg.retry(), &key, job).await
    }

    async fn dead(&self, channel: &str, job: &Job) -> anyhow::Result<()> {
        self.publish(&self.cfg.dead(), channel, job).await
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &Channel, cfg: &AmqpConfig) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let none = FieldTable::default;
    let text = |s: String| AMQPValue::LongString(s.into());
    ch.exchange_declare(
        cfg.prefix.as_str().into(),
        ExchangeKind::Topic,
        durable,
        none(),
    )
    .await?;
    ch.exchange_declare(cfg.retry().into(), ExchangeKind::Topic, durable, none())
        .await?;
    ch.exchange_declare(cfg.dead().into(), ExchangeKind::Fanout, durable, none())
        .await?;
    ch.queue_declare(cfg.dead().into(), q, none()).await?;
    ch.queue_bind(
        cfg.dead().into(),
        cfg.dead().into(),
        "".into(),
        QueueBindOptions::default(),
        none(),
    )
    .await?;
    for c in CHANNELS {
        let args = table(&[("x-dead-letter-exchange", text(cfg.dead()))]);
        ch.queue_declare(cfg.queue(c).into(), q, args).await?;
        // Fresh jobs carry the channel as key; jobs back from a delay queue `<n>s.<channel>`.
        for key in [c.to_string(), format!("*.{c}")] {
            ch.queue_bind(
                cfg.queue(c).into(),
                cfg.prefix.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                none(),
            )
            .await?;
        }
    }
    for t in TIERS {
        let args = table(&[
            ("x-message-ttl", AMQPValue::LongInt((t * 1000) as i32)),
            ("x-dead-letter-exchange", text(cfg.prefix.clone())),
        ]);
        ch.queue_declare(cfg.tier(t).into(), q, args).await?;
        ch.queue_bind(
            cfg.tier(t).into(),
            cfg.retry().into(),
            format!("{t}s.*").into(),
            QueueBindOptions::default(),
            none(),
        )
        .await?;
    }
    Ok(())
}

/// One connection's life: declare, consume, relay, until something fails.
async fn session(worker: &Worker, cfg: &AmqpConfig) -> anyhow::Result<()> {
    let conn = Connection::connect(
        &cfg.url,
        ConnectionProperties::default().with_connection_name("fhir-scheduler notifications".into()),
    )
    .await?;
    let publisher = conn.create_channel().await?;
    declare(&publisher, cfg).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consuming = conn.create_channel().await?;
    consuming
        .basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let mut streams = Vec::new();
    for c in CHANNELS {
        streams.push(
            consuming
                .basic_consume(
                    cfg.queue(c).into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
        );
    }
    worker.metrics.broker_connected.set(1);
    tracing::info!(prefix = %cfg.prefix, "notification work goes through RabbitMQ");
    let link = Link {
        channel: publisher,
        cfg,
    };
    let consume = futures::stream::select_all(streams)
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(usize::from(cfg.prefetch), |d| handle(worker, &link, d));
    let relay = async {
        let mut tick = tokio::time::interval(worker.config.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut depths_at = Instant::now() - Duration::from_secs(60);
        loop {
            // The pass that prepared work wakes the relay; so does the poll.
            tokio::select! {
                _ = tick.tick() => {}
                _ = worker.ready.notified() => {}
            }
            relay(worker, &link).await?;
            if depths_at.elapsed() >= Duration::from_secs(5) {
                depths_at = Instant::now();
                for q in cfg.queues() {
                    let passive = QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    };
                    let n = link
                        .channel
                        .queue_declare(q.as_str().into(), passive, FieldTable::default())
                        .await?
                        .message_count();
                    worker.metrics.queue_depth(&q, i64::from(n));
                }
            }
        }
    };
    tokio::select! {
        r = consume => r?,
        r = relay => return r,
    }
    anyhow::bail!("the broker stopped the consumers")
}

/// Publishes what is due: messages, then subscription streams.
async fn relay(worker: &Worker, link: &Link<'_>) -> anyhow::Result<()> {
    let sql = &worker.sql;
    let now = now_micros();
    let again = now + micros(link.cfg.redrive);
    for m in sql.messages_due(now, 200).await? {
        if !sql.message_relay(&m.id, now, again).await? {
            continue; // another relay has it
        }
        let job = Job::Message { id: m.id.clone() };
        if let Err(e) = link.work(&m.channel, &job).await {
            sql.message_defer(&m.id, now).await?;
            return Err(e);
        }
        worker.metrics.published.inc();
    }
    for sub in worker.subscriptions().await? {
        if !worker.is_due(&sub, now).await? || !sql.sub_enqueue(&sub.id, now, again).await? {
            continue;
        }
        let job = Job::Subscription { id: sub.id.clone() };
        if let Err(e) = link.work(sub.spec.kind.code(), &job).await {
            sql.sub_dequeue(&sub.id).await?;
            return Err(e);
        }
        worker.metrics.published.inc();
    }
    Ok(())
}

/// Handles one delivery and acknowledges it once its outcome is recorded. An error here ends
/// the session (the broker then hands unacknowledged deliveries to another consumer).
async fn handle(worker: &Worker, link: &Link<'_>, d: Delivery) -> anyhow::Result<()> {
    let job: Job = match serde_json::from_slice(&d.data) {
        Ok(j) => j,
        Err(_) => {
            tracing::error!(queue = %d.routing_key, "unreadable job moved to the dead letters");
            worker.metrics.dead_letters.inc();
            d.nack(BasicNackOptions {
                requeue: false,
                ..Default::default()
            })
            .await?;
            return Ok(());
        }
    };
    if let Err(e) = run_job(worker, link, &job).await {
        // The database or the broker failed under us: the job goes back to its queue (after a
        // pause, so a database outage does not spin).
        tracing::warn!(error = %e, "notification job failed; returned to its queue");
        tokio::time::sleep(Duration::from_secs(1)).await;
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await?;
        return Ok(());
    }
    d.ack(BasicAckOptions::default()).await?;
    Ok(())
}

async fn run_job(worker: &Worker, link: &Link<'_>, job: &Job) -> anyhow::Result<()> {
    match job {
        Job::Message { id } => {
            let Some((m, _)) = worker.sql.message_get(id).await? else {
                return Ok(()); // forgotten
            };
            if m.status != "pending" {
                return Ok(()); // a repeat: already sent, withdrawn or given up
            }
            let outcome = outreach::attempt(
                &worker.sql,
                &worker.fhir,
                &worker.http,
                &worker.config,
                &worker.metrics,
                &m,
                micros(link.cfg.redrive),
            )
            .await?;
            match outcome {
                Attempt::Sent | Attempt::Done => {}
                Attempt::Busy(until) => {
                    // Another worker is sending it, or died doing so: look again once its
                    // claim lapses.
                    let wait = Duration::from_micros((until - now_micros()).max(0) as u64);
                    link.later(&m.channel, wait, job).await?;
                }
                Attempt::Retry(delay) => link.later(&m.channel, delay, job).await?,
                Attempt::GaveUp => {
                    worker.metrics.dead_letters.inc();
                    link.dead(&m.channel, job).await?;
                }
            }
        }
        Job::Subscription { id } => {
            if let Some(sub) = worker.subscription(id).await? {
                // In order, a notification at a time, while there is more due and it goes
                // through (a failure's backoff is the stream's; the relay brings it back).
                for _ in 0..100 {
                    if !worker.is_due(&sub, now_micros()).await? || !worker.deliver(&sub).await {
                        break;
                    }
                }
            }
            worker.sql.sub_dequeue(id).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_a_retry_queue() {
        assert_eq!(tier_for(Duration::from_millis(10)), 2);
        assert_eq!(tier_for(Duration::from_secs(2)), 2);
        assert_eq!(tier_for(Duration::from_millis(2001)), 4);
        assert_eq!(tier_for(Duration::from_secs(60)), 64);
        assert_eq!(tier_for(Duration::from_secs(10_000)), 256);
    }

    #[test]
    fn jobs_carry_ids_only() {
        let j = Job::Message { id: "m1".into() };
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(text, r#"{"job":"message","id":"m1"}"#);
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), j);
        assert!(serde_json::from_str::<Job>(r#"{"job":"other","id":"x"}"#).is_err());
    }

    #[test]
    fn the_url_is_not_in_debug_output() {
        let c = AmqpConfig::new("amqp://user:secret@host/%2f".into());
        assert!(!format!("{c:?}").contains("secret"));
    }
}
