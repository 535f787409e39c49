//! The scheduling operations: `$hold`, `$book` (and rescheduling with `cancelled-appt-id`),
//! `$cancel`, and the expiry of holds. Each runs in one store transaction through the engine's
//! transactional interactions, so the engine's rules — status machine, no double booking, slot
//! status following the appointment — hold here exactly as on plain REST writes.

pub mod find;
pub mod params;
pub mod queue;
pub mod slots;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fhir::datetime::{self, format_instant, Kind};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;
use crate::fhir::Fhir;
use crate::scheduling::effects::ext_url;
use crate::store::{StoreTx, Stored};
use params::{appointment_id, OpParams};

/// The booking service.
pub struct Scheduler {
    pub fhir: Arc<Fhir>,
    /// How long a `$hold` keeps its slots.
    pub hold_ttl: Duration,
    /// Where virtual visits happen: a booked virtual appointment gets `{base}/{uuid}` as its
    /// join link.
    pub virtual_visit_base: String,
    /// `$find`'s actor filters, expanded (see `find::ActorCache`).
    pub actor_cache: find::ActorCache,
}

/// The outcome of `$hold`/`$book`: the appointment as stored, and when a hold lapses.
#[derive(Debug, Clone)]
pub struct Booked {
    pub appointment: Stored,
    pub expires: Option<i64>,
}

fn bad(expression: &str, message: impl Into<String>) -> FhirError {
    FhirError::invalid_at(IssueCode::Invalid, expression, message)
}

fn parse_body(s: &Stored) -> FhirResult<Value> {
    serde_json::from_str(&s.body).map_err(|e| FhirError::Internal(e.to_string()))
}

/// Sets every participant's status (those that declined keep it).
fn set_participants(a: &mut Value, status: &str) {
    for p in a["participant"].as_array_mut().into_iter().flatten() {
        if p["status"] != "declined" {
            p["status"] = json!(status);
        }
    }
}

fn remove_extension(a: &mut Value, url: &str) {
    if let Some(list) = a.get_mut("extension").and_then(Value::as_array_mut) {
        list.retain(|e| e["url"] != url);
        if list.is_empty() {
            a.as_object_mut().map(|o| o.remove("extension"));
        }
    }
}

fn add_extension(a: &mut Value, ext: Value) {
    if let Some(obj) = a.as_object_mut() {
        match obj.get_mut("extension") {
            Some(Value::Array(list)) => list.push(ext),
            _ => {
                obj.insert("extension".into(), json!([ext]));
            }
        }
    }
}

/// What the slots' current statuses say before anything is written: `Err` (a 409, as the
/// database's refusal would be) when one is `busy` — in a race for a slot most requests come
/// after the winner has committed, and each then costs a read instead of a whole write rolled
/// back; `Ok(true)` when one may be held by a lapsed hold (`busy-tentative`, or unreadable:
/// the search for lapsed holds decides); `Ok(false)` when all are free. A read by id per slot
/// instead of a search per booking. A concurrent winner not yet committed is still stopped by
/// the database (`booking` rows).
async fn slots_before_write(tx: &mut dyn StoreTx, slots: &[String]) -> FhirResult<bool> {
    let mut held = false;
    for id in slots {
        let status = match tx.read("Slot", id).await? {
            Some(s) if !s.deleted => serde_json::from_str::<Value>(&s.body)
                .ok()
                .and_then(|v| v["status"].as_str().map(String::from)),
            _ => None,
        };
        match status.as_deref() {
            Some("busy") => {
                return Err(FhirError::Store(crate::store::StoreError::Overlap(
                    format!("Slot/{id}"),
                )))
            }
            Some("free") => {}
            _ => held = true,
        }
    }
    Ok(held)
}

/// Slot ids an appointment fills.
fn slot_ids(a: &Value) -> Vec<String> {
    a["slot"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s["reference"]
                .as_str()?
                .strip_prefix("Slot/")
                .map(String::from)
        })
        .collect()
}

/// Runs a booking transaction again (3 attempts in all) while the database gives up on it for
/// reasons of timing alone: PostgreSQL's deadlock victim (concurrent bookings lock slots,
/// holds and appointments in different orders) or a serialization failure. The failed attempt
/// rolled back whole, so running it again is safe.
async fn retry_transient<T, F, Fut>(mut op: F) -> FhirResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = FhirResult<T>>,
{
    let mut attempt = 1u64;
    loop {
        match op().await {
            Err(FhirError::Store(e)) if e.is_transient() && attempt < 3 => {
                tracing::warn!(attempt, error = %e, "booking transaction retried");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
            }
            r => return r,
        }
    }
}

impl Scheduler {
    pub fn new(fhir: Arc<Fhir>, hold_ttl: Duration) -> Self {
        Self {
            fhir,
            hold_ttl,
            virtual_visit_base: "https://visit.fhir-scheduler.org/join".into(),
            actor_cache: Default::default(),
        }
    }

    /// The appointment an operation is about: `appt-resource` (new) or `appt-id` / the instance
    /// in the URL (stored). Returns the body and, for a stored one, its current version.
    async fn target(
        &self,
        tx: &mut dyn StoreTx,
        params: &OpParams,
        instance: Option<&str>,
    ) -> FhirResult<(Value, Option<Stored>)> {
        let id = match (instance, params.text("appt-id")) {
            (Some(i), _) => Some(i.to_string()),
            (None, Some(v)) => Some(appointment_id(v)?),
            (None, None) => None,
        };
        if let Some(id) = id {
            let stored = match tx.read("Appointment", &id).await? {
                Some(s) if !s.deleted => s,
                Some(_) => return Err(FhirError::Deleted(format!("Appointment/{id}"))),
                None => return Err(FhirError::NotFound(format!("Appointment/{id}"))),
            };
            return Ok((parse_body(&stored)?, Some(stored)));
        }
        match params.json("appt-resource") {
            Some(a) if a["resourceType"] == "Appointment" => Ok((a.clone(), None)),
            _ => Err(bad(
                "Parameters.parameter",
                "Give the appointment as appt-resource or appt-id",
            )),
        }
    }

    /// `$hold`: the appointment goes `pending` and its slots `busy-tentative` until the hold
    /// expires (then it is cancelled and the slots are free again).
    pub async fn hold(&self, params: &OpParams, instance: Option<&str>) -> FhirResult<Booked> {
        retry_transient(|| self.hold_once(params, instance)).await
    }

    async fn hold_once(&self, params: &OpParams, instance: Option<&str>) -> FhirResult<Booked> {
        let mut tx = self.fhir.store.begin().await?;
        let (mut appt, stored) = self.target(tx.as_mut(), params, instance).await?;
        let status = appt["status"].as_str().unwrap_or("proposed").to_string();
        if status != "proposed" {
            return Err(FhirError::Conflict(format!(
                "Only a proposed appointment can be held; this one is {status}"
            )));
        }
        let slots = slot_ids(&appt);
        if slots.is_empty() {
            return Err(bad("Appointment.slot", "A hold needs the slot(s) to hold"));
        }
        if slots_before_write(tx.as_mut(), &slots).await? {
            self.expire_holds_in(tx.as_mut(), &slots).await?;
        }
        let expires = datetime::now_micros() / 1000 * 1000 + self.hold_ttl.as_micros() as i64;
        appt["status"] = json!("pending");
        remove_extension(&mut appt, &ext_url("hold-expires"));
        add_extension(
            &mut appt,
            json!({"url": ext_url("hold-expires"), "valueInstant": format_instant(expires)}),
        );
        let written = self.write(tx.as_mut(), appt, stored).await?;
        tx.commit().await?;
        Ok(Booked {
            appointment: written,
            expires: Some(expires),
        })
    }

    /// `$book`: a proposed, held or new appointment becomes `booked`, its slots `busy`, its
    /// participants `accepted`. With `cancelled-appt-id` it reschedules: the old appointment is
    /// cancelled and the new one booked in the same transaction — both or neither.
    pub async fn book(&self, params: &OpParams, instance: Option<&str>) -> FhirResult<Booked> {
        retry_transient(|| self.book_once(params, instance)).await
    }

    async fn book_once(&self, params: &OpParams, instance: Option<&str>) -> FhirResult<Booked> {
        let mut tx = self.fhir.store.begin().await?;
        if let Some(old) = params.text("cancelled-appt-id") {
            let old_id = appointment_id(old)?;
            self.cancel_in(tx.as_mut(), &old_id, Some(json!({"text": "Rescheduled"})))
                .await?;
        }
        let (mut appt, stored) = self.target(tx.as_mut(), params, instance).await?;
        let status = appt["status"].as_str().unwrap_or("proposed").to_string();
        if !matches!(status.as_str(), "proposed" | "pending" | "waitlist") {
            return Err(FhirError::Conflict(format!(
                "Only a proposed or held appointment can be booked; this one is {status}"
            )));
        }
        if appt.get("start").is_none() || appt.get("end").is_none() {
            return Err(bad("Appointment.start", "A booking needs start and end"));
        }
        if let Some(expiry) = hold_expiry(&appt) {
            if expiry <= datetime::now_micros() {
                return Err(FhirError::Conflict(
                    "The hold on this appointment has expired; hold or book again".into(),
                ));
            }
        }
        let slots = slot_ids(&appt);
        // Without slots, lapsed holds anywhere may be in the way (of the time it holds).
        if slots.is_empty() || slots_before_write(tx.as_mut(), &slots).await? {
            self.expire_holds_in(tx.as_mut(), &slots).await?;
        }
        appt["status"] = json!("booked");
        remove_extension(&mut appt, &ext_url("hold-expires"));
        set_participants(&mut appt, "accepted");
        if is_virtual(&appt) && extension(&appt, "virtual-join-link").is_none() {
            let link = format!(
                "{}/{}",
                self.virtual_visit_base.trim_end_matches('/'),
                uuid::Uuid::new_v4()
            );
            add_extension(
                &mut appt,
                json!({"url": ext_url("virtual-join-link"), "valueUrl": link}),
            );
        }
        if let Some(c) = params.text("comment") {
            appt["comment"] = json!(c);
        }
        let written = self.write(tx.as_mut(), appt, stored).await?;
        tx.commit().await?;
        Ok(Booked {
            appointment: written,
            expires: None,
        })
    }

    /// `Appointment/{id}/$cancel`: cancelled, with the reason; its slots are freed.
    pub async fn cancel(&self, id: &str, reason: Option<Value>) -> FhirResult<Stored> {
        retry_transient(|| self.cancel_once(id, reason.clone())).await
    }

    async fn cancel_once(&self, id: &str, reason: Option<Value>) -> FhirResult<Stored> {
        let mut tx = self.fhir.store.begin().await?;
        let s = self.cancel_in(tx.as_mut(), id, reason).await?;
        tx.commit().await?;
        Ok(s)
    }

    async fn cancel_in(
        &self,
        tx: &mut dyn StoreTx,
        id: &str,
        reason: Option<Value>,
    ) -> FhirResult<Stored> {
        let stored = match tx.read("Appointment", id).await? {
            Some(s) if !s.deleted => s,
            Some(_) => return Err(FhirError::Deleted(format!("Appointment/{id}"))),
            None => return Err(FhirError::NotFound(format!("Appointment/{id}"))),
        };
        let mut appt = parse_body(&stored)?;
        if appt["status"] == "cancelled" {
            return Ok(stored);
        }
        appt["status"] = json!("cancelled");
        if let Some(r) = reason {
            appt["cancelationReason"] = r;
        }
        remove_extension(&mut appt, &ext_url("hold-expires"));
        self.write(tx, appt, Some(stored)).await
    }

    /// Validates and writes through the engine (create, or update of `stored`).
    async fn write(
        &self,
        tx: &mut dyn StoreTx,
        mut appt: Value,
        stored: Option<Stored>,
    ) -> FhirResult<Stored> {
        if let Some(meta) = appt.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            if meta.is_empty() {
                appt.as_object_mut().map(|o| o.remove("meta"));
            }
        }
        match stored {
            Some(s) => {
                appt["id"] = json!(s.id);
                self.fhir.validate("Appointment", &appt)?;
                Ok(self
                    .fhir
                    .update_in(tx, "Appointment", &s.id, appt, Some(s.version))
                    .await?
                    .stored)
            }
            None => {
                appt.as_object_mut().map(|o| o.remove("id"));
                self.fhir.validate("Appointment", &appt)?;
                Ok(self
                    .fhir
                    .create_in(tx, "Appointment", appt, None, None)
                    .await?
                    .stored)
            }
        }
    }

    /// Cancels lapsed holds — those on `slots`, or all when `slots` is empty — inside `tx`.
    /// Housekeeping on behalf of the server: the lapsed holds may be anyone's.
    async fn expire_holds_in(&self, tx: &mut dyn StoreTx, slots: &[String]) -> FhirResult<usize> {
        crate::fhir::access::as_system(self.expire_holds_as_system(tx, slots)).await
    }

    async fn expire_holds_as_system(
        &self,
        tx: &mut dyn StoreTx,
        slots: &[String],
    ) -> FhirResult<usize> {
        let now = format_instant(datetime::now_micros());
        let mut query = format!("status=pending&hold-expires=lt{now}");
        if !slots.is_empty() {
            let refs: Vec<String> = slots.iter().map(|s| format!("Slot/{s}")).collect();
            query.push_str(&format!("&slot={}", refs.join(",")));
        }
        let ids = self
            .fhir
            .find_ids_in(tx, "Appointment", &query, EXPIRE_BATCH)
            .await?;
        for id in &ids {
            self.cancel_in(tx, id, Some(json!({"text": "Hold expired"})))
                .await?;
        }
        Ok(ids.len())
    }

    /// Cancels every lapsed hold (the background sweeper calls this).
    pub async fn expire_holds(&self) -> FhirResult<usize> {
        let mut total = 0;
        loop {
            let mut tx = self.fhir.store.begin().await?;
            let n = self.expire_holds_in(tx.as_mut(), &[]).await?;
            tx.commit().await?;
            total += n;
            if n < EXPIRE_BATCH {
                return Ok(total);
            }
        }
    }
}

/// The extension of ours named `name` on a resource.
fn extension<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
    let url = ext_url(name);
    r["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == url.as_str())
}

/// A virtual visit: the visit-mode extension says so (set from the slot by `$find`).
fn is_virtual(a: &Value) -> bool {
    extension(a, "visit-mode").is_some_and(|e| e["valueCode"] == "virtual")
}

/// Lapsed holds cancelled per transaction.
const EXPIRE_BATCH: usize = 100;

/// The hold-expires instant of an appointment, if any.
fn hold_expiry(a: &Value) -> Option<i64> {
    extension(a, "hold-expires")
        .and_then(|e| e["valueInstant"].as_str())
        .and_then(|s| datetime::parse(s, Kind::Instant))
        .map(|(r, _)| r.lo)
}

/// The searchset Bundle `$hold` and `$book` answer with (Argonaut Scheduling IG).
pub fn result_bundle(base: &str, s: &Stored) -> Value {
    let resource: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": 1,
        "entry": [{
            "fullUrl": format!("{base}/Appointment/{}", s.id),
            "resource": resource,
            "search": {"mode": "match"}
        }]
    })
}
