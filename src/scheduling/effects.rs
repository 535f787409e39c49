//! What an Appointment write implies beyond itself, decided here and carried out by the engine in
//! the same transaction: the status of the Slots it fills, and a timestamped status history.

use serde_json::{json, Value};

use crate::scheduling::status::is_active;

/// Canonical base of this server's extensions (see `profiles/extensions.json`).
pub const EXT_BASE: &str = "https://fhir-scheduler.org/fhir/StructureDefinition/";

pub fn ext_url(name: &str) -> String {
    format!("{EXT_BASE}{name}")
}

/// The Slot status an appointment in `status` implies for the slots it fills.
pub fn slot_status_for(status: &str) -> &'static str {
    match status {
        "pending" => "busy-tentative",
        s if is_active(s) => "busy",
        _ => "free",
    }
}

/// What an appointment write does to one of its Slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotUpdate {
    pub id: String,
    /// The status the slot should now have.
    pub status: &'static str,
    /// The appointment takes the slot with this write (its previous version did not hold it):
    /// the slot must then be free or held (`busy-tentative`, which the database's overlap
    /// check settles); one already `busy` without it, or taken out of use, refuses the write.
    pub taken: bool,
}

/// Statuses of a Slot no appointment may newly take.
pub fn refuses_new_appointments(slot_status: &str) -> bool {
    matches!(
        slot_status,
        "busy" | "busy-unavailable" | "entered-in-error"
    )
}

/// The new appointment's slots follow its status; slots it no longer lists are freed.
pub fn slot_updates(old: Option<&Value>, new: &Value) -> Vec<SlotUpdate> {
    let ids = |v: &Value| -> Vec<String> {
        v["slot"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["reference"].as_str())
            .filter_map(|r| r.strip_prefix("Slot/"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(String::from)
            .collect()
    };
    let status_of = |v: &Value| slot_status_for(v["status"].as_str().unwrap_or_default());
    let new_ids = ids(new);
    let desired = status_of(new);
    // The slots the previous version held.
    let held: Vec<String> = match old {
        Some(o) if status_of(o) != "free" => ids(o),
        _ => Vec::new(),
    };
    let mut out: Vec<SlotUpdate> = new_ids
        .iter()
        .map(|id| SlotUpdate {
            id: id.clone(),
            status: desired,
            taken: desired != "free" && !held.contains(id),
        })
        .collect();
    if let Some(old) = old {
        for id in ids(old) {
            if !new_ids.contains(&id) {
                out.push(SlotUpdate {
                    id,
                    status: "free",
                    taken: false,
                });
            }
        }
    }
    out
}

/// Appends `{status, at}` to the appointment's status history when its status is new or changed,
/// so check-in, arrival, fulfilment and no-show times are kept (wait times, no-show history).
pub fn record_status_change(old: Option<&Value>, mut new: Value, at: &str) -> Value {
    let status = new["status"].as_str().unwrap_or_default().to_string();
    if old.is_some_and(|o| o["status"].as_str() == Some(status.as_str())) || status.is_empty() {
        return new;
    }
    let entry = json!({
        "url": ext_url("status-history"),
        "extension": [
            {"url": "status", "valueCode": status},
            {"url": "at", "valueInstant": at}
        ]
    });
    if let Some(obj) = new.as_object_mut() {
        match obj.get_mut("extension") {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                obj.insert("extension".into(), Value::Array(vec![entry]));
            }
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_appointment() {
        let old = json!({"status": "pending", "slot": [{"reference": "Slot/a"}, {"reference": "Slot/b"}]});
        let new = json!({"status": "booked", "slot": [{"reference": "Slot/a"}]});
        let up = |id: &str, status: &'static str, taken: bool| SlotUpdate {
            id: id.to_string(),
            status,
            taken,
        };
        // Booking a hold keeps its slot: not newly taken.
        assert_eq!(
            slot_updates(Some(&old), &new),
            vec![up("a", "busy", false), up("b", "free", false)]
        );
        let cancelled = json!({"status": "cancelled", "slot": [{"reference": "Slot/a"}]});
        assert_eq!(
            slot_updates(Some(&new), &cancelled),
            vec![up("a", "free", false)]
        );
        // A new booking, a proposal booked, and a move to another slot take their slots.
        assert_eq!(slot_updates(None, &new), vec![up("a", "busy", true)]);
        let proposed = json!({"status": "proposed", "slot": [{"reference": "Slot/a"}]});
        assert_eq!(
            slot_updates(Some(&proposed), &new),
            vec![up("a", "busy", true)]
        );
        let moved = json!({"status": "booked", "slot": [{"reference": "Slot/c"}]});
        assert_eq!(
            slot_updates(Some(&new), &moved),
            vec![up("c", "busy", true), up("a", "free", false)]
        );
        assert_eq!(slot_status_for("pending"), "busy-tentative");
        assert!(refuses_new_appointments("busy-unavailable"));
        assert!(!refuses_new_appointments("busy-tentative"));
    }

    #[test]
    fn status_changes_are_stamped_once() {
        let a = json!({"resourceType": "Appointment", "status": "booked"});
        let a1 = record_status_change(None, a.clone(), "2030-01-01T10:00:00.000Z");
        assert_eq!(a1["extension"][0]["extension"][0]["valueCode"], "booked");
        let same = record_status_change(Some(&a1), a1.clone(), "2030-01-01T10:05:00.000Z");
        assert_eq!(same["extension"].as_array().unwrap().len(), 1);
        let mut arrived = a1.clone();
        arrived["status"] = json!("arrived");
        let a2 = record_status_change(Some(&a1), arrived, "2030-01-01T10:07:00.000Z");
        assert_eq!(a2["extension"].as_array().unwrap().len(), 2);
        assert_eq!(
            a2["extension"][1]["extension"][1]["valueInstant"],
            "2030-01-01T10:07:00.000Z"
        );
    }
}
