//! What a write means for the topics: decided here (pure), written to the outbox by the engine
//! in the write's own transaction.

use serde_json::{json, Value};

/// One event: its topic code, and the filter keys it can be matched on (e.g. `patient` →
/// `["Patient/1"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: &'static str,
    pub keys: Value,
}

fn refs_of(appt: &Value, prefix: &str) -> Vec<String> {
    appt["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["actor"]["reference"].as_str())
        .filter(|r| r.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn slots(appt: &Value) -> Vec<&str> {
    appt["slot"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["reference"].as_str())
        .collect()
}

fn status(v: Option<&Value>) -> &str {
    v.and_then(|v| v["status"].as_str()).unwrap_or_default()
}

/// The events of an Appointment write (`old`: the version replaced, if any).
pub fn appointment(old: Option<&Value>, new: &Value) -> Vec<Event> {
    let (before, after) = (status(old), status(Some(new)));
    let topic = match (before, after) {
        (b, "booked") if b != "booked" => Some("appointment-booked"),
        ("booked", "booked") => {
            let old = old.unwrap_or(&Value::Null);
            let moved = old["start"] != new["start"]
                || old["end"] != new["end"]
                || slots(old) != slots(new);
            moved.then_some("appointment-rescheduled")
        }
        (b, "cancelled") if b != "cancelled" => Some("appointment-cancelled"),
        (b, "noshow") if b != "noshow" => Some("appointment-noshow"),
        _ => None,
    };
    topic
        .map(|topic| Event {
            topic,
            keys: json!({
                "patient": refs_of(new, "Patient/"),
                "practitioner": refs_of(new, "Practitioner/"),
                "location": refs_of(new, "Location/"),
            }),
        })
        .into_iter()
        .collect()
}

/// The events of a Slot write: availability changes (to or from `free`). A new slot is not an
/// event (slot generation would flood every subscriber); a slot deleted while free is.
pub fn slot(old: Option<&Value>, new: Option<&Value>) -> Vec<Event> {
    let was_free = status(old) == "free";
    let is_free = status(new) == "free";
    if old.is_none() || was_free == is_free {
        return Vec::new();
    }
    let schedule = new
        .or(old)
        .and_then(|s| s["schedule"]["reference"].as_str())
        .map(String::from);
    vec![Event {
        topic: "slot-availability",
        keys: json!({ "schedule": schedule.into_iter().collect::<Vec<_>>() }),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appt(status: &str, start: &str) -> Value {
        json!({"resourceType": "Appointment", "status": status, "start": start,
               "slot": [{"reference": "Slot/s1"}],
               "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                               {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"}]})
    }

    fn topics(ev: Vec<Event>) -> Vec<&'static str> {
        ev.into_iter().map(|e| e.topic).collect()
    }

    #[test]
    fn appointment_transitions_map_to_topics() {
        let t = "2030-01-01T09:00:00Z";
        assert_eq!(
            topics(appointment(None, &appt("booked", t))),
            ["appointment-booked"]
        );
        assert_eq!(
            topics(appointment(Some(&appt("pending", t)), &appt("booked", t))),
            ["appointment-booked"]
        );
        assert!(appointment(Some(&appt("booked", t)), &appt("booked", t)).is_empty());
        assert_eq!(
            topics(appointment(
                Some(&appt("booked", t)),
                &appt("booked", "2030-01-02T09:00:00Z")
            )),
            ["appointment-rescheduled"]
        );
        assert_eq!(
            topics(appointment(Some(&appt("booked", t)), &appt("cancelled", t))),
            ["appointment-cancelled"]
        );
        assert_eq!(
            topics(appointment(Some(&appt("booked", t)), &appt("noshow", t))),
            ["appointment-noshow"]
        );
        assert!(appointment(None, &appt("proposed", t)).is_empty());
        assert!(appointment(Some(&appt("booked", t)), &appt("fulfilled", t)).is_empty());
        let e = &appointment(None, &appt("booked", t))[0];
        assert_eq!(e.keys["patient"], json!(["Patient/p1"]));
        assert_eq!(e.keys["practitioner"], json!(["Practitioner/d1"]));
    }

    #[test]
    fn slot_availability_changes_only() {
        let s = |st: &str| json!({"status": st, "schedule": {"reference": "Schedule/x"}});
        assert!(slot(None, Some(&s("free"))).is_empty());
        assert!(slot(Some(&s("busy")), Some(&s("busy-tentative"))).is_empty());
        let e = slot(Some(&s("free")), Some(&s("busy")));
        assert_eq!(e[0].topic, "slot-availability");
        assert_eq!(e[0].keys["schedule"], json!(["Schedule/x"]));
        assert_eq!(slot(Some(&s("busy")), Some(&s("free"))).len(), 1);
        assert_eq!(slot(Some(&s("free")), None).len(), 1);
    }
}
