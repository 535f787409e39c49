//! What time an appointment holds, and for whom: the rows the database keeps from overlapping
//! (an exclusion constraint on PostgreSQL, a check inside the immediate transaction on SQLite).

use serde_json::Value;

use crate::fhir::datetime::{self, Kind};
use crate::scheduling::status::is_active;

/// One held range: `key` is the reference of what is held (`Practitioner/7`, `Slot/3`), the
/// range `[lo, hi)` in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    pub key: String,
    pub lo: i64,
    pub hi: i64,
}

/// Configurable parts of the rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// May a patient hold two overlapping appointments? (default: no)
    pub allow_patient_overlap: bool,
}

/// Actor types whose time cannot be double-booked. Locations are places many appointments
/// share, so they are not held.
const HELD_ACTORS: [&str; 3] = ["Practitioner", "PractitionerRole", "Device"];

/// The ranges an Appointment holds: none unless it is active; each non-declined practitioner
/// (role, device) and — unless the policy allows it — patient over `[start, end)`, and each Slot
/// it fills, whole.
pub fn occupancy(appointment: &Value, policy: &Policy) -> Vec<Occupancy> {
    let mut out = Vec::new();
    if appointment["resourceType"] != "Appointment"
        || !is_active(appointment["status"].as_str().unwrap_or_default())
    {
        return out;
    }
    let time = match (appointment["start"].as_str(), appointment["end"].as_str()) {
        (Some(s), Some(e)) => match (
            datetime::parse(s, Kind::Instant),
            datetime::parse(e, Kind::Instant),
        ) {
            (Some((s, _)), Some((e, _))) if e.lo > s.lo => Some((s.lo, e.lo)),
            _ => None,
        },
        _ => None,
    };
    if let Some((lo, hi)) = time {
        for p in appointment["participant"].as_array().into_iter().flatten() {
            if p["status"] == "declined" {
                continue;
            }
            let Some(reference) = p["actor"]["reference"].as_str() else {
                continue;
            };
            let Some((rt, id)) = reference.split_once('/') else {
                continue;
            };
            let held =
                HELD_ACTORS.contains(&rt) || (rt == "Patient" && !policy.allow_patient_overlap);
            if held && !id.is_empty() && !id.contains('/') {
                push(
                    &mut out,
                    Occupancy {
                        key: reference.to_string(),
                        lo,
                        hi,
                    },
                );
            }
        }
    }
    for s in appointment["slot"].as_array().into_iter().flatten() {
        if let Some(reference) = s["reference"].as_str() {
            push(
                &mut out,
                Occupancy {
                    key: reference.to_string(),
                    lo: i64::MIN,
                    hi: i64::MAX,
                },
            );
        }
    }
    out
}

fn push(out: &mut Vec<Occupancy>, o: Occupancy) {
    if !out.contains(&o) {
        out.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn appt(status: &str) -> Value {
        json!({"resourceType": "Appointment", "status": status,
               "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z",
               "slot": [{"reference": "Slot/s1"}],
               "participant": [
                   {"actor": {"reference": "Patient/p"}, "status": "accepted"},
                   {"actor": {"reference": "Practitioner/d"}, "status": "accepted"},
                   {"actor": {"reference": "Location/l"}, "status": "accepted"},
                   {"actor": {"reference": "Practitioner/x"}, "status": "declined"}]})
    }

    #[test]
    fn an_active_appointment_holds_its_people_and_slots() {
        let keys: Vec<String> = occupancy(&appt("booked"), &Policy::default())
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["Patient/p", "Practitioner/d", "Slot/s1"]);
        let o = occupancy(&appt("booked"), &Policy::default());
        assert_eq!(o[1].hi - o[1].lo, 30 * 60 * 1_000_000);
    }

    #[test]
    fn inactive_appointments_hold_nothing() {
        for s in [
            "proposed",
            "cancelled",
            "noshow",
            "entered-in-error",
            "waitlist",
        ] {
            assert!(occupancy(&appt(s), &Policy::default()).is_empty(), "{s}");
        }
        assert_eq!(occupancy(&appt("pending"), &Policy::default()).len(), 3);
    }

    #[test]
    fn patients_may_be_allowed_to_overlap() {
        let p = Policy {
            allow_patient_overlap: true,
        };
        assert!(occupancy(&appt("booked"), &p)
            .iter()
            .all(|o| o.key != "Patient/p"));
    }
}
