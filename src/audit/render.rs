//! `Record` → FHIR R4 AuditEvent, after IHE BALP: `type`/`subtype`, `action`, `recorded`,
//! `outcome`/`outcomeDesc`, agents (the user as requestor, the client application with the
//! network address, this server), `source` (this server as observer) and entities (the resources
//! touched, the patient with role 1 Patient, a search's query base64 with role 24 Query).
//!
//! Input strings are bounded and cleaned here: whatever a request carried, the AuditEvent stays
//! valid and indexable, so one odd request can never jam the writer.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{Event, Outcome, Record};
use crate::fhir::datetime::format_instant;

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const IHE_EVENT_TYPE: &str = "urn:ihe:event-type-code";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SECURITY_ROLE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// This server's own identifier systems and code systems.
pub const USER_SYSTEM: &str = "https://fhir-scheduler.org/fhir/sid/user";
pub const CLIENT_SYSTEM: &str = "https://fhir-scheduler.org/fhir/sid/client";
pub const ROLE_SYSTEM: &str = "https://fhir-scheduler.org/fhir/CodeSystem/role";
pub const OPERATION_SYSTEM: &str = "https://fhir-scheduler.org/fhir/CodeSystem/operation";

/// Longest kept: a reference or identifier, a role, an address, `outcomeDesc`, a query.
const MAX_REF: usize = 256;
const MAX_SHORT: usize = 128;
const MAX_DESC: usize = 1024;
const MAX_QUERY: usize = 16 * 1024;
/// Most entities kept per event (a search over many results names the first ones).
pub const MAX_ENTITIES: usize = 500;

/// The AuditEvent for `rec`, as stored: `resourceType`, `id`, `meta` (version 1, `last_updated`
/// in microseconds) first, like every stored resource. `observer` names this server.
pub fn render(rec: &Record, id: &str, last_updated: i64, observer: &str) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("AuditEvent"));
    out.insert("id".into(), json!(id));
    out.insert(
        "meta".into(),
        json!({"versionId": "1", "lastUpdated": format_instant(last_updated)}),
    );
    let (typ, subtype) = event_codes(&rec.event);
    out.insert("type".into(), typ);
    out.insert("subtype".into(), Value::Array(subtype));
    out.insert("action".into(), json!(rec.action.code()));
    out.insert("recorded".into(), json!(format_instant(rec.at)));
    out.insert("outcome".into(), json!(rec.outcome.code()));
    let desc = rec
        .outcome_desc
        .as_deref()
        .and_then(|d| clean(d, MAX_DESC))
        .or_else(|| rec.status.map(|s| format!("HTTP {s}")))
        .or_else(|| (rec.outcome != Outcome::Success).then(|| "failed".to_string()));
    if let Some(d) = desc {
        out.insert("outcomeDesc".into(), json!(d));
    }
    out.insert("agent".into(), Value::Array(agents(rec, observer)));
    out.insert(
        "source".into(),
        json!({
            "observer": {"display": clean(observer, MAX_SHORT).unwrap_or_else(|| "fhir-scheduler".into())},
            "type": [coding(SOURCE_TYPE, "4", "Application Server")],
        }),
    );
    let entities = entities(rec);
    if !entities.is_empty() {
        out.insert("entity".into(), Value::Array(entities));
    }
    Value::Object(out)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [coding(system, code, display)]})
}

fn event_codes(event: &Event) -> (Value, Vec<Value>) {
    let rest = coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation");
    let user_auth = coding(DCM, "110114", "User Authentication");
    match event {
        Event::Rest(i) => (rest, vec![coding(RESTFUL_INTERACTION, i.code(), i.code())]),
        Event::Operation(name) => {
            let mut sub = vec![coding(RESTFUL_INTERACTION, "operation", "operation")];
            if let Some(code) = clean(name, MAX_SHORT).filter(|c| !c.contains(char::is_whitespace))
            {
                sub.push(json!({"system": OPERATION_SYSTEM, "code": code}));
            }
            (rest, sub)
        }
        Event::Login => (user_auth, vec![coding(DCM, "110122", "Login")]),
        Event::Logout => (user_auth, vec![coding(DCM, "110123", "Logout")]),
        Event::TokenIssued => (
            user_auth,
            vec![coding(IHE_EVENT_TYPE, "ITI-71", "Get Access Token")],
        ),
    }
}

fn agents(rec: &Record, observer: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let who = rec.who.as_deref().and_then(|w| clean(w, MAX_REF));
    let client = rec.client_id.as_deref().and_then(|c| clean(c, MAX_REF));
    let network = rec.source_addr.as_deref().and_then(network);
    if let Some(who) = &who {
        let mut agent = Map::new();
        agent.insert(
            "type".into(),
            concept(SECURITY_ROLE_TYPE, "humanuser", "human user"),
        );
        if let Some(role) = rec.role.as_deref().and_then(|r| clean(r, MAX_SHORT)) {
            agent.insert(
                "role".into(),
                json!([{"coding": [{"system": ROLE_SYSTEM, "code": role}]}]),
            );
        }
        let user = who.strip_prefix("user:").filter(|u| !u.is_empty());
        let who_ref = match user {
            Some(u) => json!({"identifier": {"system": USER_SYSTEM, "value": u}}),
            None => reference(who),
        };
        agent.insert("who".into(), who_ref);
        if let Some(u) = user {
            agent.insert("altId".into(), json!(u));
        }
        agent.insert("requestor".into(), json!(true));
        if client.is_none() {
            if let Some(n) = &network {
                agent.insert("network".into(), n.clone());
            }
        }
        out.push(Value::Object(agent));
    }
    if client.is_some() || (who.is_none() && network.is_some()) {
        let mut agent = Map::new();
        agent.insert("type".into(), concept(DCM, "110153", "Source Role ID"));
        if who.is_none() {
            if let Some(role) = rec.role.as_deref().and_then(|r| clean(r, MAX_SHORT)) {
                agent.insert(
                    "role".into(),
                    json!([{"coding": [{"system": ROLE_SYSTEM, "code": role}]}]),
                );
            }
        }
        if let Some(c) = &client {
            agent.insert(
                "who".into(),
                json!({"identifier": {"system": CLIENT_SYSTEM, "value": c}}),
            );
        }
        // Without a user, the client application is the requestor (Backend Services).
        agent.insert("requestor".into(), json!(who.is_none()));
        if let Some(n) = &network {
            agent.insert("network".into(), n.clone());
        }
        out.push(Value::Object(agent));
    }
    out.push(json!({
        "type": concept(DCM, "110152", "Destination Role ID"),
        "who": {"display": clean(observer, MAX_SHORT).unwrap_or_else(|| "fhir-scheduler".into())},
        "requestor": false,
    }));
    out
}

fn entities(rec: &Record) -> Vec<Value> {
    let mut out = Vec::new();
    let patient = rec.patient.as_deref().and_then(|p| clean(p, MAX_REF));
    if let Some(p) = &patient {
        out.push(json!({
            "what": reference(p),
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "1", "Patient"),
        }));
    }
    let mut seen: Vec<String> = patient.into_iter().collect();
    for e in &rec.entities {
        if out.len() >= MAX_ENTITIES {
            break;
        }
        let Some(e) = clean(e, MAX_REF) else { continue };
        if seen.contains(&e) {
            continue;
        }
        out.push(json!({
            "what": reference(&e),
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
        }));
        seen.push(e);
    }
    if let Some(q) = rec.query.as_deref().filter(|q| !q.is_empty()) {
        let q = truncate(q, MAX_QUERY);
        out.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "query": base64::engine::general_purpose::STANDARD.encode(q.as_bytes()),
        }));
    }
    out
}

/// A `Reference`: `reference` when `s` is a relative literal reference (`Type/id` or
/// `Type/id/_history/v`), otherwise only `display`.
fn reference(s: &str) -> Value {
    if is_relative_reference(s) {
        json!({"reference": s})
    } else {
        json!({"display": s})
    }
}

fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_relative_reference(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let type_ok = |t: &str| {
        t.len() > 1
            && t.starts_with(|c: char| c.is_ascii_uppercase())
            && t.bytes().all(|b| b.is_ascii_alphabetic())
    };
    match parts.as_slice() {
        [t, id] => type_ok(t) && is_fhir_id(id),
        [t, id, "_history", v] => type_ok(t) && is_fhir_id(id) && is_fhir_id(v),
        _ => false,
    }
}

/// `agent.network`: an IP address (type 2; a port is dropped) or else a machine name (type 1).
fn network(addr: &str) -> Option<Value> {
    let addr = clean(addr, MAX_SHORT)?;
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Some(json!({"address": sa.ip().to_string(), "type": "2"}));
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Some(json!({"address": ip.to_string(), "type": "2"}));
    }
    Some(json!({"address": addr, "type": "1"}))
}

/// At most `max` bytes (on a char boundary).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Control characters become spaces, runs of whitespace one space, the ends are trimmed and
/// the length bounded; `None` when nothing is left (FHIR has no empty strings).
fn clean(s: &str, max: usize) -> Option<String> {
    let s = truncate(s, max);
    let joined = s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::{Action, RestInteraction};
    use crate::fhir::Fhir;
    use crate::store::SqlStore;

    async fn engine() -> Fhir {
        let store = SqlStore::connect("sqlite::memory:", 1).await.unwrap();
        Fhir::new(Arc::new(store)).unwrap()
    }

    const AT: i64 = 1_767_225_600_123_000; // 2026-01-01T00:00:00.123Z

    fn search() -> Record {
        Record::rest(RestInteraction::SearchType, 200)
            .who("Practitioner/123")
            .role("practitioner")
            .client("scheduler-app")
            .source_addr("192.0.2.7:52100")
            .entity("Appointment/a1")
            .entity("Patient/p1")
            .patient("Patient/p1")
            .query("Appointment?patient=Patient/p1&status=booked")
            .at(AT)
    }

    #[tokio::test]
    async fn a_search_renders_as_a_balp_query_and_validates() {
        let fhir = engine().await;
        let v = render(&search(), "e1", AT, "fhir-scheduler");
        fhir.validate("AuditEvent", &v)
            .unwrap_or_else(|e| panic!("{e:?}\n{v:#}"));
        // The validator does look: a wrong code or an unknown element is refused.
        for (path, bad) in [
            ("action", json!("X")),
            ("outcome", json!("5")),
            ("nope", json!(1)),
        ] {
            let mut b = v.clone();
            b[path] = bad;
            assert!(fhir.validate("AuditEvent", &b).is_err(), "{path}");
        }
        assert_eq!(v["id"], "e1");
        assert_eq!(v["meta"]["versionId"], "1");
        assert_eq!(v["type"]["code"], "rest");
        assert_eq!(v["subtype"][0]["system"], RESTFUL_INTERACTION);
        assert_eq!(v["subtype"][0]["code"], "search-type");
        assert_eq!(v["action"], "E");
        assert_eq!(v["recorded"], "2026-01-01T00:00:00.123Z");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["outcomeDesc"], "HTTP 200");
        // The user, requestor; the client with the network address; this server.
        let agents = v["agent"].as_array().unwrap();
        assert_eq!(agents.len(), 3);
        assert_eq!(agents[0]["who"]["reference"], "Practitioner/123");
        assert_eq!(agents[0]["requestor"], true);
        assert_eq!(agents[0]["role"][0]["coding"][0]["code"], "practitioner");
        assert_eq!(agents[1]["who"]["identifier"]["value"], "scheduler-app");
        assert_eq!(agents[1]["requestor"], false);
        assert_eq!(
            agents[1]["network"],
            json!({"address": "192.0.2.7", "type": "2"})
        );
        assert_eq!(agents[2]["type"]["coding"][0]["code"], "110152");
        assert_eq!(v["source"]["observer"]["display"], "fhir-scheduler");
        // The patient once (role 1), the other resource (role 4), the query (role 24, base64).
        let ents = v["entity"].as_array().unwrap();
        assert_eq!(ents.len(), 3, "{v:#}");
        assert_eq!(ents[0]["what"]["reference"], "Patient/p1");
        assert_eq!(ents[0]["role"]["code"], "1");
        assert_eq!(ents[1]["what"]["reference"], "Appointment/a1");
        assert_eq!(ents[1]["role"]["code"], "4");
        assert_eq!(ents[2]["role"]["code"], "24");
        let q = base64::engine::general_purpose::STANDARD
            .decode(ents[2]["query"].as_str().unwrap())
            .unwrap();
        assert_eq!(q, b"Appointment?patient=Patient/p1&status=booked");
    }

    #[tokio::test]
    async fn every_kind_of_event_validates() {
        let fhir = engine().await;
        let cases = vec![
            Record::rest(RestInteraction::Read, 200)
                .who("user:alice")
                .entity("Patient/1/_history/2"),
            Record::rest(RestInteraction::Create, 201).client("backend"),
            Record::rest(RestInteraction::Update, 412).who("Patient/9"),
            Record::rest(RestInteraction::Patch, 200),
            Record::rest(RestInteraction::Delete, 500).source_addr("[::1]:8080"),
            Record::rest(RestInteraction::HistorySystem, 403)
                .outcome(Outcome::MinorFailure, "forbidden\u{0}\n by policy"),
            Record::rest(RestInteraction::Transaction, 200).entity("not a reference"),
            Record::operation("book", 200).entity("Appointment/7"),
            Record::login(true)
                .who("user:bob")
                .source_addr("client.example"),
            Record::login(false)
                .who("user:mallory")
                .source_addr("203.0.113.9"),
            Record::logout().who("user:bob"),
            Record::token_issued(true)
                .client("app")
                .who("Patient/1")
                .role("patient"),
            Record::new(crate::audit::Event::Login, Action::Execute)
                .who("   ")
                .query(""),
        ];
        for (n, rec) in cases.iter().enumerate() {
            let v = render(rec, &format!("e{n}"), AT, "fhir-scheduler");
            if let Err(e) = fhir.validate("AuditEvent", &v) {
                panic!("case {n}: {e:?}\n{v:#}");
            }
        }
        let login_failed = render(&cases[9], "x", AT, "s");
        assert_eq!(login_failed["type"]["code"], "110114");
        assert_eq!(login_failed["subtype"][0]["code"], "110122");
        assert_eq!(login_failed["outcome"], "4");
        assert_eq!(login_failed["agent"][0]["altId"], "mallory");
        assert_eq!(
            login_failed["agent"][0]["network"],
            json!({"address": "203.0.113.9", "type": "2"})
        );
        let op = render(&cases[7], "x", AT, "s");
        assert_eq!(op["subtype"][1]["code"], "$book");
        assert_eq!(op["action"], "E");
        let desc = render(&cases[5], "x", AT, "s");
        assert_eq!(desc["outcomeDesc"], "forbidden by policy");
        let odd = render(&cases[6], "x", AT, "s");
        assert_eq!(
            odd["entity"][0]["what"],
            json!({"display": "not a reference"})
        );
        // Backend Services: the client is the requestor.
        let backend = render(&cases[1], "x", AT, "s");
        assert_eq!(backend["agent"][0]["requestor"], true);
        assert_eq!(backend["action"], "C");
    }

    #[tokio::test]
    async fn oversized_input_is_bounded() {
        let fhir = engine().await;
        let long = "x".repeat(100_000);
        let mut rec = Record::rest(RestInteraction::SearchType, 200)
            .who(format!("user:{long}"))
            .query(long.clone())
            .outcome(Outcome::Success, long.clone());
        rec.entities = (0..2000).map(|i| format!("Patient/{i}")).collect();
        let v = render(&rec, "big", AT, "fhir-scheduler");
        fhir.validate("AuditEvent", &v).unwrap();
        assert!(v["entity"].as_array().unwrap().len() <= MAX_ENTITIES + 1);
        assert!(v.to_string().len() < 200_000);
    }
}
