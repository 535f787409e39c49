//! `GET /metadata`: the CapabilityStatement, generated from the registry and the interactions
//! the engine implements — never written by hand, so it cannot drift from the code.

use serde_json::{json, Value};

use crate::fhir::{Fhir, RESOURCE_TYPES};

/// Interactions every supported type offers.
pub const TYPE_INTERACTIONS: [&str; 9] = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Search result parameters handled for every type.
pub const RESULT_PARAMETERS: [&str; 10] = [
    "_count",
    "_offset",
    "_sort",
    "_total",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_format",
    "_pretty",
];

/// `(resource type, name, canonical)` of every OperationDefinition in `profiles/operations.json`.
pub fn operations() -> Vec<(String, String, String)> {
    let bundle: Value =
        serde_json::from_str(crate::fhir::profiles::OPERATIONS).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for e in bundle["entry"].as_array().into_iter().flatten() {
        let r = &e["resource"];
        for rt in r["resource"].as_array().into_iter().flatten() {
            out.push((
                rt.as_str().unwrap_or_default().to_string(),
                r["code"].as_str().unwrap_or_default().to_string(),
                r["url"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// SMART on FHIR: the service and the OAuth endpoints (also in `.well-known/smart-configuration`).
fn security(base: &str) -> Value {
    let origin = base.strip_suffix("/fhir").unwrap_or(base);
    json!({
        "cors": true,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": format!("{origin}/auth/authorize")},
                {"url": "token", "valueUri": format!("{origin}/auth/token")},
                {"url": "introspect", "valueUri": format!("{origin}/auth/introspect")},
                {"url": "revoke", "valueUri": format!("{origin}/auth/revoke")}
            ]
        }]
    })
}

pub fn capability_statement(fhir: &Fhir, base: &str) -> Value {
    let ops = operations();
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|rt| {
            let params: Vec<Value> = fhir
                .registry
                .params_of(rt)
                .map(|p| {
                    let mut v = json!({
                        "name": p.code,
                        "definition": p.url,
                        "type": p.ptype.code(),
                    });
                    if let Some(d) = &p.documentation {
                        v["documentation"] = json!(d);
                    }
                    v
                })
                .collect();
            let includes: Vec<String> = fhir
                .registry
                .params_of(rt)
                .filter(|p| p.ptype == crate::fhir::registry::ParamType::Reference)
                .map(|p| format!("{rt}:{}", p.code))
                .collect();
            let revincludes: Vec<String> = RESOURCE_TYPES
                .iter()
                .flat_map(|other| {
                    fhir.registry
                        .params_of(other)
                        .filter(|p| {
                            p.ptype == crate::fhir::registry::ParamType::Reference
                                && (p.targets.is_empty() || p.targets.iter().any(|t| t == rt))
                        })
                        .map(move |p| format!("{other}:{}", p.code))
                })
                .collect();
            let operation: Vec<Value> = ops
                .iter()
                .filter(|(t, _, _)| t == rt)
                .map(|(_, name, url)| json!({"name": name, "definition": url}))
                .collect();
            let mut r = json!({
                "type": rt,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{rt}"),
                "interaction": TYPE_INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "local"],
                "searchInclude": includes,
                "searchRevInclude": revincludes,
                "searchParam": params,
            });
            if !operation.is_empty() {
                r["operation"] = Value::Array(operation);
            }
            if *rt == "Subscription" {
                // Subscriptions Backport IG: the topics offered.
                r["extension"] = Value::Array(
                    crate::notify::topics::all()
                        .iter()
                        .map(|t| json!({"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                                        "valueCanonical": t.url}))
                        .collect(),
                );
                r["supportedProfile"] = json!([
                    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
                ]);
            }
            if *rt == "AuditEvent" {
                // Written by the server only, read by administrators.
                r["interaction"] = json!([{"code": "read"}, {"code": "vread"},
                    {"code": "search-type"}, {"code": "history-instance"}, {"code": "history-type"}]);
                for k in ["updateCreate", "conditionalCreate", "conditionalUpdate"] {
                    r[k] = json!(false);
                }
                r["conditionalDelete"] = json!("not-supported");
                // Its own store (`fhir::search::audit`) answers no reverse include, no `:text`
                // or `:contains`, and sorts by date, _lastUpdated or _id only.
                r["searchRevInclude"] = json!([]);
                r["documentation"] = json!("Append-only audit log (IHE BALP), hash-chained; administrators only. \
                    Search: no _revinclude, no :text or :contains modifier; _sort by date, _lastUpdated or _id.");
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "id": "fhir-scheduler",
        "url": format!("{base}/metadata"),
        "name": "FhirScheduler",
        "title": "fhir-scheduler FHIR R4 server",
        "status": "active",
        "experimental": false,
        "date": "2026-11-28",
        "publisher": "fhir-scheduler",
        "kind": "instance",
        "software": {"name": "fhir-scheduler", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "fhir-scheduler", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": security(base),
            "resource": resources,
            "interaction": [
                {"code": "transaction"},
                {"code": "batch"},
                {"code": "history-system"}
            ],
        }]
    })
}
