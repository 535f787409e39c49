//! Scheduling rules, pure: they take resources and return decisions, and do no IO.
//! `status` is the Appointment status machine; `occupancy` says which time ranges an
//! appointment holds, for the database to keep from overlapping; `availability` turns availability
//! templates (PractitionerRole.availableTime and our extensions) into Slots.

pub mod availability;
pub mod effects;
pub mod occupancy;
pub mod status;

use serde_json::Value;

pub use occupancy::{occupancy, Occupancy, Policy};

/// A scheduling rule a write would break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulingError {
    #[error("Appointment status cannot change from {from} to {to}")]
    Transition { from: String, to: String },
}

/// Checks a write of `new` over `old` (None for a create) against the rules of its type.
pub fn check_write(old: Option<&Value>, new: &Value) -> Result<(), SchedulingError> {
    if new["resourceType"] == "Appointment" {
        if let Some(old) = old {
            let from = old["status"].as_str().unwrap_or_default();
            let to = new["status"].as_str().unwrap_or_default();
            status::check_transition(from, to)?;
        }
    }
    Ok(())
}
