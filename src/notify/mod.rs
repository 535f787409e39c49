//! Notifications: topic-based Subscriptions (FHIR R4 Subscriptions Backport IG) delivered from
//! a transactional outbox.
//!
//! - [`topics`] — the topics this server offers (`profiles/topics.json`) and their filters.
//! - [`events`] — what a write means for the topics (pure): the engine turns it into outbox rows
//!   in the same transaction as the write, so an event exists exactly when its change does.
//! - [`subscription`] — reading and checking a backport Subscription (pure).
//! - [`bundle`] — notification Bundles and SubscriptionStatus Parameters (pure).
//! - [`worker`] — the in-process worker: matches outbox rows to subscriptions (numbering each
//!   subscription's events), then delivers them over rest-hook with retries and backoff, in
//!   order per subscription; handshakes and heartbeats.
//! - [`websocket`] — the websocket channel: binding tokens, handshake, events and heartbeats
//!   over a socket the client holds (its HTTP side is `api::ws`).
//! - [`amqp`] — the same work through RabbitMQ when `AMQP_URL` is set: a relay publishes due
//!   work as jobs, consumers (in any number of worker processes) do it.

pub mod amqp;
pub mod bundle;
pub mod events;
pub mod messages;
pub mod metrics;
pub mod ops;
pub mod outreach;
pub mod reminders;
pub mod subscription;
pub mod topics;
pub mod websocket;
pub mod worker;

/// `Type/id/_history/version` (an outbox focus) → its parts.
pub fn parse_focus(focus: &str) -> Option<(&str, &str, i64)> {
    let mut parts = focus.split('/');
    let (rt, id) = (parts.next()?, parts.next()?);
    let version = match (parts.next()?, parts.next()?) {
        ("_history", v) => v.parse().ok()?,
        _ => return None,
    };
    Some((rt, id, version))
}

/// Canonical URLs of the backport IG's extensions.
pub const FILTER_CRITERIA: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
pub const PAYLOAD_CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
pub const HEARTBEAT_PERIOD: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
pub const TIMEOUT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout";
pub const MAX_COUNT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count";
pub const STATUS_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";
pub const NOTIFICATION_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";
