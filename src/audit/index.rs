//! The audit store's search values of a rendered AuditEvent, read straight from the shape
//! `render` gives it, instead of evaluating the AuditEvent SearchParameters' FHIRPath over the
//! body (`index::extract`: a tenth of the server's CPU under read load, as much as rendering).
//! A test holds the two equal for every kind of event `render` makes.

use serde_json::Value;

use crate::fhir::datetime::{self, Kind};
use crate::fhir::fhirpath::reference_type_id;
use crate::fhir::search::audit::{AuditIndex, AuditIndexBuilder};
use crate::fhir::search::normalize;

/// The search values of `ev`, an AuditEvent as `render` made it.
pub fn index(ev: &Value) -> AuditIndex {
    let mut b = AuditIndexBuilder::default();
    coding(&mut b, "type", &ev["type"]);
    for c in items(&ev["subtype"]) {
        coding(&mut b, "subtype", c);
    }
    for p in ["action", "outcome"] {
        if let Some(code) = text(&ev[p]) {
            b.token(p, None, Some(code));
        }
    }
    if let Some((r, _)) = text(&ev["recorded"]).and_then(|r| datetime::parse(r, Kind::DateTime)) {
        b.date(r.lo, r.hi);
    }
    for agent in items(&ev["agent"]) {
        for role in items(&agent["role"]) {
            for c in items(&role["coding"]) {
                coding(&mut b, "agent-role", c);
            }
        }
        if let Some(alt) = text(&agent["altId"]) {
            b.token("altid", None, Some(alt));
        }
        reference(&mut b, "agent", &agent["who"]);
        string(&mut b, "agent-name", &agent["name"]);
        string(&mut b, "address", &agent["network"]["address"]);
        for policy in items(&agent["policy"]).filter_map(text) {
            b.uri("policy", policy);
        }
    }
    if let Some(site) = text(&ev["source"]["site"]) {
        b.token("site", None, Some(site));
    }
    reference(&mut b, "source", &ev["source"]["observer"]);
    for entity in items(&ev["entity"]) {
        reference(&mut b, "entity", &entity["what"]);
        coding(&mut b, "entity-type", &entity["type"]);
        coding(&mut b, "entity-role", &entity["role"]);
        string(&mut b, "entity-name", &entity["name"]);
    }
    b.finish()
}

fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn coding(b: &mut AuditIndexBuilder, param: &str, c: &Value) {
    let (system, code) = (text(&c["system"]), text(&c["code"]));
    if system.is_some() || code.is_some() {
        b.token(param, system, code);
    }
}

fn string(b: &mut AuditIndexBuilder, param: &str, v: &Value) {
    if let Some(s) = text(v) {
        b.string(param, &normalize(s), s);
    }
}

/// A relative literal reference (all `render` writes); a Patient also counts for `patient`.
fn reference(b: &mut AuditIndexBuilder, param: &str, r: &Value) {
    let Some(target) = text(&r["reference"]).and_then(reference_type_id) else {
        return;
    };
    b.reference(param, Some(target));
    if target.0 == "Patient" && param != "source" {
        b.reference("patient", Some(target));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::audit::{render, Action, Outcome, Record, RestInteraction};
    use crate::fhir::search::audit::SEP;
    use crate::fhir::{index as fhir_index, Fhir};
    use crate::store::SqlStore;

    fn terms(ix: &AuditIndex) -> BTreeSet<String> {
        ix.terms
            .split(SEP)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    }

    /// For every kind of event: the same terms, date and references as the SearchParameters'
    /// FHIRPath finds in the body.
    #[tokio::test]
    async fn equals_what_the_search_parameters_find() {
        let store = SqlStore::connect("sqlite::memory:", 1).await.unwrap();
        let fhir = Fhir::new(Arc::new(store)).unwrap();
        let records = [
            Record::rest(RestInteraction::Read, 200)
                .who("Practitioner/pr1")
                .role("practitioner")
                .client("scheduler-app")
                .source_addr("192.0.2.1:40000")
                .entity("Patient/p1")
                .patient("Patient/p1"),
            Record::rest(RestInteraction::SearchType, 200)
                .who("Patient/p9")
                .role("patient")
                .source_addr("ZoË-host")
                .query("Appointment?patient=Patient/p9")
                .entity("Appointment/a1")
                .entity("Slot/s1")
                .entity("Patient/p2"),
            Record::rest(RestInteraction::Create, 201).client("backend"),
            Record::rest(RestInteraction::Delete, 500).source_addr("[::1]:8080"),
            Record::rest(RestInteraction::Vread, 200).entity("Patient/p3/_history/2"),
            Record::rest(RestInteraction::Transaction, 200).entity("not a reference"),
            Record::operation("book", 200).entity("Appointment/7"),
            Record::operation("", 200),
            Record::login(false)
                .who("user:mallory")
                .source_addr("203.0.113.9")
                .outcome(Outcome::MinorFailure, "wrong password"),
            Record::logout().who("user:bob"),
            Record::token_issued(true)
                .client("app")
                .who("user:ann")
                .role("admin"),
            Record::new(crate::audit::Event::Login, Action::Execute),
        ];
        for (i, rec) in records.iter().enumerate() {
            let body = render(
                rec,
                &format!("e{i}"),
                1_767_225_600_123_000,
                "fhir-scheduler",
            );
            let ours = index(&body);
            let theirs =
                crate::fhir::search::audit::index(&fhir_index::extract(&fhir.registry, &body));
            assert_eq!(terms(&ours), terms(&theirs), "record {i}: {body}");
            assert_eq!(ours.date, theirs.date, "record {i}");
            let (mut a, mut b) = (ours.refs.clone(), theirs.refs.clone());
            let key = |r: &crate::fhir::search::audit::AuditRef| {
                (r.param.clone(), r.target_type.clone(), r.target_id.clone())
            };
            a.sort_by_key(key);
            b.sort_by_key(key);
            assert_eq!(a, b, "record {i}: {body}");
            assert!(ours.date.is_some());
        }
    }
}
