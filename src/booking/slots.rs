//! `Schedule/{id}/$generate-slots` and `Schedule/{id}/$conflicts`: the schedule's availability
//! template (`scheduling::availability`, pure) applied to the store.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::booking::params::OpParams;
use crate::fhir::datetime::{self, format_instant, Kind};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;
use crate::fhir::Fhir;
use crate::scheduling::availability::{self, Template, SLOT_KEY_SYSTEM};
use crate::scheduling::status::is_active;

/// Most slots one request may create or look at.
const MAX_SLOTS: usize = 20_000;

fn body(s: &crate::store::Stored) -> Value {
    serde_json::from_str(&s.body).unwrap_or(Value::Null)
}

/// The schedule, its roles and locations, and the template they make.
async fn load_template(fhir: &Fhir, id: &str) -> FhirResult<Template> {
    let schedule = fhir.read("Schedule", id).await?;
    let schedule = body(&schedule);
    let mut roles = Vec::new();
    let mut location_refs: BTreeSet<String> = BTreeSet::new();
    for a in schedule["actor"].as_array().into_iter().flatten() {
        let Some(r) = a["reference"].as_str() else {
            continue;
        };
        match r.split_once('/') {
            Some(("PractitionerRole", rid)) => {
                if let Ok(s) = fhir.read("PractitionerRole", rid).await {
                    roles.push(body(&s));
                }
            }
            Some(("Practitioner", _)) => {
                let rows = fhir
                    .find_rows(
                        "PractitionerRole",
                        &[("practitioner".into(), r.to_string())],
                        100,
                    )
                    .await?;
                roles.extend(
                    rows.iter()
                        .map(|row| serde_json::from_str(&row.body).unwrap_or(Value::Null)),
                );
            }
            Some(("Location", _)) => {
                location_refs.insert(r.to_string());
            }
            _ => {}
        }
    }
    for role in &roles {
        for l in role["location"].as_array().into_iter().flatten() {
            if let Some(r) = l["reference"].as_str() {
                location_refs.insert(r.to_string());
            }
        }
    }
    let mut locations = Vec::new();
    for r in location_refs {
        if let Some(lid) = r.strip_prefix("Location/") {
            if let Ok(s) = fhir.read("Location", lid).await {
                locations.push(body(&s));
            }
        }
    }
    availability::template(&schedule, &roles, &locations).map_err(|m| {
        FhirError::Unprocessable(vec![crate::fhir::outcome::Issue::error(
            IssueCode::Invalid,
            m,
        )])
    })
}

fn window(p: &OpParams) -> FhirResult<(i64, i64)> {
    let get = |name: &str| -> FhirResult<i64> {
        let v = p.text(name).ok_or_else(|| {
            FhirError::invalid_at(IssueCode::Required, name, format!("{name} is required"))
        })?;
        datetime::parse(v, Kind::DateTime)
            .map(|(r, _)| r.lo)
            .ok_or_else(|| {
                FhirError::invalid_at(
                    IssueCode::Value,
                    name,
                    format!("{name} must be a date or dateTime"),
                )
            })
    };
    let (from, to) = (get("start")?, get("end")?);
    if to <= from {
        return Err(FhirError::invalid_at(
            IssueCode::Value,
            "end",
            "end must be after start",
        ));
    }
    Ok((from, to))
}

/// Materialises free slots in `[start, end)`; idempotent. Free future slots the template no
/// longer wants are deleted; booked, held or started ones are never touched.
pub async fn generate_slots(fhir: &Fhir, id: &str, p: &OpParams) -> FhirResult<Value> {
    let (from, to) = window(p)?;
    let t = load_template(fhir, id).await?;
    let wanted = availability::generate(&t, from, to);
    if wanted.len() > MAX_SLOTS {
        return Err(FhirError::TooCostly(format!(
            "{} slots in that window; ask for at most {MAX_SLOTS} at once",
            wanted.len()
        )));
    }
    let schedule_ref = format!("Schedule/{id}");
    let existing: Vec<Value> = fhir
        .find_rows(
            "Slot",
            &[
                ("schedule".into(), schedule_ref.clone()),
                ("start".into(), format!("ge{}", format_instant(from))),
                ("start".into(), format!("lt{}", format_instant(to))),
            ],
            MAX_SLOTS,
        )
        .await?
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
        .collect();
    let plan = availability::regenerate(&existing, &wanted, datetime::now_micros());
    let mut tx = fhir.store.begin().await?;
    let mut created = 0;
    for spec in &plan.create {
        let slot = availability::slot_resource(&schedule_ref, spec, &t.specialty);
        let key = availability::slot_key(&schedule_ref, spec);
        let cond = form_urlencoded::Serializer::new(String::new())
            .append_pair("identifier", &format!("{SLOT_KEY_SYSTEM}|{key}"))
            .finish();
        fhir.validate("Slot", &slot)?;
        if fhir
            .create_in(tx.as_mut(), "Slot", slot, None, Some(&cond))
            .await?
            .created
        {
            created += 1;
        }
    }
    for sid in &plan.delete {
        fhir.delete_in(tx.as_mut(), "Slot", sid).await?;
    }
    tx.commit().await?;
    Ok(json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "created", "valueInteger": created},
            {"name": "deleted", "valueInteger": plan.delete.len()},
            {"name": "wanted", "valueInteger": wanted.len()}
        ]
    }))
}

/// Active appointments of the schedule's actors that its `notAvailable` periods (or the lack of
/// availability) now conflict with, as a searchset Bundle.
pub async fn conflicts(fhir: &Fhir, base: &str, id: &str) -> FhirResult<Value> {
    let t = load_template(fhir, id).await?;
    let schedule = body(&fhir.read("Schedule", id).await?);
    let actors: Vec<String> = schedule["actor"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["reference"].as_str())
        .filter(|r| r.starts_with("Practitioner"))
        .map(String::from)
        .collect();
    let mut booked = Vec::new();
    if !actors.is_empty() {
        let rows = fhir
            .find_rows(
                "Appointment",
                &[
                    ("actor".into(), actors.join(",")),
                    (
                        "date".into(),
                        format!("ge{}", format_instant(datetime::now_micros())),
                    ),
                ],
                MAX_SLOTS,
            )
            .await?;
        for r in rows {
            let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if is_active(v["status"].as_str().unwrap_or_default()) {
                booked.push(v);
            }
        }
    }
    let ids = availability::conflicts(&booked, &t);
    let entries: Vec<Value> = booked
        .into_iter()
        .filter(|a| a["id"].as_str().is_some_and(|i| ids.iter().any(|x| x == i)))
        .map(|a| {
            json!({"fullUrl": format!("{base}/Appointment/{}", a["id"].as_str().unwrap_or_default()),
                   "resource": a, "search": {"mode": "match"}})
        })
        .collect();
    let mut b = json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len()});
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    Ok(b)
}

/// Keeps every active schedule filled with slots from now to `days` ahead (the background
/// filler calls this). Returns how many slots were created.
pub async fn fill_all(fhir: &Fhir, days: i64) -> FhirResult<usize> {
    let now = datetime::now_micros();
    let to = datetime::add_days(now, days);
    let schedules = fhir
        .find_rows("Schedule", &[("active".into(), "true".into())], MAX_SLOTS)
        .await?;
    let params = OpParams {
        values: vec![
            (
                "start".into(),
                crate::booking::params::ParamValue::Text(format_instant(now)),
            ),
            (
                "end".into(),
                crate::booking::params::ParamValue::Text(format_instant(to)),
            ),
        ],
    };
    let mut created = 0;
    for s in schedules {
        match generate_slots(fhir, &s.id, &params).await {
            Ok(out) => {
                created += out["parameter"][0]["valueInteger"].as_i64().unwrap_or(0) as usize
            }
            // One schedule's bad template must not stop the others.
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "slot filler skipped a schedule")
            }
        }
    }
    Ok(created)
}
