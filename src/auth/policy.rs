//! THE access policy: every decision about who may do what to which resource is made here, for
//! every path (REST, search and its includes, history, batch and transaction entries,
//! operations). It is pure: the caller's identity, scopes and reach (loaded once per request by
//! `auth::reach`) in, yes or no out. The engine asks it through `fhir::access::Guard`.
//!
//! Two conditions must both hold (AND):
//! - the token's scopes grant the interaction on the type (SMART v2 letters; `patient/` scopes
//!   also confine it to the compartment of the patient in context);
//! - the user's role allows it on that resource: a patient reaches their own compartment and the
//!   public directory; a practitioner their own schedules, slots and appointments and the
//!   patients booked with them; an admin and a backend service everything.

use std::collections::HashSet;

use serde_json::Value;

use crate::auth::scope::{Context, Scopes};
use crate::fhir::access::{Guard, Interaction};
use crate::fhir::error::{FhirError, FhirResult};

/// What a user is to this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Patient,
    Practitioner,
    Admin,
    /// A backend service (client credentials): no user; its scopes decide.
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Practitioner => "practitioner",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "patient" => Some(Role::Patient),
            "practitioner" => Some(Role::Practitioner),
            "admin" => Some(Role::Admin),
            "system" => Some(Role::System),
            _ => None,
        }
    }
}

/// Who may register OAuth clients through dynamic registration (RFC 7591; the initial access
/// token is their access token): admins. Operators on the server's host use the CLI instead.
pub fn may_register_clients(role: Option<Role>) -> bool {
    role == Some(Role::Admin)
}

/// Who is calling, from a verified access token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (or, for backend services, the client).
    pub subject: String,
    pub client_id: String,
    pub role: Role,
    /// `Patient/123`, `Practitioner/abc` — the user's own FHIR resource.
    pub fhir_user: Option<String>,
    /// The patient in context (launch or the patient user themself), an id.
    pub patient: Option<String>,
    pub scopes: Scopes,
}

/// The resources a practitioner's rules refer to, loaded per request.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// `Practitioner/x` and `PractitionerRole/y` references that are the practitioner.
    pub actors: HashSet<String>,
    /// Ids of the Schedules whose actor is one of `actors`.
    pub schedules: HashSet<String>,
    /// Ids of the Patients with an appointment with one of `actors`.
    pub patients: HashSet<String>,
}

/// The directory anyone signed in may read.
const PUBLIC: [&str; 6] = [
    "HealthcareService",
    "Location",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Schedule",
];

/// Statuses a patient may move their own appointment to.
const PATIENT_STATUSES: [&str; 5] = ["proposed", "pending", "booked", "cancelled", "waitlist"];

/// Types no one may write through the API (the server writes them itself).
const SERVER_WRITTEN: [&str; 1] = ["AuditEvent"];

/// Types only unrestricted callers may read.
const ADMIN_ONLY: [&str; 1] = ["AuditEvent"];

/// A caller's guard: principal + reach → decisions.
pub struct Policy {
    pub principal: Principal,
    pub reach: Reach,
}

fn refs(body: &Value, path: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    collect(body, path, &mut out);
    out
}

fn collect(v: &Value, path: &[&str], out: &mut Vec<String>) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| collect(i, path, out)),
        (_, None) => {
            if let Some(r) = v.get("reference").and_then(Value::as_str) {
                out.push(r.to_string());
            }
        }
        (Value::Object(o), Some((first, rest))) => {
            if let Some(next) = o.get(*first) {
                collect(next, rest, out);
            }
        }
        _ => {}
    }
}

fn id_of(body: &Value) -> &str {
    body.get("id").and_then(Value::as_str).unwrap_or_default()
}

/// Is `body` in the compartment of Patient `pid` (as far as this server's types go)?
fn in_patient_compartment(rt: &str, body: &Value, pid: &str) -> bool {
    let me = format!("Patient/{pid}");
    match rt {
        "Patient" => id_of(body) == pid,
        "Appointment" => refs(body, &["participant", "actor"]).contains(&me),
        "AppointmentResponse" => refs(body, &["actor"]).contains(&me),
        // Messages the server sent them (read only: patients write no Communication).
        "Communication" => refs(body, &["subject"]).contains(&me),
        _ => false,
    }
}

/// The search criteria that confine `rt` to Patient `pid`'s compartment; `None` for types
/// outside it.
fn patient_criteria(rt: &str, pid: &str) -> Option<Vec<(String, String)>> {
    let me = format!("Patient/{pid}");
    match rt {
        "Patient" => Some(vec![("_id".into(), pid.to_string())]),
        "Appointment" => Some(vec![("actor".into(), me)]),
        "AppointmentResponse" => Some(vec![("actor".into(), me)]),
        "Communication" => Some(vec![("subject".into(), me)]),
        _ => None,
    }
}

fn is_public(rt: &str) -> bool {
    PUBLIC.contains(&rt)
}

fn status(body: &Value) -> &str {
    body.get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn forbidden(msg: impl Into<String>) -> FhirError {
    FhirError::Forbidden(msg.into())
}

impl Policy {
    pub fn new(principal: Principal, reach: Reach) -> Self {
        Self { principal, reach }
    }

    fn role(&self) -> Role {
        self.principal.role
    }

    /// The patient the caller is confined to: a patient user themself, or the patient in
    /// context when the only scopes granting `what` on `rt` are `patient/` scopes.
    fn confining_patient(&self, rt: &str, what: Interaction) -> Option<&str> {
        if self.role() == Role::Patient {
            return self.principal.patient.as_deref();
        }
        let mut granting = self.principal.scopes.granting(rt, what).peekable();
        granting.peek()?;
        if granting.all(|s| s.context == Context::Patient) {
            self.principal.patient.as_deref()
        } else {
            None
        }
    }

    /// Role rule for reading one resource.
    fn role_may_read(&self, rt: &str, body: &Value) -> bool {
        if ADMIN_ONLY.contains(&rt) {
            return matches!(self.role(), Role::Admin | Role::System);
        }
        match self.role() {
            Role::Admin | Role::System => true,
            Role::Patient => {
                let Some(me) = self.principal.patient.as_deref() else {
                    return false;
                };
                is_public(rt)
                    || (rt == "Slot" && status(body) == "free")
                    || in_patient_compartment(rt, body, me)
            }
            Role::Practitioner => match rt {
                _ if is_public(rt) => true,
                "Slot" => status(body) == "free" || self.own_slot(body),
                "Appointment" => self.own_appointment(body),
                "AppointmentResponse" => self.touches_actor(&refs(body, &["actor"])),
                "Patient" => self.reach.patients.contains(id_of(body)),
                _ => false,
            },
        }
    }

    /// Role rule for a write (`before` → `after`; `None` = absent or deleted).
    fn role_may_write(
        &self,
        rt: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> FhirResult<()> {
        if SERVER_WRITTEN.contains(&rt) {
            return Err(forbidden(format!("{rt} is written by the server only")));
        }
        let both = |ok: &dyn Fn(&Value) -> bool| before.is_none_or(ok) && after.is_none_or(ok);
        match self.role() {
            Role::Admin | Role::System => Ok(()),
            Role::Patient => {
                let me = self.principal.patient.as_deref().unwrap_or_default();
                let ok = match rt {
                    "Appointment" => {
                        let mine = both(&|b| in_patient_compartment(rt, b, me));
                        let status_ok = match (before.map(status), after.map(status)) {
                            (Some(a), Some(b)) if a == b => true,
                            (_, Some(s)) => PATIENT_STATUSES.contains(&s),
                            (_, None) => false, // patients cancel, they do not delete
                        };
                        mine && status_ok
                    }
                    "AppointmentResponse" => both(&|b| in_patient_compartment(rt, b, me)),
                    // Their own record: update, never create another or delete.
                    "Patient" => before.is_some() && after.is_some() && both(&|b| id_of(b) == me),
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(forbidden(format!(
                        "a patient may not make this change to {rt}"
                    )))
                }
            }
            Role::Practitioner => {
                let ok = match rt {
                    "Appointment" => both(&|b| self.own_appointment(b)),
                    "AppointmentResponse" => both(&|b| self.touches_actor(&refs(b, &["actor"]))),
                    "Schedule" => both(&|b| self.touches_actor(&refs(b, &["actor"]))),
                    "Slot" => both(&|b| self.own_slot(b)),
                    "PractitionerRole" => both(&|b| {
                        self.reach
                            .actors
                            .contains(&format!("PractitionerRole/{}", id_of(b)))
                            && before.is_some()
                    }),
                    "Practitioner" => {
                        before.is_some()
                            && after.is_some()
                            && both(&|b| {
                                self.principal.fhir_user.as_deref()
                                    == Some(&format!("Practitioner/{}", id_of(b)))
                            })
                    }
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(forbidden(format!(
                        "a practitioner may not make this change to {rt}"
                    )))
                }
            }
        }
    }

    fn touches_actor(&self, refs: &[String]) -> bool {
        refs.iter().any(|r| self.reach.actors.contains(r))
    }

    fn own_appointment(&self, body: &Value) -> bool {
        self.touches_actor(&refs(body, &["participant", "actor"]))
    }

    fn own_slot(&self, body: &Value) -> bool {
        refs(body, &["schedule"]).iter().any(|r| {
            r.strip_prefix("Schedule/")
                .is_some_and(|id| self.reach.schedules.contains(id))
        })
    }

    fn scoped(&self, rt: &str, what: Interaction) -> FhirResult<()> {
        if self.principal.scopes.granting(rt, what).next().is_some() {
            Ok(())
        } else {
            Err(forbidden(format!(
                "the token's scopes do not allow '{}' on {rt}",
                what.letter()
            )))
        }
    }

    /// `?param=value` restrictions of the scopes granting `what` on `rt`: `None` when one of
    /// them is unrestricted, else the restrictions of the (first) restricted one.
    fn restrictions(&self, rt: &str, what: Interaction) -> Option<Vec<(String, String)>> {
        let mut restricted = None;
        for s in self.principal.scopes.granting(rt, what) {
            if s.restrictions.is_empty() {
                return None;
            }
            restricted.get_or_insert_with(|| s.restrictions.clone());
        }
        restricted
    }
}

impl Guard for Policy {
    fn allow(&self, rt: &str, what: Interaction) -> FhirResult<()> {
        self.scoped(rt, what)?;
        if ADMIN_ONLY.contains(&rt) && !matches!(self.role(), Role::Admin | Role::System) {
            return Err(forbidden(format!("{rt} is open to administrators only")));
        }
        if matches!(
            what,
            Interaction::Create | Interaction::Update | Interaction::Delete
        ) && SERVER_WRITTEN.contains(&rt)
        {
            return Err(forbidden(format!("{rt} is written by the server only")));
        }
        // A restricted read is checked on the resource (`read_restrictions`).
        Ok(())
    }

    fn read_restrictions(&self, rt: &str) -> Option<Vec<(String, String)>> {
        // Reading is granted by `r` or `s` scopes (as `can_read` says); unrestricted if any is.
        let r = self.restrictions(rt, Interaction::Read);
        let s = self.restrictions(rt, Interaction::Search);
        let granted = |w| self.principal.scopes.granting(rt, w).next().is_some();
        match (granted(Interaction::Read), granted(Interaction::Search)) {
            (true, true) => r.zip(s).map(|(r, _)| r),
            (true, false) => r,
            (false, true) => s,
            (false, false) => None, // can_read refuses anyway
        }
    }

    fn can_read(&self, rt: &str, body: &Value) -> bool {
        let read = self.scoped(rt, Interaction::Read).is_ok()
            || self.scoped(rt, Interaction::Search).is_ok();
        if !read || !self.role_may_read(rt, body) {
            return false;
        }
        match self.confining_patient(rt, Interaction::Read) {
            Some(pid) if !is_public(rt) && rt != "Slot" => in_patient_compartment(rt, body, pid),
            _ => true,
        }
    }

    fn check_write(
        &self,
        rt: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> FhirResult<()> {
        self.role_may_write(rt, before, after)?;
        let what = if after.is_none() {
            Interaction::Delete
        } else if before.is_none() {
            Interaction::Create
        } else {
            Interaction::Update
        };
        if self.restrictions(rt, what).is_some() {
            return Err(forbidden(format!(
                "the token's scopes restrict writes to {rt}"
            )));
        }
        if let Some(pid) = self.confining_patient(rt, what) {
            let inside = |b: &Value| in_patient_compartment(rt, b, pid);
            if !(before.is_none_or(inside) && after.is_none_or(inside)) {
                return Err(forbidden(format!(
                    "the token reaches only Patient/{pid}'s {rt} resources"
                )));
            }
        }
        Ok(())
    }

    fn search_criteria(&self, rt: &str) -> FhirResult<Vec<(String, String)>> {
        self.scoped(rt, Interaction::Search)?;
        let mut out = self
            .restrictions(rt, Interaction::Search)
            .unwrap_or_default();
        if let Some(pid) = self.confining_patient(rt, Interaction::Search) {
            match patient_criteria(rt, pid) {
                Some(c) => out.extend(c),
                None if is_public(rt) => {}
                None if rt == "Slot" => out.push(("status".into(), "free".into())),
                None => {
                    return Err(forbidden(format!(
                        "{rt} is outside the patient's compartment"
                    )))
                }
            }
        }
        match self.role() {
            Role::Admin | Role::System => {}
            Role::Patient => {} // confined above
            Role::Practitioner => {
                let actors = || {
                    let mut a: Vec<&String> = self.reach.actors.iter().collect();
                    a.sort();
                    a.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                };
                match rt {
                    _ if is_public(rt) => {}
                    // Free slots are public, own slots are not: filtered row by row.
                    "Slot" => {}
                    "Appointment" | "AppointmentResponse" => {
                        if self.reach.actors.is_empty() {
                            return Err(forbidden("the practitioner has no FHIR identity"));
                        }
                        out.push(("actor".into(), actors()));
                    }
                    "Patient" => {
                        if self.reach.actors.is_empty() {
                            return Err(forbidden("the practitioner has no FHIR identity"));
                        }
                        out.push(("_has:Appointment:patient:actor".into(), actors()));
                    }
                    _ => return Err(forbidden(format!("{rt} is not open to practitioners"))),
                }
            }
        }
        if ADMIN_ONLY.contains(&rt) && !matches!(self.role(), Role::Admin | Role::System) {
            return Err(forbidden(format!("{rt} is open to administrators only")));
        }
        Ok(out)
    }

    fn may_reverse_chain(&self, rt: &str) -> bool {
        matches!(self.role(), Role::Admin | Role::System)
            && self.confining_patient(rt, Interaction::Search).is_none()
            || is_public(rt)
    }

    fn allow_operation(&self, rt: &str, op: &str) -> FhirResult<()> {
        let needs: &[(&str, Interaction)] = match (rt, op) {
            ("Appointment", "$find") => &[("Slot", Interaction::Search)],
            ("Appointment", "$hold" | "$book") => &[("Appointment", Interaction::Create)],
            ("Appointment", "$cancel") => &[("Appointment", Interaction::Update)],
            ("Schedule", "$generate-slots") => &[
                ("Schedule", Interaction::Read),
                ("Slot", Interaction::Create),
            ],
            ("Schedule", "$conflicts") => &[
                ("Schedule", Interaction::Read),
                ("Appointment", Interaction::Search),
            ],
            ("Subscription", "$status" | "$events") => &[("Subscription", Interaction::Read)],
            // Unknown operations are refused by the dispatcher with 400 not-supported.
            _ => &[],
        };
        for (t, what) in needs {
            self.scoped(t, *what)?;
        }
        if rt == "Schedule" && self.role() == Role::Patient {
            return Err(forbidden(format!("{op} is for the schedule's owner")));
        }
        Ok(())
    }

    fn unrestricted(&self) -> bool {
        let ctx = match self.role() {
            Role::Admin => Context::User,
            Role::System => Context::System,
            _ => return false,
        };
        self.principal.scopes.is_full(ctx)
    }

    fn subject(&self) -> &str {
        &self.principal.subject
    }

    fn patient(&self) -> Option<&str> {
        match self.role() {
            Role::Patient => self.principal.patient.as_deref(),
            _ => None,
        }
    }
}
