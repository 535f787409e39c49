//! Invariants of the R4 resources we serve that neither fhirbolt nor the structural pass check,
//! plus the server's own rules (an `end` must come after its `start`). Pure functions over JSON.
//! Each issue names the invariant key (app-3 …) and the element at fault.

use serde_json::Value;

use crate::fhir::datetime::{self, Kind};
use crate::fhir::outcome::{Issue, IssueCode};

/// All invariant issues of a (structurally valid) resource.
pub fn check(resource: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    let rt = resource["resourceType"].as_str().unwrap_or_default();
    match rt {
        "Appointment" => appointment(resource, &mut issues),
        "AppointmentResponse"
            if resource.get("participantType").is_none() && resource.get("actor").is_none() =>
        {
            issues.push(invariant(
                "apr-1",
                "AppointmentResponse",
                "Either the participantType or actor must be specified",
            ));
        }
        "Slot" => start_before_end(resource, "Slot", &mut issues),
        "Patient" => {
            for (i, c) in arr(&resource["contact"]).iter().enumerate() {
                if ["name", "telecom", "address", "organization"]
                    .iter()
                    .all(|k| c.get(*k).is_none())
                {
                    issues.push(invariant(
                        "pat-1",
                        &format!("Patient.contact[{i}]"),
                        "SHALL at least contain a contact's details or a reference to an organization",
                    ));
                }
            }
        }
        "Organization"
            if resource.get("identifier").is_none() && resource.get("name").is_none() =>
        {
            issues.push(invariant(
                "org-1",
                "Organization",
                "The organization SHALL at least have a name or an identifier",
            ));
        }
        _ => {}
    }
    issues
}

fn appointment(a: &Value, issues: &mut Vec<Issue>) {
    let has_start = a.get("start").is_some();
    let has_end = a.get("end").is_some();
    let status = a["status"].as_str().unwrap_or_default();
    if has_start != has_end {
        issues.push(invariant(
            "app-2",
            "Appointment",
            "Either start and end are specified, or neither",
        ));
    }
    let may_lack_times = matches!(status, "proposed" | "cancelled" | "waitlist");
    if !(may_lack_times || has_start && has_end) {
        issues.push(invariant(
            "app-3",
            "Appointment",
            "Only proposed or cancelled appointments can be missing start/end dates",
        ));
    }
    // R4 writes this invariant with the string 'no-show', which is not a code of
    // AppointmentStatus ('noshow'): taken literally, only cancelled appointments may carry a
    // cancelationReason. We apply it as written so that what we store passes R4 validators.
    if a.get("cancelationReason").is_some() && !matches!(status, "cancelled" | "no-show") {
        issues.push(invariant(
            "app-4",
            "Appointment.cancelationReason",
            "Cancelation reason is only used for appointments that have been cancelled, or no-show",
        ));
    }
    for (i, p) in arr(&a["participant"]).iter().enumerate() {
        if p.get("type").is_none() && p.get("actor").is_none() {
            issues.push(invariant(
                "app-1",
                &format!("Appointment.participant[{i}]"),
                "Either the type or actor on the participant SHALL be specified",
            ));
        }
    }
    start_before_end(a, "Appointment", issues);
}

/// Our rule for Slot and Appointment: `end` strictly after `start`.
fn start_before_end(r: &Value, rt: &str, issues: &mut Vec<Issue>) {
    let (Some(s), Some(e)) = (r["start"].as_str(), r["end"].as_str()) else {
        return;
    };
    let (Some((s, _)), Some((e, _))) = (
        datetime::parse(s, Kind::Instant),
        datetime::parse(e, Kind::Instant),
    ) else {
        return; // a bad instant is reported by the structural pass
    };
    if e.lo <= s.lo {
        issues.push(
            Issue::error(
                IssueCode::Invariant,
                format!("{rt}.end must be after {rt}.start"),
            )
            .at(format!("{rt}.end")),
        );
    }
}

fn invariant(key: &str, expression: &str, human: &str) -> Issue {
    Issue::error(IssueCode::Invariant, format!("{key}: {human}")).at(expression)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(v: Value) -> Vec<String> {
        check(&v)
            .into_iter()
            .map(|i| {
                i.diagnostics
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn appointment_invariants() {
        let ok = json!({"resourceType":"Appointment","status":"booked",
            "start":"2030-01-01T10:00:00Z","end":"2030-01-01T10:30:00Z",
            "participant":[{"actor":{"reference":"Patient/1"},"status":"accepted"}]});
        assert!(keys(ok).is_empty());
        let no_times = json!({"resourceType":"Appointment","status":"booked",
            "participant":[{"status":"accepted"}]});
        assert_eq!(keys(no_times), vec!["app-3", "app-1"]);
        let half = json!({"resourceType":"Appointment","status":"proposed",
            "start":"2030-01-01T10:00:00Z","participant":[{"actor":{"reference":"Patient/1"},"status":"accepted"}]});
        assert_eq!(keys(half), vec!["app-2"]);
        let reason = json!({"resourceType":"Appointment","status":"noshow",
            "start":"2030-01-01T10:00:00Z","end":"2030-01-01T10:30:00Z",
            "cancelationReason":{"text":"x"},
            "participant":[{"actor":{"reference":"Patient/1"},"status":"accepted"}]});
        assert_eq!(keys(reason), vec!["app-4"]);
        let backwards = json!({"resourceType":"Appointment","status":"booked",
            "start":"2030-01-01T10:30:00Z","end":"2030-01-01T10:00:00Z",
            "participant":[{"actor":{"reference":"Patient/1"},"status":"accepted"}]});
        assert_eq!(
            check(&backwards)[0].expression.as_deref(),
            Some("Appointment.end")
        );
    }

    #[test]
    fn slot_end_after_start() {
        let s = json!({"resourceType":"Slot","schedule":{"reference":"Schedule/1"},"status":"free",
            "start":"2030-01-01T10:00:00Z","end":"2030-01-01T10:00:00Z"});
        assert_eq!(check(&s).len(), 1);
    }
}
