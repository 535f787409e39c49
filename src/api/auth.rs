//! Authentication of every request, before any handler: the bearer token becomes the caller's
//! guard (`fhir::access`), inside which the request runs. What each caller may do is decided
//! by `auth::policy`, not here and not in handlers. Every FHIR request — answered, refused or
//! unauthenticated — is put on record as an AuditEvent (`audit`) before its answer leaves.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::audit::{Record, RestInteraction};
use crate::auth::Principal;
use crate::fhir::access;
use crate::fhir::FhirError;

/// Paths anyone may call: discovery, the CapabilityStatement, the authorization server's own
/// endpoints, liveness, metrics, the API documents and the subscription websocket (whose
/// frames carry their own binding token). None of them touches resources without one.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/health"
            | "/metrics"
            | "/fhir/metadata"
            | "/.well-known/smart-configuration"
            | "/fhir/.well-known/smart-configuration"
            | "/.well-known/openid-configuration"
            | "/fhir/.well-known/openid-configuration"
            | "/openapi.json"
            // The websocket channel: bound by a token from `$get-ws-binding-token`, which
            // only a caller allowed to read the subscriptions gets (`api::ws`).
            | "/ws/subscriptions"
    ) || path.starts_with("/auth/")
        || path.starts_with("/docs")
}

/// What a FHIR request is, for its audit record: the interaction (or operation) and the
/// resources its URL names.
fn classify(method: &Method, path: &str) -> (Result<RestInteraction, String>, Vec<String>) {
    use RestInteraction as I;
    let rest = path.strip_prefix("/fhir").unwrap_or(path).trim_matches('/');
    let seg: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let op = |s: &str| Err(s.trim_start_matches('$').to_string());
    let m = method.as_str();
    match seg.as_slice() {
        [] => (Ok(I::Batch), vec![]),
        ["_history"] => (Ok(I::HistorySystem), vec![]),
        ["_async", _] => (op("async-status"), vec![]),
        [_] => (
            Ok(match m {
                "POST" => I::Create,
                "PUT" => I::Update,
                "DELETE" => I::Delete,
                _ => I::SearchType,
            }),
            vec![],
        ),
        [_, "_search"] => (Ok(I::SearchType), vec![]),
        [_, "_history"] => (Ok(I::HistoryType), vec![]),
        [_, o] if o.starts_with('$') => (op(o), vec![]),
        [rt, id] => (
            Ok(match m {
                "PUT" => I::Update,
                "PATCH" => I::Patch,
                "DELETE" => I::Delete,
                _ => I::Read,
            }),
            vec![format!("{rt}/{id}")],
        ),
        [rt, id, "_history"] => (Ok(I::HistoryInstance), vec![format!("{rt}/{id}")]),
        [rt, id, "_history", v] => (Ok(I::Vread), vec![format!("{rt}/{id}/_history/{v}")]),
        [rt, id, o] => (op(o), vec![format!("{rt}/{id}")]),
        _ => (Ok(I::Read), vec![]),
    }
}

fn record_for(
    method: &Method,
    path: &str,
    query: Option<&str>,
    status: u16,
    location: Option<&str>,
    principal: Option<&Principal>,
    from: Option<SocketAddr>,
) -> Record {
    let (what, mut entities) = classify(method, path);
    let mut r = match what {
        Ok(i) => Record::rest(i, status),
        Err(op) => Record::operation(&op, status),
    };
    // A create names what it made only in its answer.
    if let Some(loc) = location {
        if let Some(i) = loc.find("/fhir/") {
            entities.push(loc[i + 6..].to_string());
        }
    }
    for e in &entities {
        r = r.entity(e.clone());
        if e.starts_with("Patient/") {
            let id = e.split('/').take(2).collect::<Vec<_>>().join("/");
            r = r.patient(id);
        }
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        r = r.query(q.to_string());
    }
    if let Some(p) = principal {
        r = r
            .who(
                p.fhir_user
                    .clone()
                    .unwrap_or_else(|| format!("user:{}", p.subject)),
            )
            .role(p.role.as_str())
            .client(p.client_id.clone());
        if r.patient.is_none() {
            if let Some(pid) = &p.patient {
                r = r.patient(format!("Patient/{pid}"));
            }
        }
    }
    if let Some(a) = from {
        r = r.source_addr(a.to_string());
    }
    r
}

pub async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if is_open(&path) {
        return next.run(req).await;
    }
    let audited = path.starts_with("/fhir");
    // Refuse before acting when the audit log cannot take the record.
    if audited && !st.audit.is_healthy() {
        return ApiError(FhirError::Internal("the audit log is unavailable".into()))
            .into_response();
    }
    let method = req.method().clone();
    let query = req.uri().query().map(String::from);
    let from = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let (resp, principal) = match st.auth.authenticate(authorization.as_deref()).await {
        Ok(caller) => (
            access::scope(caller.guard, next.run(req)).await,
            caller.principal,
        ),
        Err(e) => (ApiError(e).into_response(), None),
    };
    if !audited {
        return resp;
    }
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let rec = record_for(
        &method,
        &path,
        query.as_deref(),
        resp.status().as_u16(),
        location.as_deref(),
        principal.as_ref(),
        from,
    );
    match st.audit.record(rec).await {
        Ok(()) => resp,
        Err(e) => ApiError(FhirError::from(e)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_interactions_and_entities() {
        let c = |m: Method, p: &str| {
            let (w, e) = classify(&m, p);
            (w.map(|i| i.code().to_string()), e)
        };
        assert_eq!(
            c(Method::GET, "/fhir/Patient/1"),
            (Ok("read".into()), vec!["Patient/1".into()])
        );
        assert_eq!(
            c(Method::GET, "/fhir/Patient"),
            (Ok("search-type".into()), vec![])
        );
        assert_eq!(
            c(Method::POST, "/fhir/Patient"),
            (Ok("create".into()), vec![])
        );
        assert_eq!(
            c(Method::POST, "/fhir/Patient/_search").0,
            Ok("search-type".into())
        );
        assert_eq!(c(Method::PATCH, "/fhir/Patient/1").0, Ok("patch".into()));
        assert_eq!(
            c(Method::GET, "/fhir/Patient/1/_history/2").1,
            vec!["Patient/1/_history/2".to_string()]
        );
        assert_eq!(
            c(Method::POST, "/fhir/Appointment/$book").0,
            Err("book".into())
        );
        assert_eq!(
            c(Method::POST, "/fhir/Appointment/9/$cancel"),
            (Err("cancel".into()), vec!["Appointment/9".into()])
        );
        assert_eq!(c(Method::POST, "/fhir").0, Ok("batch".into()));
        assert_eq!(
            c(Method::GET, "/fhir/_history").0,
            Ok("history-system".into())
        );
    }
}
