//! The websocket channel (Subscriptions Backport IG, as R5 defines it). A client that may read
//! a `websocket` Subscription asks `Subscription/[id]/$get-ws-binding-token` (or
//! `Subscription/$get-ws-binding-token?id=…`) for a token, opens the `websocket-url` it names
//! and sends `bind-with-token: <token>` (the JSON form `{"type": "bind-with-token",
//! "payload": {"token": …}}` is read too). It then gets a handshake Bundle per subscription,
//! every event in order — including those that happened while no client was bound — and
//! heartbeats when quiet. Events are marked delivered once written to the socket; a stream is
//! delivered by one socket at a time (the subscription lease the workers use). The HTTP side
//! (upgrade, frames) is `api::ws`.

use serde_json::{json, Value};

use super::subscription::{self, ChannelKind};
use super::worker::{micros, notification, Sub};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;
use crate::fhir::Fhir;
use crate::store::notify::SubState;
use crate::store::SqlStore;

/// How long a binding token may be used to bind.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `$get-ws-binding-token` for subscriptions `ids`, read as the caller (so the caller's access
/// decides which it may bind to). `ws_url` is where clients connect.
pub async fn issue(fhir: &Fhir, sql: &SqlStore, ws_url: &str, ids: &[String]) -> FhirResult<Value> {
    if ids.is_empty() {
        return Err(FhirError::invalid(
            IssueCode::Required,
            "name the subscriptions: Subscription/[id]/$get-ws-binding-token, or id parameters",
        ));
    }
    for id in ids {
        let stored = fhir.read("Subscription", id).await?;
        let body: Value =
            serde_json::from_str(&stored.body).map_err(|e| FhirError::Internal(e.to_string()))?;
        let kind = subscription::parse(&body).map(|s| s.kind).ok();
        if kind != Some(ChannelKind::Websocket) {
            return Err(FhirError::invalid(
                IssueCode::Processing,
                format!("Subscription/{id} does not use the websocket channel"),
            ));
        }
    }
    let token = crate::auth::server::random_token();
    let expires = now_micros() + micros(TOKEN_TTL);
    sql.ws_binding_add(
        &crate::auth::server::sha256_b64(&token),
        &serde_json::to_string(ids).unwrap_or_default(),
        expires,
        now_micros(),
    )
    .await?;
    let mut parameter = vec![
        json!({"name": "token", "valueString": token}),
        json!({"name": "expiration", "valueDateTime": format_instant(expires)}),
    ];
    parameter
        .extend(ids.iter().map(
            |id| json!({"name": "subscription", "valueString": format!("Subscription/{id}")}),
        ));
    parameter.push(json!({"name": "websocket-url", "valueUrl": ws_url}));
    Ok(json!({"resourceType": "Parameters", "parameter": parameter}))
}

/// The token of a client's bind message, if it is one.
pub fn bind_token(text: &str) -> Option<String> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("bind-with-token") {
        let token = rest.trim_start_matches(':').trim();
        return (!token.is_empty()).then(|| token.to_string());
    }
    let v: Value = serde_json::from_str(t).ok()?;
    (v["type"] == "bind-with-token")
        .then(|| v["payload"]["token"].as_str().map(String::from))
        .flatten()
}

/// The subscriptions a token binds to (`Err` says why not: unknown, expired, gone).
pub async fn bind(fhir: &Fhir, sql: &SqlStore, token: &str) -> Result<Vec<Sub>, String> {
    let hash = crate::auth::server::sha256_b64(token);
    let ids = match sql.ws_binding_get(&hash, now_micros()).await {
        Ok(Some(ids)) => ids,
        Ok(None) => return Err("unknown or expired binding token".into()),
        Err(_) => return Err("the binding could not be checked; try again".into()),
    };
    let ids: Vec<String> = serde_json::from_str(&ids).unwrap_or_default();
    let mut subs = Vec::new();
    for id in ids {
        let body = match fhir.store.read("Subscription", &id).await {
            Ok(Some(s)) if !s.deleted => s.body,
            _ => return Err(format!("Subscription/{id} is gone")),
        };
        let spec = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| subscription::parse(&b).ok())
            .filter(|s| s.kind == ChannelKind::Websocket)
            .ok_or_else(|| format!("Subscription/{id} no longer uses the websocket channel"))?;
        subs.push(Sub { id, spec });
    }
    Ok(subs)
}

/// The handshake for a newly bound subscription; the subscription becomes `active`.
pub async fn handshake(
    fhir: &Fhir,
    sql: &SqlStore,
    base: &str,
    sub: &Sub,
) -> anyhow::Result<String> {
    let Some(mut state) = sql.sub_state(&sub.id).await? else {
        anyhow::bail!("subscription without delivery state");
    };
    let b = notification(fhir, base, sub, &state, "handshake", &[]).await;
    if state.status != "active" {
        state.status = "active".into();
        state.handshake_due = None;
        state.error = None;
        state.failing_since = None;
        sql.sub_state_set(&state).await?;
        fhir.server_set_status("Subscription", &sub.id, "active")
            .await?;
    }
    Ok(b.to_string())
}

/// What a turn has for the socket: a notification Bundle (as text) while this socket holds
/// the subscription's lease; hand it back to [`done`] once written (or not).
pub struct Outgoing {
    pub text: String,
    numbers: Vec<i64>,
    state: SubState,
    at: i64,
}

/// One turn for a bound subscription: its undelivered events (up to its max count) or, when
/// quiet for its heartbeat period, a heartbeat. None: nothing to send, or another socket
/// delivers this stream now.
pub async fn turn(
    fhir: &Fhir,
    sql: &SqlStore,
    base: &str,
    sub: &Sub,
) -> anyhow::Result<Option<Outgoing>> {
    let now = now_micros();
    if !sql.sub_claim(&sub.id, now, 60_000_000).await? {
        return Ok(None);
    }
    let next = async {
        let Some(state) = sql.sub_state(&sub.id).await? else {
            return Ok(None);
        };
        let events = sql
            .sub_undelivered(&sub.id, sub.spec.max_count as i64)
            .await?;
        let kind = if !events.is_empty() {
            "event-notification"
        } else if sub
            .spec
            .heartbeat_secs
            .is_some_and(|p| now - state.last_sent >= micros(std::time::Duration::from_secs(p)))
        {
            "heartbeat"
        } else {
            return Ok(None);
        };
        let text = notification(fhir, base, sub, &state, kind, &events)
            .await
            .to_string();
        anyhow::Ok(Some(Outgoing {
            text,
            numbers: events.iter().map(|e| e.number).collect(),
            state,
            at: now,
        }))
    }
    .await;
    if !matches!(next, Ok(Some(_))) {
        sql.sub_release(&sub.id).await?;
    }
    next
}

/// Records what [`turn`] gave once the socket took it (`sent`), and releases the stream.
pub async fn done(sql: &SqlStore, sub: &Sub, out: Outgoing, sent: bool) -> anyhow::Result<()> {
    if sent {
        sql.sub_delivered(&sub.id, &out.numbers, out.at).await?;
        let mut state = out.state;
        state.last_sent = out.at;
        sql.sub_state_set(&state).await?;
    }
    sql.sub_release(&sub.id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bind_token;

    #[test]
    fn reads_both_bind_forms() {
        assert_eq!(bind_token("bind-with-token: abc").as_deref(), Some("abc"));
        assert_eq!(bind_token("bind-with-token abc\n").as_deref(), Some("abc"));
        assert_eq!(
            bind_token(r#"{"type": "bind-with-token", "payload": {"token": "abc"}}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(bind_token("bind-with-token:"), None);
        assert_eq!(bind_token(r#"{"type": "ping"}"#), None);
        assert_eq!(bind_token("hello"), None);
    }
}
