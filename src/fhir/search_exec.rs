//! Runs a planned search against the store and builds the searchset Bundle: matches, then
//! `_include`/`_revinclude` (and one `:iterate` level), paging links, `_total`, `_summary`,
//! `_elements`.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::fhir::access;
use crate::fhir::error::FhirResult;
use crate::fhir::search::{
    audit, include_query, revinclude_query, Include, SearchRequest, Summary, TotalMode,
};
use crate::fhir::structure::Structures;
use crate::fhir::Fhir;
use crate::store::sql::{Dialect, SqlQuery};
use crate::store::FoundRow;

/// Most resources `_include`/`_revinclude` add to one page.
pub const MAX_INCLUDES: usize = 1000;

/// The searchset Bundle as a Value (a batch's search entry).
pub async fn run(fhir: &Fhir, base: &str, rt: &str, req: &SearchRequest) -> FhirResult<Value> {
    let text = run_text(fhir, base, rt, req).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The searchset Bundle as JSON text. The matches' stored JSON goes into it as it is, unless
/// `_summary` or `_elements` reshape it: parsing twenty stored bodies into values to write
/// them out again was a quarter of the server's CPU in the slot search.
pub async fn run_text(
    fhir: &Fhir,
    base: &str,
    rt: &str,
    req: &SearchRequest,
) -> FhirResult<String> {
    let dialect = fhir.store.dialect();
    let total = if req.count_only() || req.total != TotalMode::None {
        Some(
            fhir.store
                .count(&req.count_query(&fhir.registry, dialect))
                .await?,
        )
    } else {
        None
    };
    let mut rows = if req.count_only() || req.count == 0 {
        Vec::new()
    } else {
        fhir.store
            .find(&req.page_query(&fhir.registry, dialect))
            .await?
    };
    let has_next = rows.len() > req.count;
    rows.truncate(req.count);
    // The caller's criteria already narrowed the search; this is the last word on each row.
    let guard = access::current();
    let visible = |r: &FoundRow| {
        guard.unrestricted()
            || serde_json::from_str::<Value>(&r.body).is_ok_and(|b| {
                let t = b["resourceType"].as_str().unwrap_or_default();
                fhir.may_see(guard.as_ref(), t, &b)
            })
    };
    rows.retain(|r| visible(r));
    // Without a count query the total is still known when this is the last page.
    let total = total.or((!has_next && req.count > 0).then(|| (req.offset + rows.len()) as i64));

    let mut seen: HashSet<i64> = rows.iter().map(|r| r.rid).collect();
    let mut entries: Vec<String> = rows
        .iter()
        .map(|r| entry(base, rt, r, "match", req, &fhir.structures))
        .collect();

    if !rows.is_empty() && (!req.include.is_empty() || !req.revinclude.is_empty()) {
        let rids: Vec<i64> = rows.iter().map(|r| r.rid).collect();
        let mut included = Vec::new();
        let first = if rt == audit::AUDIT {
            // The audit store's references are read from the page's bodies.
            let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
            audit::include_query(&fhir.registry, &req.include, &bodies, MAX_INCLUDES, dialect)
        } else {
            include_query(&req.include, &rids, MAX_INCLUDES, dialect)
        };
        if let Some(q) = first {
            included.extend(fhir.store.find(&q).await?);
        }
        for q in revinclude_queries(&req.revinclude, &rids, dialect) {
            included.extend(fhir.store.find(&q).await?);
        }
        // `:iterate`: one more level, from what was just included.
        let iter_inc: Vec<_> = req.include.iter().filter(|i| i.iterate).cloned().collect();
        let iter_rev: Vec<_> = req
            .revinclude
            .iter()
            .filter(|i| i.iterate)
            .cloned()
            .collect();
        let level1: Vec<i64> = included.iter().map(|r| r.rid).collect();
        if !level1.is_empty() {
            if let Some(q) = include_query(&iter_inc, &level1, MAX_INCLUDES, dialect) {
                included.extend(fhir.store.find(&q).await?);
            }
            for q in revinclude_queries(&iter_rev, &level1, dialect) {
                included.extend(fhir.store.find(&q).await?);
            }
        }
        for r in included {
            if visible(&r) && seen.insert(r.rid) {
                let t = r.res_type.clone();
                entries.push(entry(base, &t, &r, "include", req, &fhir.structures));
            }
        }
    }

    let self_url = format!("{base}/{rt}?{}", req.link_query(req.offset));
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if has_next {
        links.push(json!({"relation": "next",
            "url": format!("{base}/{rt}?{}", req.link_query(req.offset + req.count))}));
    }
    if req.offset > 0 {
        links.push(json!({"relation": "previous",
            "url": format!("{base}/{rt}?{}", req.link_query(req.offset.saturating_sub(req.count)))}));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": crate::fhir::datetime::format_instant(crate::fhir::datetime::now_micros())},
        "type": "searchset",
    });
    if let Some(t) = total {
        bundle["total"] = json!(t);
    }
    bundle["link"] = Value::Array(links);
    let mut text = bundle.to_string();
    if !entries.is_empty() {
        // The head is an object: its closing brace is the last character.
        text.pop();
        text.push_str(",\"entry\":[");
        text.push_str(&entries.join(","));
        text.push_str("]}");
    }
    Ok(text)
}

/// `_revinclude`: of other resources over their index rows, of AuditEvents over the audit
/// store.
fn revinclude_queries(revincludes: &[Include], rids: &[i64], dialect: Dialect) -> Vec<SqlQuery> {
    let (audit, other): (Vec<Include>, Vec<Include>) = revincludes
        .iter()
        .cloned()
        .partition(|i| i.source_type == audit::AUDIT);
    revinclude_query(&other, rids, MAX_INCLUDES, dialect)
        .into_iter()
        .chain(audit::revinclude_query(&audit, rids, MAX_INCLUDES, dialect))
        .collect()
}

fn entry(
    base: &str,
    rt: &str,
    row: &FoundRow,
    mode: &str,
    req: &SearchRequest,
    structures: &Structures,
) -> String {
    let resource = if req.summary.is_none() && req.elements.is_none() && row.body.starts_with('{') {
        // Stored bodies are JSON objects the server wrote.
        Cow::Borrowed(row.body.as_str())
    } else {
        let resource: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
        let resource = subset(resource, req.summary, req.elements.as_deref(), structures);
        Cow::Owned(resource.to_string())
    };
    let full_url = Value::String(format!("{base}/{rt}/{}", row.id));
    format!("{{\"fullUrl\":{full_url},\"resource\":{resource},\"search\":{{\"mode\":\"{mode}\"}}}}")
}

/// `_summary` and `_elements`: keep what was asked for plus what must always be there
/// (resourceType, id, meta and the resource's mandatory elements), and tag the result
/// SUBSETTED as the spec asks.
pub fn subset(
    resource: Value,
    summary: Option<Summary>,
    elements: Option<&[String]>,
    structures: &Structures,
) -> Value {
    let Value::Object(obj) = resource else {
        return resource;
    };
    let rt = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let keep_always =
        |k: &str| matches!(k, "resourceType" | "id" | "meta") || structures.is_required(&rt, k);
    let keep: Box<dyn Fn(&str) -> bool> = match (summary, elements) {
        (Some(Summary::True), _) => {
            Box::new(|k: &str| keep_always(k) || structures.is_summary(&rt, k))
        }
        (Some(Summary::Text), _) => Box::new(|k: &str| keep_always(k) || k == "text"),
        (Some(Summary::Data), _) => Box::new(|k: &str| k != "text"),
        (_, Some(els)) => {
            let els: Vec<String> = els.to_vec();
            Box::new(move |k: &str| keep_always(k) || els.iter().any(|e| e == k))
        }
        _ => return Value::Object(obj),
    };
    let before = obj.len();
    let mut out: Map<String, Value> = obj.into_iter().filter(|(k, _)| keep(k)).collect();
    if out.len() < before {
        let meta = out
            .entry("meta")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.entry("tag").or_insert_with(|| json!([])));
        if let Some(Value::Array(tags)) = meta {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted"
            }));
        }
    }
    Value::Object(out)
}
