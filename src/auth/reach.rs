//! What a practitioner's access rules refer to — their PractitionerRoles, their Schedules, the
//! Patients booked with them — read from the store as the server itself. The policy that uses
//! it is pure; this is its only IO.

use std::collections::HashSet;

use serde_json::Value;

use crate::auth::policy::{Principal, Reach, Role};
use crate::fhir::access;
use crate::fhir::error::FhirResult;
use crate::fhir::Fhir;

/// Most appointments read to find a practitioner's patients.
const MAX_APPOINTMENTS: usize = 5000;

pub async fn load(fhir: &Fhir, p: &Principal) -> FhirResult<Reach> {
    if p.role != Role::Practitioner {
        return Ok(Reach::default());
    }
    let Some(me) = p
        .fhir_user
        .as_deref()
        .filter(|f| f.starts_with("Practitioner/"))
    else {
        return Ok(Reach::default());
    };
    access::as_system(load_practitioner(fhir, me)).await
}

async fn load_practitioner(fhir: &Fhir, me: &str) -> FhirResult<Reach> {
    let mut reach = Reach::default();
    reach.actors.insert(me.to_string());
    let q = |k: &str, v: String| vec![(k.to_string(), v)];
    for row in fhir
        .find_rows("PractitionerRole", &q("practitioner", me.to_string()), 500)
        .await?
    {
        reach.actors.insert(format!("PractitionerRole/{}", row.id));
    }
    let actors = {
        let mut a: Vec<&String> = reach.actors.iter().collect();
        a.sort();
        a.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    };
    for row in fhir
        .find_rows("Schedule", &q("actor", actors.clone()), 5000)
        .await?
    {
        reach.schedules.insert(row.id);
    }
    let mut patients = HashSet::new();
    for row in fhir
        .find_rows("Appointment", &q("actor", actors), MAX_APPOINTMENTS)
        .await?
    {
        let Ok(body) = serde_json::from_str::<Value>(&row.body) else {
            continue;
        };
        for part in body["participant"].as_array().into_iter().flatten() {
            if let Some(id) = part["actor"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
            {
                patients.insert(id.to_string());
            }
        }
    }
    reach.patients = patients;
    Ok(reach)
}
