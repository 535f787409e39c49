//! Bundles: searchset and history results, and batch/transaction processing
//! (FHIR R4 http §3.1.0.11). A transaction runs in one store transaction: all or nothing.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::fhir::access::{self, Interaction};
use crate::fhir::datetime::format_instant;
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::{operation_outcome, IssueCode};
use crate::fhir::service::{check_id, Fhir, Written};
use crate::fhir::validate;
use crate::store::{HistoryEntry, HistoryScope, StoreTx, Stored};

/// `W/"n"`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// A history Bundle (newest first).
pub fn history_bundle(
    base: &str,
    entries: &[HistoryEntry],
    total: i64,
    self_link: &str,
    next_link: Option<String>,
) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|h| {
            let s = &h.stored;
            let url = format!("{}/{}", s.res_type, s.id);
            let mut e = Map::new();
            e.insert("fullUrl".into(), json!(format!("{base}/{url}")));
            if !s.deleted {
                if let Ok(v) = serde_json::from_str::<Value>(&s.body) {
                    e.insert("resource".into(), v);
                }
            }
            let (method, status) = match h.method.as_str() {
                "POST" => ("POST", "201 Created"),
                "DELETE" => ("DELETE", "204 No Content"),
                "PATCH" => ("PATCH", "200 OK"),
                _ if s.version == 1 => ("PUT", "201 Created"),
                _ => ("PUT", "200 OK"),
            };
            let req_url = if method == "POST" {
                s.res_type.clone()
            } else {
                url
            };
            e.insert("request".into(), json!({"method": method, "url": req_url}));
            e.insert(
                "response".into(),
                json!({
                    "status": status,
                    "etag": etag(s.version),
                    "lastModified": format_instant(s.last_updated),
                }),
            );
            Value::Object(e)
        })
        .collect();
    let mut links = vec![json!({"relation": "self", "url": self_link})];
    if let Some(n) = next_link {
        links.push(json!({"relation": "next", "url": n}));
    }
    let mut b = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "history",
        "total": total,
        "link": links,
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

/// Runs a history request and builds its Bundle.
pub async fn history(
    fhir: &Fhir,
    base: &str,
    scope: HistoryScope,
    since: Option<i64>,
    count: usize,
    offset: usize,
    path: &str,
) -> FhirResult<Value> {
    let guard = access::current();
    match &scope {
        HistoryScope::Instance(rt, _) => guard.allow(rt, Interaction::Read)?,
        _ if guard.unrestricted() => {}
        _ => {
            return Err(FhirError::Forbidden(
                "type and system history are open to unrestricted callers only".into(),
            ))
        }
    }
    let (entries, total) = fhir.store.history(&scope, since, count, offset).await?;
    if !guard.unrestricted() {
        // Every version must be one the caller may see (deleted versions carry no body).
        for e in entries.iter().filter(|e| !e.stored.deleted) {
            let body: Value = serde_json::from_str(&e.stored.body)
                .map_err(|err| FhirError::Internal(err.to_string()))?;
            if !fhir.may_see(guard.as_ref(), &e.stored.res_type, &body) {
                return Err(FhirError::Forbidden(format!(
                    "this {} is outside what the caller may see",
                    e.stored.res_type
                )));
            }
        }
    }
    let mut params = Vec::new();
    if let Some(s) = since {
        params.push(format!("_since={}", format_instant(s)));
    }
    params.push(format!("_count={count}"));
    let link = |off: usize| {
        let mut p = params.clone();
        if off > 0 {
            p.push(format!("_offset={off}"));
        }
        format!("{base}/{path}?{}", p.join("&"))
    };
    let next = ((offset + entries.len()) < total as usize).then(|| link(offset + count));
    Ok(history_bundle(base, &entries, total, &link(offset), next))
}

// ---------------------------------------------------------------- batch / transaction

/// One parsed Bundle entry request.
struct EntryRequest {
    method: String,
    url: String,
    if_match: Option<i64>,
    if_none_exist: Option<String>,
    full_url: Option<String>,
    resource: Option<Value>,
}

/// Processes a batch or transaction Bundle, returning the response Bundle.
pub async fn process(fhir: &Fhir, base: &str, bundle: Value) -> FhirResult<Value> {
    validate::resource_type_of(&bundle, Some("Bundle"))?;
    let kind = bundle["type"].as_str().unwrap_or_default().to_string();
    if kind != "batch" && kind != "transaction" {
        return Err(FhirError::invalid_at(
            IssueCode::Invalid,
            "Bundle.type",
            "Only batch and transaction Bundles can be posted to the base",
        ));
    }
    let raw_entries = match bundle.get("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(FhirError::invalid_at(
                IssueCode::Structure,
                "Bundle.entry",
                "Bundle.entry must be an array",
            ))
        }
    };
    let mut reqs = Vec::with_capacity(raw_entries.len());
    for (i, e) in raw_entries.into_iter().enumerate() {
        reqs.push(parse_entry(i, e)?);
    }
    if kind == "batch" {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(batch_entry(fhir, base, r).await);
        }
        Ok(response_bundle("batch-response", out))
    } else {
        transaction(fhir, base, reqs).await
    }
}

fn parse_entry(i: usize, e: Value) -> FhirResult<EntryRequest> {
    let at = |field: &str| format!("Bundle.entry[{i}].{field}");
    let req = e.get("request").ok_or_else(|| {
        FhirError::invalid_at(
            IssueCode::Required,
            &at("request"),
            "Each entry needs a request",
        )
    })?;
    let method = req["method"].as_str().unwrap_or_default().to_uppercase();
    if !matches!(
        method.as_str(),
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
    ) {
        return Err(FhirError::invalid_at(
            IssueCode::Value,
            &at("request.method"),
            "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE",
        ));
    }
    let url = req["url"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            FhirError::invalid_at(
                IssueCode::Required,
                &at("request.url"),
                "request.url is required",
            )
        })?
        .trim_start_matches('/')
        .to_string();
    let if_match = match req.get("ifMatch").and_then(Value::as_str) {
        Some(m) => Some(parse_etag(m).ok_or_else(|| {
            FhirError::invalid_at(
                IssueCode::Value,
                &at("request.ifMatch"),
                "ifMatch must be W/\"n\"",
            )
        })?),
        None => None,
    };
    let resource = e.get("resource").cloned();
    if matches!(method.as_str(), "POST" | "PUT") && resource.is_none() {
        return Err(FhirError::invalid_at(
            IssueCode::Required,
            &at("resource"),
            "POST and PUT entries need a resource",
        ));
    }
    Ok(EntryRequest {
        method,
        url,
        if_match,
        if_none_exist: req["ifNoneExist"].as_str().map(String::from),
        full_url: e["fullUrl"].as_str().map(String::from),
        resource,
    })
}

/// Parses `W/"3"` or `"3"` or `3`.
pub fn parse_etag(v: &str) -> Option<i64> {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": kind,
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

fn written_entry(base: &str, w: &Written) -> Value {
    let s = &w.stored;
    let status = if w.created { "201 Created" } else { "200 OK" };
    let mut e = json!({
        "fullUrl": format!("{base}/{}/{}", s.res_type, s.id),
        "response": {
            "status": status,
            "location": format!("{}/{}/_history/{}", s.res_type, s.id, s.version),
            "etag": etag(s.version),
            "lastModified": format_instant(s.last_updated),
        }
    });
    if let Ok(v) = serde_json::from_str::<Value>(&s.body) {
        e["resource"] = v;
    }
    e
}

fn read_entry(base: &str, s: &Stored) -> Value {
    let mut e = json!({
        "fullUrl": format!("{base}/{}/{}", s.res_type, s.id),
        "response": {
            "status": "200 OK",
            "etag": etag(s.version),
            "lastModified": format_instant(s.last_updated),
        }
    });
    if let Ok(v) = serde_json::from_str::<Value>(&s.body) {
        e["resource"] = v;
    }
    e
}

fn error_entry(err: &FhirError) -> Value {
    let (status, issues) = crate::fhir::error::status_and_issues(err);
    json!({"response": {"status": status.to_string(), "outcome": operation_outcome(&issues)}})
}

/// The URL of an entry split into type, id, version and query.
struct Target<'a> {
    rt: &'a str,
    id: Option<&'a str>,
    vid: Option<&'a str>,
    query: Option<&'a str>,
}

fn split_url(url: &str) -> FhirResult<Target<'_>> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let t = match parts.as_slice() {
        [rt] => Target {
            rt,
            id: None,
            vid: None,
            query,
        },
        [rt, id] => Target {
            rt,
            id: Some(id),
            vid: None,
            query,
        },
        [rt, id, "_history", vid] => Target {
            rt,
            id: Some(id),
            vid: Some(vid),
            query,
        },
        _ => {
            return Err(FhirError::invalid(
                IssueCode::NotSupported,
                format!("Unsupported entry URL: {url}"),
            ))
        }
    };
    Ok(t)
}

async fn batch_entry(fhir: &Fhir, base: &str, r: EntryRequest) -> Value {
    let result: FhirResult<Value> = async {
        match r.method.as_str() {
            "GET" | "HEAD" => read_or_search(fhir, base, &r.url).await,
            "POST" => {
                let t = split_url(&r.url)?;
                let body = r.resource.clone().unwrap_or_default();
                let w = fhir.create(t.rt, body, r.if_none_exist.as_deref()).await?;
                Ok(written_entry(base, &w))
            }
            "PUT" => {
                let t = split_url(&r.url)?;
                let body = r.resource.clone().unwrap_or_default();
                let w = match (t.id, t.query) {
                    (Some(id), _) => fhir.update(t.rt, id, body, r.if_match).await?,
                    (None, Some(q)) => fhir.conditional_update(t.rt, q, body).await?,
                    _ => return Err(missing_id(&r.url)),
                };
                Ok(written_entry(base, &w))
            }
            "PATCH" => {
                let t = split_url(&r.url)?;
                let id = t.id.ok_or_else(|| missing_id(&r.url))?;
                let patch = patch_document(r.resource.as_ref())?;
                let w = fhir.patch(t.rt, id, patch, r.if_match).await?;
                Ok(written_entry(base, &w))
            }
            _ => {
                let t = split_url(&r.url)?;
                match (t.id, t.query) {
                    (Some(id), _) => fhir.delete(t.rt, id).await?,
                    (None, Some(q)) => fhir.conditional_delete(t.rt, q).await?,
                    _ => return Err(missing_id(&r.url)),
                }
                Ok(json!({"response": {"status": "204 No Content"}}))
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| error_entry(&e))
}

fn missing_id(url: &str) -> FhirError {
    FhirError::invalid(
        IssueCode::Invalid,
        format!("The entry URL {url} names no resource"),
    )
}

/// A PATCH entry carries its JSON Patch as a Binary resource (base64 `data`) or, leniently,
/// as a bare JSON array.
fn patch_document(resource: Option<&Value>) -> FhirResult<Value> {
    let bad = || {
        FhirError::invalid(
            IssueCode::Invalid,
            "A PATCH entry needs a Binary with a JSON Patch",
        )
    };
    let r = resource.ok_or_else(bad)?;
    if r.is_array() {
        return Ok(r.clone());
    }
    if r["resourceType"] == "Binary" {
        let data = r["data"].as_str().ok_or_else(bad)?;
        let bytes = base64_decode(data).ok_or_else(bad)?;
        return serde_json::from_slice(&bytes).map_err(|_| bad());
    }
    Err(bad())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

async fn read_or_search(fhir: &Fhir, base: &str, url: &str) -> FhirResult<Value> {
    let t = split_url(url)?;
    match (t.id, t.vid) {
        (Some(id), None) => Ok(read_entry(base, &fhir.read(t.rt, id).await?)),
        (Some(id), Some(vid)) => Ok(read_entry(base, &fhir.vread(t.rt, id, vid).await?)),
        (None, _) => {
            let pairs: Vec<(String, String)> =
                form_urlencoded::parse(t.query.unwrap_or_default().as_bytes())
                    .into_owned()
                    .collect();
            let req = fhir.parse_search(t.rt, &pairs, false)?;
            let b = crate::fhir::search_exec::run(fhir, base, t.rt, &req).await?;
            Ok(json!({"resource": b, "response": {"status": "200 OK"}}))
        }
    }
}

/// Transaction processing: ids for POSTs are assigned up front so `urn:uuid:` references can
/// be rewritten, conditional references resolved, then entries run in the spec's order
/// (DELETE, POST, PUT/PATCH, GET) inside one store transaction.
async fn transaction(fhir: &Fhir, base: &str, mut reqs: Vec<EntryRequest>) -> FhirResult<Value> {
    let mut tx = fhir.store.begin().await?;
    let result = transaction_in(fhir, base, tx.as_mut(), &mut reqs).await;
    match result {
        Ok(entries) => {
            tx.commit().await?;
            Ok(response_bundle("transaction-response", entries))
        }
        Err(e) => Err(e), // dropping `tx` rolls back
    }
}

async fn transaction_in(
    fhir: &Fhir,
    base: &str,
    tx: &mut dyn StoreTx,
    reqs: &mut [EntryRequest],
) -> FhirResult<Vec<Value>> {
    // 1. Assign ids to POSTs (or resolve their If-None-Exist) and remember fullUrl → Type/id.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut post_ids: Vec<Option<String>> = vec![None; reqs.len()];
    let mut matched: Vec<Option<Stored>> = vec![None; reqs.len()];
    for (i, r) in reqs.iter().enumerate() {
        let t = split_url(&r.url)?;
        fhir.check_type(t.rt)?;
        if r.method == "POST" {
            if let Some(cond) = &r.if_none_exist {
                let found = fhir.find_in(tx, t.rt, cond).await?;
                if found.len() > 1 {
                    return Err(FhirError::MultipleMatches(format!(
                        "entry {i}: If-None-Exist matched {} resources",
                        found.len()
                    )));
                }
                if let Some(id) = found.first() {
                    if let Some(fu) = &r.full_url {
                        ids.insert(fu.clone(), format!("{}/{id}", t.rt));
                    }
                    matched[i] = tx.read(t.rt, id).await?;
                    continue;
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            if let Some(fu) = &r.full_url {
                ids.insert(fu.clone(), format!("{}/{id}", t.rt));
            }
            post_ids[i] = Some(id);
        } else if r.method == "PUT" {
            if let (Some(fu), Some(id)) = (&r.full_url, t.id) {
                check_id(id)?;
                ids.insert(fu.clone(), format!("{}/{id}", t.rt));
            }
        }
    }
    // 2. Rewrite references: urn:uuid/fullUrl → Type/id; conditional references → the match.
    for r in reqs.iter_mut() {
        if let Some(res) = r.resource.as_mut() {
            let mut conditional = Vec::new();
            rewrite_references(res, &ids, &mut conditional);
            for cref in conditional {
                let (rt, q) = cref.split_once('?').unwrap_or((&cref, ""));
                fhir.check_type(rt)?;
                let found = fhir.find_in(tx, rt, q).await?;
                if found.len() != 1 {
                    return Err(FhirError::PreconditionFailed(format!(
                        "The conditional reference {cref} matched {} resources",
                        found.len()
                    )));
                }
                ids.insert(cref.clone(), format!("{rt}/{}", found[0]));
            }
            rewrite_references(res, &ids, &mut Vec::new());
        }
    }
    // 3. Run in order: DELETE, POST, PUT/PATCH, GET/HEAD.
    let order = |m: &str| match m {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    };
    let mut idx: Vec<usize> = (0..reqs.len()).collect();
    idx.sort_by_key(|&i| order(&reqs[i].method));
    let mut out: Vec<Value> = vec![Value::Null; reqs.len()];
    for i in idx {
        let r = &reqs[i];
        let t = split_url(&r.url)?;
        let fail = |e: FhirError| prefix_error(i, e);
        out[i] = match r.method.as_str() {
            "DELETE" => {
                match (t.id, t.query) {
                    (Some(id), _) => fhir.delete_in(tx, t.rt, id).await.map_err(fail)?,
                    (None, Some(q)) => fhir
                        .conditional_delete_in(tx, t.rt, q)
                        .await
                        .map_err(fail)?,
                    _ => return Err(fail(missing_id(&r.url))),
                }
                json!({"response": {"status": "204 No Content"}})
            }
            "POST" => {
                if let Some(existing) = matched[i].take() {
                    written_entry(
                        base,
                        &Written {
                            stored: existing,
                            created: false,
                        },
                    )
                } else {
                    let body = r.resource.clone().unwrap_or_default();
                    fhir.validate(t.rt, &body).map_err(fail)?;
                    let w = fhir
                        .create_in(tx, t.rt, body, post_ids[i].clone(), None)
                        .await
                        .map_err(fail)?;
                    written_entry(base, &w)
                }
            }
            "PUT" => {
                let body = r.resource.clone().unwrap_or_default();
                fhir.validate(t.rt, &body).map_err(fail)?;
                let w = match (t.id, t.query) {
                    (Some(id), _) => {
                        check_id(id).map_err(fail)?;
                        if body
                            .get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|b| b != id)
                        {
                            return Err(fail(FhirError::invalid_at(
                                IssueCode::Invalid,
                                "id",
                                "The id in the resource differs from the entry URL",
                            )));
                        }
                        fhir.update_in(tx, t.rt, id, body, r.if_match)
                            .await
                            .map_err(fail)?
                    }
                    (None, Some(q)) => fhir
                        .conditional_update_in(tx, t.rt, q, body)
                        .await
                        .map_err(fail)?,
                    _ => return Err(fail(missing_id(&r.url))),
                };
                written_entry(base, &w)
            }
            "PATCH" => {
                let id = t.id.ok_or_else(|| fail(missing_id(&r.url)))?;
                let patch = patch_document(r.resource.as_ref()).map_err(fail)?;
                let w = fhir
                    .patch_in(tx, t.rt, id, patch, r.if_match)
                    .await
                    .map_err(fail)?;
                written_entry(base, &w)
            }
            _ => {
                let id = t.id.ok_or_else(|| {
                    fail(FhirError::NotSupported(
                        "searches inside a transaction are not supported; use a batch".into(),
                    ))
                })?;
                match tx.read(t.rt, id).await? {
                    Some(s) if !s.deleted => read_entry(base, &s),
                    Some(_) => return Err(fail(FhirError::Deleted(format!("{}/{id}", t.rt)))),
                    None => return Err(fail(FhirError::NotFound(format!("{}/{id}", t.rt)))),
                }
            }
        };
    }
    Ok(out)
}

/// Adds the failing entry's position to an error's issues.
fn prefix_error(i: usize, e: FhirError) -> FhirError {
    match e {
        FhirError::Invalid(mut issues) => {
            for is in &mut issues {
                is.diagnostics = format!("Bundle.entry[{i}]: {}", is.diagnostics);
            }
            FhirError::Invalid(issues)
        }
        other => other,
    }
}

/// Replaces every `reference` that names a key of `ids`; collects conditional references
/// (`Type?query`) that are not yet resolved.
fn rewrite_references(v: &mut Value, ids: &HashMap<String, String>, conditional: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "reference" {
                    if let Value::String(s) = child {
                        if let Some(to) = ids.get(s.as_str()) {
                            *s = to.clone();
                        } else if s.contains('?') && !s.starts_with("urn:") {
                            conditional.push(s.clone());
                        }
                    }
                } else {
                    rewrite_references(child, ids, conditional);
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                rewrite_references(i, ids, conditional);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_parse() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("W/\"x\""), None);
    }

    #[test]
    fn base64_roundtrip() {
        assert_eq!(base64_decode("W10=").unwrap(), b"[]");
    }

    #[test]
    fn references_are_rewritten() {
        let mut ids = HashMap::new();
        ids.insert("urn:uuid:1".to_string(), "Patient/abc".to_string());
        let mut v = json!({"participant":[{"actor":{"reference":"urn:uuid:1"}},
                                          {"actor":{"reference":"Practitioner?identifier=x|1"}}]});
        let mut cond = Vec::new();
        rewrite_references(&mut v, &ids, &mut cond);
        assert_eq!(v["participant"][0]["actor"]["reference"], "Patient/abc");
        assert_eq!(cond, vec!["Practitioner?identifier=x|1".to_string()]);
    }
}
