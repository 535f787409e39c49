//! Notification Bundles (type `history`, SubscriptionStatus Parameters first) and the
//! SubscriptionStatus of `$status` (pure).

use serde_json::{json, Value};

use super::subscription::Content;
use super::{NOTIFICATION_PROFILE, STATUS_PROFILE};

/// One event as delivered: its number in the subscription, when it happened, and the focus
/// (`Type/id/_history/v`) with the focus body when the payload is full-resource.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub number: i64,
    pub occurred: String,
    pub focus: String,
    pub body: Option<Value>,
}

/// What the status part says.
pub struct Status<'a> {
    pub subscription: &'a str,
    pub topic: &'a str,
    pub status: &'a str,
    /// handshake | heartbeat | event-notification | query-status | query-event
    pub kind: &'a str,
    pub events_since_start: i64,
    pub error: Option<&'a str>,
}

/// The SubscriptionStatus Parameters (backport-subscription-status-r4).
pub fn status_parameters(s: &Status, events: &[Delivered], content: Content) -> Value {
    let mut params =
        vec![json!({"name": "subscription", "valueReference": {"reference": s.subscription}})];
    if content != Content::Empty {
        params.push(json!({"name": "topic", "valueCanonical": s.topic}));
    }
    params.push(json!({"name": "status", "valueCode": s.status}));
    params.push(json!({"name": "type", "valueCode": s.kind}));
    params.push(json!({"name": "events-since-subscription-start",
                       "valueString": s.events_since_start.to_string()}));
    for e in events {
        let mut part = vec![
            json!({"name": "event-number", "valueString": e.number.to_string()}),
            json!({"name": "timestamp", "valueInstant": e.occurred}),
        ];
        if content != Content::Empty {
            part.push(json!({"name": "focus", "valueReference": {"reference": e.focus}}));
        }
        params.push(json!({"name": "notification-event", "part": part}));
    }
    if let Some(err) = s.error {
        params.push(json!({"name": "error", "valueCodeableConcept": {"text": err}}));
    }
    json!({"resourceType": "Parameters", "id": uuid::Uuid::new_v4().to_string(),
           "meta": {"profile": [STATUS_PROFILE]}, "parameter": params})
}

/// A notification Bundle: the status first, then (id-only / full-resource) an entry per focus.
pub fn notification(
    base: &str,
    s: &Status,
    events: &[Delivered],
    content: Content,
    now: &str,
) -> Value {
    let status = status_parameters(s, events, content);
    let status_id = status["id"].as_str().unwrap_or_default().to_string();
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{status_id}"),
        "resource": status,
        "request": {"method": "GET", "url": format!("{}/$status", s.subscription)},
        "response": {"status": "200"}
    })];
    if content != Content::Empty {
        for e in events {
            let current = e.focus.split("/_history/").next().unwrap_or(&e.focus);
            let mut entry = json!({
                "fullUrl": format!("{base}/{current}"),
                "request": {"method": "PUT", "url": current},
                "response": {"status": "200"}
            });
            if content == Content::FullResource {
                if let Some(b) = &e.body {
                    entry["resource"] = b.clone();
                }
            }
            entries.push(entry);
        }
    }
    json!({"resourceType": "Bundle", "id": uuid::Uuid::new_v4().to_string(),
           "meta": {"profile": [NOTIFICATION_PROFILE]},
           "type": "history", "timestamp": now, "entry": entries})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(kind: &str) -> Status<'_> {
        Status {
            subscription: "Subscription/s1",
            topic: "https://fhir-scheduler.org/fhir/SubscriptionTopic/appointment-booked",
            status: "active",
            kind,
            events_since_start: 2,
            error: None,
        }
    }

    #[test]
    fn status_comes_first_and_focus_follows() {
        let ev = [Delivered {
            number: 2,
            occurred: "2030-01-01T09:00:00Z".into(),
            focus: "Appointment/a1/_history/3".into(),
            body: Some(json!({"resourceType": "Appointment", "id": "a1"})),
        }];
        let b = notification(
            "http://x/fhir",
            &status("event-notification"),
            &ev,
            Content::FullResource,
            "2030-01-01T09:00:01Z",
        );
        assert_eq!(b["type"], "history");
        let p = &b["entry"][0]["resource"];
        assert_eq!(p["resourceType"], "Parameters");
        assert_eq!(p["parameter"][4]["valueString"], "2");
        assert_eq!(
            p["parameter"][5]["part"][2]["valueReference"]["reference"],
            "Appointment/a1/_history/3"
        );
        assert_eq!(b["entry"][1]["fullUrl"], "http://x/fhir/Appointment/a1");
        assert_eq!(b["entry"][1]["resource"]["id"], "a1");
        let empty = notification(
            "http://x/fhir",
            &status("event-notification"),
            &ev,
            Content::Empty,
            "2030-01-01T09:00:01Z",
        );
        assert_eq!(empty["entry"].as_array().unwrap().len(), 1);
        let id_only = notification(
            "http://x/fhir",
            &status("event-notification"),
            &ev,
            Content::IdOnly,
            "2030-01-01T09:00:01Z",
        );
        assert!(id_only["entry"][1].get("resource").is_none());
    }
}
