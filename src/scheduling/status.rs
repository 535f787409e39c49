//! The R4 Appointment status machine (appointment.html §"Appointment Statuses"):
//! proposed → pending → booked → (checked-in | arrived) → fulfilled, with cancelled, noshow,
//! waitlist and entered-in-error on the side. Enforced on every write path alike.

use super::SchedulingError;

/// The statuses a status may move to (staying the same is always allowed).
fn next(from: &str) -> &'static [&'static str] {
    match from {
        "proposed" => &[
            "pending",
            "booked",
            "waitlist",
            "cancelled",
            "entered-in-error",
        ],
        "pending" => &["proposed", "booked", "cancelled", "entered-in-error"],
        "waitlist" => &[
            "proposed",
            "pending",
            "booked",
            "cancelled",
            "entered-in-error",
        ],
        "booked" => &[
            "checked-in",
            "arrived",
            "cancelled",
            "noshow",
            "entered-in-error",
        ],
        "checked-in" => &["arrived", "fulfilled", "entered-in-error"],
        "arrived" => &["checked-in", "fulfilled", "entered-in-error"],
        // fulfilled, cancelled, noshow and entered-in-error are final.
        _ => &[],
    }
}

pub fn transition_allowed(from: &str, to: &str) -> bool {
    from == to || next(from).contains(&to)
}

pub fn check_transition(from: &str, to: &str) -> Result<(), SchedulingError> {
    if transition_allowed(from, to) {
        Ok(())
    } else {
        Err(SchedulingError::Transition {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// Statuses in which an appointment holds its time (a hold is `pending`).
pub fn is_active(status: &str) -> bool {
    matches!(
        status,
        "pending" | "booked" | "arrived" | "checked-in" | "fulfilled"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [&str; 10] = [
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    ];

    /// The full transition table, written out: row = from, columns in the order of `ALL`.
    #[test]
    fn the_whole_table() {
        let table: [(&str, &str); 10] = [
            ("proposed", "YYY..Y.Y.Y"),
            ("pending", "YYY..Y.Y.."),
            ("booked", "..YY.YYYY."),
            ("arrived", "...YY..YY."),
            ("fulfilled", "....Y....."),
            ("cancelled", ".....Y...."),
            ("noshow", "......Y..."),
            ("entered-in-error", ".......Y.."),
            ("checked-in", "...YY..YY."),
            ("waitlist", "YYY..Y.Y.Y"),
        ];
        for (from, row) in table {
            for (to, c) in ALL.iter().zip(row.chars()) {
                assert_eq!(transition_allowed(from, to), c == 'Y', "{from} → {to}");
            }
        }
    }

    #[test]
    fn refusals_name_the_transition() {
        let e = check_transition("cancelled", "booked").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Appointment status cannot change from cancelled to booked"
        );
    }
}
