//! `Subscription/[id]/$status` and `$events` (Subscriptions Backport IG).

use serde_json::{json, Value};

use super::bundle::{self, Delivered, Status};
use super::subscription::{self, Content};
use crate::booking::params::OpParams;
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;
use crate::fhir::Fhir;
use crate::store::notify::SubState;
use crate::store::SqlStore;

/// Reads the subscription as the caller (access rules apply) and its delivery state.
async fn load(fhir: &Fhir, sql: &SqlStore, id: &str) -> FhirResult<(subscription::Spec, SubState)> {
    let stored = fhir.read("Subscription", id).await?;
    let body: Value =
        serde_json::from_str(&stored.body).map_err(|e| FhirError::Internal(e.to_string()))?;
    let spec = subscription::parse(&body)
        .map_err(|m| FhirError::Internal(format!("stored subscription unreadable: {m}")))?;
    let state = sql
        .sub_state(id)
        .await?
        .ok_or_else(|| FhirError::Internal("subscription without delivery state".into()))?;
    Ok((spec, state))
}

pub async fn status(fhir: &Fhir, sql: &SqlStore, base: &str, id: &str) -> FhirResult<Value> {
    let (spec, state) = load(fhir, sql, id).await?;
    let reference = format!("Subscription/{id}");
    let params = bundle::status_parameters(
        &Status {
            subscription: &reference,
            topic: &spec.topic.url,
            status: &state.status,
            kind: "query-status",
            events_since_start: state.events,
            error: state.error.as_deref(),
        },
        &[],
        Content::IdOnly,
    );
    Ok(
        json!({"resourceType": "Bundle", "type": "searchset", "total": 1,
        "entry": [{"fullUrl": format!("{base}/Subscription/{id}/$status"),
                   "resource": params, "search": {"mode": "match"}}]}),
    )
}

pub async fn events(
    fhir: &Fhir,
    sql: &SqlStore,
    base: &str,
    id: &str,
    p: &OpParams,
) -> FhirResult<Value> {
    let (spec, state) = load(fhir, sql, id).await?;
    let number = |name: &str| -> FhirResult<Option<i64>> {
        p.text(name)
            .map(|t| {
                t.parse::<i64>().map_err(|_| {
                    FhirError::invalid(IssueCode::Value, format!("{name} must be an event number"))
                })
            })
            .transpose()
    };
    let until = number("eventsUntilNumber")?.unwrap_or(state.events);
    let since = number("eventsSinceNumber")?.unwrap_or((until - 19).max(1));
    let content = match p.text("content") {
        None => spec.content,
        Some("empty") => Content::Empty,
        Some("id-only") => Content::IdOnly,
        Some("full-resource") => Content::FullResource,
        Some(other) => {
            return Err(FhirError::invalid(
                IssueCode::Value,
                format!("content '{other}' is not empty, id-only or full-resource"),
            ))
        }
    };
    let mut delivered = Vec::new();
    for e in sql.sub_events(id, since, until).await? {
        let body = if content == Content::FullResource {
            focus_body(fhir, &e.focus).await
        } else {
            None
        };
        delivered.push(Delivered {
            number: e.number,
            occurred: format_instant(e.occurred),
            focus: e.focus,
            body,
        });
    }
    let reference = format!("Subscription/{id}");
    Ok(bundle::notification(
        base,
        &Status {
            subscription: &reference,
            topic: &spec.topic.url,
            status: &state.status,
            kind: "query-event",
            events_since_start: state.events,
            error: state.error.as_deref(),
        },
        &delivered,
        content,
        &format_instant(now_micros()),
    ))
}

/// The focus version's body, read as the caller (so access rules apply to the payload too).
pub async fn focus_body(fhir: &Fhir, focus: &str) -> Option<Value> {
    let (rt, id, v) = super::parse_focus(focus)?;
    let stored = fhir.vread(rt, id, &v.to_string()).await.ok()?;
    serde_json::from_str(&stored.body).ok()
}
