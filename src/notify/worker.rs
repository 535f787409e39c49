//! The in-process notification worker. Every `poll` it (1) dispatches: takes undispatched
//! outbox rows in order and numbers each into the stream of every subscription whose topic and
//! filters match, in one transaction; (2) delivers, per subscription side by side: the
//! handshake first, then undelivered events in order (up to `max_count` per notification),
//! then a heartbeat when the channel has been quiet for its period. A failed delivery moves the
//! subscription to `error` and is retried with growing delays (capped at `max_backoff`) for
//! `retry_for`; then its events are marked given up and the failure is logged — never dropped
//! silently. Delivery is at least once: an endpoint tells repeats by subscription and
//! event number.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::bundle::{self, Delivered, Status};
use super::metrics::NotifyMetrics;
use super::subscription::{self, ChannelKind, Content, Spec};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::{access, Fhir};
use crate::store::notify::{SubEvent, SubState};
use crate::store::SqlStore;

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub poll: Duration,
    /// How long a failing delivery is retried before it is given up (and recorded).
    pub retry_for: Duration,
    pub max_backoff: Duration,
    /// How long a worker holds a message it is sending (a crashed worker's, this long).
    pub claim_lease: Duration,
    /// The FHIR base URL, for `fullUrl`s and links in messages.
    pub base_url: String,
    /// Where patient messages go out.
    pub channels: super::outreach::Channels,
    /// RabbitMQ carries the work when set (`AMQP_URL`); otherwise this process sends.
    pub amqp: Option<super::amqp::AmqpConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            retry_for: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(300),
            claim_lease: Duration::from_secs(60),
            base_url: "http://localhost/fhir".into(),
            channels: Default::default(),
            amqp: None,
        }
    }
}

pub struct Worker {
    pub(super) metrics: Arc<NotifyMetrics>,
    pub(super) sql: Arc<SqlStore>,
    pub(super) fhir: Arc<Fhir>,
    pub(super) http: reqwest::Client,
    pub(super) config: NotifyConfig,
    /// A permit when a pass has dispatched events or planned messages: what sends them (the
    /// message loop here, or the RabbitMQ relay) wakes instead of waiting for its poll.
    pub(super) ready: tokio::sync::Notify,
}

/// A subscription as one pass sees it (its state is read again once claimed).
pub struct Sub {
    pub(super) id: String,
    pub(super) spec: Spec,
}

/// Starts the worker on the current runtime.
pub fn spawn(
    sql: Arc<SqlStore>,
    fhir: Arc<Fhir>,
    config: NotifyConfig,
    metrics: Arc<NotifyMetrics>,
) {
    let worker = Arc::new(Worker {
        metrics,
        sql,
        fhir,
        http: reqwest::Client::builder()
            .user_agent("fhir-scheduler notifications")
            .build()
            .unwrap_or_default(),
        config,
        ready: tokio::sync::Notify::new(),
    });
    // With RabbitMQ, this loop only prepares (dispatch, planning); the relay publishes what is
    // due and the consumers deliver it.
    let brokered = worker.config.amqp.is_some();
    if let Some(amqp) = worker.config.amqp.clone() {
        tokio::spawn(super::amqp::run(worker.clone(), amqp));
    } else {
        // Patient messages go out on a loop of their own, so a slow SMTP server never holds
        // up subscription notifications (nor the other way round). It wakes when a pass has
        // made work (`ready`), or polls.
        let w = worker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(w.config.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = w.ready.notified() => {}
                }
                let sent =
                    super::outreach::send_pass(&w.sql, &w.fhir, &w.http, &w.config, &w.metrics);
                if let Err(e) = access::as_system(sent).await {
                    tracing::warn!(error = %e, "sending messages failed; will retry");
                }
            }
        });
    }
    // A commit of outbox rows wakes the pass at once: in this process directly, in any
    // process through PostgreSQL's NOTIFY; the poll finds what a lost wake-up missed.
    worker.sql.listen_outbox();
    let outbox = worker.sql.outbox_signal();
    tokio::spawn(async move {
        let mut last_prune = std::time::Instant::now();
        let mut tick = tokio::time::interval(worker.config.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = outbox.notified() => {}
            }
            let pass = async {
                let (subs, work) = worker.prepare().await?;
                if work > 0 {
                    worker.ready.notify_one();
                }
                if !brokered {
                    worker.deliver_all(&subs).await;
                }
                anyhow::Ok(())
            };
            if let Err(e) = access::as_system(pass).await {
                tracing::warn!(error = %e, "notification pass failed; will retry");
            }
            // Handled outbox rows are kept a week (for inspection), then forgotten.
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = std::time::Instant::now();
                let before = now_micros() - micros(Duration::from_secs(7 * 86400));
                if let Err(e) = worker.sql.outbox_prune(before, 10_000).await {
                    tracing::warn!(error = %e, "pruning the outbox failed");
                }
            }
        }
    });
}

pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Worker {
    /// Numbers new outbox rows into the matching subscriptions' streams and plans patient
    /// messages; returns the subscriptions and how much work it made (outbox rows dispatched
    /// plus messages planned).
    pub(super) async fn prepare(&self) -> anyhow::Result<(Vec<Sub>, usize)> {
        let subs = self.subscriptions().await?;
        // At most 1,000 rows a pass: under a steady stream of bookings the batches never come
        // back short, and delivery must not wait for dispatch to catch up.
        let mut dispatched = 0;
        for _ in 0..5 {
            let taken = self
                .sql
                .notify_dispatch(200, |p| {
                    let keys: Value = serde_json::from_str(&p.row.keys).unwrap_or(Value::Null);
                    subs.iter()
                        .filter(|s| s.spec.topic.code == p.row.topic)
                        .filter(|s| subscription::matches(&s.spec, &keys))
                        .map(|s| s.id.clone())
                        .collect()
                })
                .await?;
            dispatched += taken;
            if taken < 200 {
                break;
            }
        }
        if let Ok((m, e)) = self.sql.notify_backlog(now_micros()).await {
            self.metrics.backlog_messages.set(m);
            self.metrics.backlog_events.set(e);
        }
        let planned = super::outreach::plan_pass(&self.sql, &self.fhir).await?;
        Ok((subs, dispatched + planned))
    }

    /// Delivers every subscription's due notifications, here, side by side: each stream while
    /// it has more due and its endpoint takes them (up to 20 notifications a pass), so a busy
    /// stream is not held to one notification per poll.
    async fn deliver_all(&self, subs: &[Sub]) {
        futures::future::join_all(subs.iter().map(|s| async move {
            for _ in 0..20 {
                if !self.deliver(s).await || !self.is_due(s, now_micros()).await.unwrap_or(false) {
                    break;
                }
            }
        }))
        .await;
    }

    /// One subscription, read afresh (None when it is gone or unreadable).
    pub(super) async fn subscription(&self, id: &str) -> anyhow::Result<Option<Sub>> {
        let Some(stored) = self.fhir.store.read("Subscription", id).await? else {
            return Ok(None);
        };
        if stored.deleted {
            return Ok(None);
        }
        let body: Value = serde_json::from_str(&stored.body)?;
        Ok(subscription::parse(&body).ok().map(|spec| Sub {
            id: id.to_string(),
            spec,
        }))
    }

    /// Whether a subscription has something to send now: its handshake, events whose attempt
    /// is due, or a heartbeat.
    pub(super) async fn is_due(&self, sub: &Sub, now: i64) -> anyhow::Result<bool> {
        if sub.spec.kind == ChannelKind::Websocket {
            return Ok(false);
        }
        let Some(state) = self.sql.sub_state(&sub.id).await? else {
            return Ok(false);
        };
        if state.status == "off" {
            return Ok(false);
        }
        if let Some(due) = state.handshake_due {
            return Ok(due <= now);
        }
        if let Some(first) = self.sql.sub_undelivered(&sub.id, 1).await?.first() {
            return Ok(first.next_attempt <= now);
        }
        Ok(sub.spec.heartbeat_secs.is_some_and(|p| {
            state.status == "active" && now - state.last_sent >= micros(Duration::from_secs(p))
        }))
    }

    pub(super) async fn subscriptions(&self) -> anyhow::Result<Vec<Sub>> {
        let mut out = Vec::new();
        for state in self.sql.sub_states().await? {
            let Some(stored) = self.fhir.store.read("Subscription", &state.sub_id).await? else {
                continue;
            };
            if stored.deleted {
                continue;
            }
            let body: Value = serde_json::from_str(&stored.body)?;
            match subscription::parse(&body) {
                Ok(spec) => out.push(Sub {
                    id: state.sub_id.clone(),
                    spec,
                }),
                Err(e) => tracing::warn!(subscription = %state.sub_id, error = %e,
                    "stored subscription no longer readable; skipped"),
            }
        }
        Ok(out)
    }

    /// Handshake, then due events, then heartbeat, for one subscription. Errors are recorded
    /// in its state, not returned; true when something was sent.
    pub(super) async fn deliver(&self, sub: &Sub) -> bool {
        if sub.spec.kind == ChannelKind::Websocket {
            return false; // delivered by the socket its client holds (`websocket.rs`)
        }
        let now = now_micros();
        // One worker per subscription at a time (several may run); a crashed one's lease lapses.
        let lease = micros(Duration::from_secs(sub.spec.timeout_secs)) * 2 + 60_000_000;
        match self.sql.sub_claim(&sub.id, now, lease).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "claiming a subscription failed");
                return false;
            }
        }
        // The state as it is now that this worker holds it (another may have moved it on).
        let sent = match self.sql.sub_state(&sub.id).await {
            Ok(Some(state)) if state.status != "off" => self.deliver_claimed(sub, state, now).await,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "reading a subscription's state failed");
                false
            }
        };
        if let Err(e) = self.sql.sub_release(&sub.id).await {
            tracing::warn!(error = %e, "releasing a subscription failed");
        }
        sent
    }

    async fn deliver_claimed(&self, sub: &Sub, mut state: SubState, now: i64) -> bool {
        let mut sent = false;
        if let Some(due) = state.handshake_due {
            if due > now {
                return false;
            }
            let r = self.send(sub, &state, "handshake", &[]).await;
            sent = self
                .settle(sub, &mut state, now, r.as_ref().err(), |s| {
                    s.handshake_due = None;
                })
                .await;
            if state.handshake_due.is_some() || state.status != "active" {
                return sent;
            }
        }
        match self
            .sql
            .sub_undelivered(&sub.id, sub.spec.max_count as i64)
            .await
        {
            Ok(events) if !events.is_empty() => {
                if events[0].next_attempt > now {
                    return sent;
                }
                let r = self.send(sub, &state, "event-notification", &events).await;
                let numbers: Vec<i64> = events.iter().map(|e| e.number).collect();
                match &r {
                    Ok(()) => {
                        for e in &events {
                            self.metrics.count(sub.spec.kind.code(), "delivered");
                            self.metrics.delivered_after(now - e.occurred);
                        }
                        if let Err(e) = self.sql.sub_delivered(&sub.id, &numbers, now).await {
                            tracing::warn!(error = %e, "recording a delivery failed");
                        }
                    }
                    Err(err) => {
                        let attempts = events[0].attempts + 1;
                        let delay = Duration::from_secs(1u64 << attempts.clamp(0, 20))
                            .min(self.config.max_backoff);
                        let give_up = now - events[0].occurred >= micros(self.config.retry_for);
                        self.metrics.count(
                            sub.spec.kind.code(),
                            if give_up { "given_up" } else { "retry" },
                        );
                        if give_up {
                            tracing::error!(subscription = %sub.id, first = numbers[0],
                                last = numbers[numbers.len() - 1], attempts, error = %err,
                                "notification delivery given up after the retry period");
                        }
                        if let Err(e) = self
                            .sql
                            .sub_attempt_failed(
                                &sub.id,
                                &numbers,
                                now + micros(delay),
                                give_up.then_some(now),
                                err,
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "recording a failed delivery failed");
                        }
                    }
                }
                return self
                    .settle(sub, &mut state, now, r.as_ref().err(), |_| {})
                    .await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading undelivered events failed");
                return sent;
            }
        }
        if let Some(period) = sub.spec.heartbeat_secs {
            let quiet = now - state.last_sent >= micros(Duration::from_secs(period));
            if quiet && state.status == "active" {
                let r = self.send(sub, &state, "heartbeat", &[]).await;
                return self
                    .settle(sub, &mut state, now, r.as_ref().err(), |_| {})
                    .await;
            }
        }
        sent
    }

    /// Records the outcome of a send in the subscription's state (and its resource's status
    /// when that changes); true when it succeeded.
    async fn settle(
        &self,
        sub: &Sub,
        state: &mut SubState,
        now: i64,
        error: Option<&String>,
        on_success: impl FnOnce(&mut SubState),
    ) -> bool {
        let before = state.status.clone();
        match error {
            None => {
                on_success(state);
                state.status = "active".into();
                state.error = None;
                state.failing_since = None;
                state.last_sent = now;
            }
            Some(e) => {
                state.status = "error".into();
                state.error = Some(e.clone());
                let since = *state.failing_since.get_or_insert(now);
                if let Some(due) = state.handshake_due.as_mut() {
                    let backoff = Duration::from_secs(((now - since) / 1_000_000).max(1) as u64)
                        .min(self.config.max_backoff);
                    *due = now + micros(backoff);
                    if now - since >= micros(self.config.retry_for) {
                        tracing::error!(subscription = %sub.id, error = %e,
                            "handshake given up after the retry period");
                        state.handshake_due = None;
                    }
                }
                tracing::warn!(subscription = %sub.id, error = %e, "notification delivery failed");
            }
        }
        if let Err(e) = self.sql.sub_state_set(state).await {
            tracing::warn!(error = %e, "recording subscription state failed");
        }
        if before != state.status {
            if let Err(e) = self
                .fhir
                .server_set_status("Subscription", &sub.id, &state.status)
                .await
            {
                tracing::warn!(error = %e, "updating the subscription's status failed");
            }
        }
        error.is_none()
    }

    /// POSTs one notification Bundle; `Err` says why it failed (no bodies: they may hold PHI).
    async fn send(
        &self,
        sub: &Sub,
        state: &SubState,
        kind: &str,
        events: &[SubEvent],
    ) -> Result<(), String> {
        let b = notification(&self.fhir, &self.config.base_url, sub, state, kind, events).await;
        if sub.spec.kind == ChannelKind::Email {
            return super::outreach::mail_notification(
                &self.config.channels,
                &sub.spec.endpoint,
                &format!("FHIR notification: {} ({kind})", sub.spec.topic.code),
                &b.to_string(),
                Duration::from_secs(sub.spec.timeout_secs),
            )
            .await;
        }
        let mut req = self
            .http
            .post(&sub.spec.endpoint)
            .timeout(Duration::from_secs(sub.spec.timeout_secs))
            .header("Content-Type", "application/fhir+json");
        for (k, v) in &sub.spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(b.to_string()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the endpoint answered {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err("the endpoint did not answer in time".into()),
            Err(e) if e.is_connect() => Err("the endpoint could not be reached".into()),
            Err(_) => Err("the request to the endpoint failed".into()),
        }
    }
}

/// The notification Bundle of `kind` (handshake, heartbeat, event-notification) for `events`.
pub(super) async fn notification(
    fhir: &Fhir,
    base_url: &str,
    sub: &Sub,
    state: &SubState,
    kind: &str,
    events: &[SubEvent],
) -> Value {
    let mut delivered = Vec::with_capacity(events.len());
    for e in events {
        let body = if sub.spec.content == Content::FullResource {
            super::ops::focus_body(fhir, &e.focus).await
        } else {
            None
        };
        delivered.push(Delivered {
            number: e.number,
            occurred: format_instant(e.occurred),
            focus: e.focus.clone(),
            body,
        });
    }
    let status = match kind {
        "handshake" => "requested",
        _ => "active",
    };
    let since = events.last().map_or(state.events, |e| e.number);
    let reference = format!("Subscription/{}", sub.id);
    bundle::notification(
        base_url,
        &Status {
            subscription: &reference,
            topic: &sub.spec.topic.url,
            status,
            kind,
            events_since_start: since,
            error: None,
        },
        &delivered,
        sub.spec.content,
        &format_instant(now_micros()),
    )
}
