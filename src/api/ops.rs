//! FHIR operations (`$name`) over HTTP: parameters from the query or a Parameters body,
//! dispatch, and the FHIR asynchronous pattern (`Prefer: respond-async` → 202 + status URL).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::negotiate::{
    json_value, negotiate, read_body, require_content_type, set_header, Negotiated, RESOURCE_MEDIA,
};
use crate::api::rest::{base_url, pairs};
use crate::api::AppState;
use crate::booking::params::OpParams;
use crate::booking::result_bundle;
use crate::fhir::access;
use crate::fhir::bundle::etag;
use crate::fhir::datetime::format_instant;
use crate::fhir::error::FhirResult;
use crate::fhir::FhirError;

/// Finished and running asynchronous requests, by id (in memory: a restart forgets them).
/// A job's owner (the caller's subject) and, once finished, its status and body.
type Job = (String, Option<(u16, Value)>);

/// Each job is kept for the caller who started it: another caller is told it does not exist.
#[derive(Default)]
pub struct AsyncJobs {
    jobs: Mutex<HashMap<String, Job>>,
}

impl AsyncJobs {
    fn start(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let owner = access::current().subject().to_string();
        if let Ok(mut j) = self.jobs.lock() {
            j.insert(id.clone(), (owner, None));
        }
        id
    }

    fn finish(&self, id: &str, status: u16, body: Value) {
        if let Ok(mut j) = self.jobs.lock() {
            if let Some(job) = j.get_mut(id) {
                job.1 = Some((status, body));
            }
        }
    }

    fn get(&self, id: &str) -> Option<Option<(u16, Value)>> {
        let me = access::current();
        let jobs = self.jobs.lock().ok()?;
        let (owner, result) = jobs.get(id)?;
        (owner == me.subject()).then(|| result.clone())
    }
}

async fn params(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
    q: &Option<String>,
    body: Body,
) -> ApiResult<OpParams> {
    if method == Method::GET {
        return Ok(OpParams::from_query(&pairs(q)));
    }
    require_content_type(headers, &RESOURCE_MEDIA)?;
    let bytes = read_body(body, st.settings.body_limit).await?;
    let value = crate::fhir::validate::parse_json(&bytes)?;
    let mut p = OpParams::from_body(value)?;
    p.values.extend(OpParams::from_query(&pairs(q)).values);
    Ok(p)
}

/// `GET|POST [base]/[type]/$op`.
pub async fn type_operation(
    State(st): State<AppState>,
    Path((rt, op)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    st.fhir.check_type(&rt)?;
    let p = params(&st, &method, &headers, &q, body).await?;
    dispatch(st, rt, None, op, p, method, headers, n).await
}

/// `POST [base]/[type]/[id]/$op`.
pub async fn instance_operation(
    State(st): State<AppState>,
    Path((rt, id, op)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    st.fhir.check_type(&rt)?;
    if !op.starts_with('$') {
        return Err(ApiError(FhirError::NotFound(format!("{rt}/{id}/{op}"))));
    }
    let p = params(&st, &method, &headers, &q, body).await?;
    dispatch(st, rt, Some(id), op, p, method, headers, n).await
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    st: AppState,
    rt: String,
    id: Option<String>,
    op: String,
    p: OpParams,
    method: Method,
    headers: HeaderMap,
    n: Negotiated,
) -> ApiResult<Response> {
    let guard = access::current();
    guard.allow_operation(&rt, &op)?;
    if let Some(me) = guard.patient() {
        // A patient acts for themself only (e.g. `$find?patient=` would reveal another's clashes).
        if p.texts("patient")
            .iter()
            .any(|other| other.trim_start_matches("Patient/") != me)
        {
            return Err(ApiError(FhirError::Forbidden(
                "a patient may only name themself in an operation".into(),
            )));
        }
    }
    let base = base_url(&st, &headers);
    let writes = method == Method::POST;
    match (rt.as_str(), op.as_str(), writes) {
        ("Appointment", "$hold", true) | ("Appointment", "$book", true) => {
            let name = op.trim_start_matches('$').to_string();
            if n.respond_async {
                return Ok(run_async(st, base, name, id, p));
            }
            let (status, bundle, expires, location) =
                booking(&st, &base, &name, id.as_deref(), &p).await?;
            let mut resp = json_value(status, &bundle, &n);
            if let Some(e) = expires {
                set_header(&mut resp, header::EXPIRES, &format_instant(e));
            }
            if let Some((loc, version)) = location {
                set_header(&mut resp, header::LOCATION, &loc);
                set_header(&mut resp, header::ETAG, &etag(version));
            }
            Ok(resp)
        }
        ("Appointment", "$cancel", true) => {
            let id = id.ok_or_else(|| {
                ApiError(FhirError::invalid(
                    crate::fhir::outcome::IssueCode::Invalid,
                    "$cancel works on one appointment: POST Appointment/[id]/$cancel",
                ))
            })?;
            let reason = p
                .json("reason")
                .cloned()
                .or_else(|| p.text("reason").map(|t| serde_json::json!({"text": t})));
            let s = st
                .queue
                .run("cancel", st.scheduler.cancel(&id, reason))
                .await?;
            let body: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
            let mut resp = json_value(StatusCode::OK, &body, &n);
            set_header(&mut resp, header::ETAG, &etag(s.version));
            Ok(resp)
        }
        ("Appointment", "$find", _) if id.is_none() => {
            let cache = &st.scheduler.actor_cache;
            let bundle = crate::booking::find::find(&st.fhir, cache, &base, &p).await?;
            Ok(json_value(StatusCode::OK, &bundle, &n))
        }
        ("Schedule", "$generate-slots", true) if id.is_some() => {
            let sid = id.clone().unwrap_or_default();
            let out = st
                .queue
                .run(
                    "generate-slots",
                    crate::booking::slots::generate_slots(&st.fhir, &sid, &p),
                )
                .await?;
            Ok(json_value(StatusCode::OK, &out, &n))
        }
        ("Schedule", "$conflicts", _) if id.is_some() => {
            let sid = id.clone().unwrap_or_default();
            let out = crate::booking::slots::conflicts(&st.fhir, &base, &sid).await?;
            Ok(json_value(StatusCode::OK, &out, &n))
        }
        ("Subscription", "$status", _) if id.is_some() => {
            let sid = id.clone().unwrap_or_default();
            let out = crate::notify::ops::status(&st.fhir, &st.auth.store, &base, &sid).await?;
            Ok(json_value(StatusCode::OK, &out, &n))
        }
        ("Subscription", "$events", _) if id.is_some() => {
            let sid = id.clone().unwrap_or_default();
            let out = crate::notify::ops::events(&st.fhir, &st.auth.store, &base, &sid, &p).await?;
            Ok(json_value(StatusCode::OK, &out, &n))
        }
        ("Subscription", "$get-ws-binding-token", _) => {
            let ids: Vec<String> = match &id {
                Some(i) => vec![i.clone()],
                None => p.texts("id").into_iter().map(String::from).collect(),
            };
            let out = crate::notify::websocket::issue(
                &st.fhir,
                &st.auth.store,
                &super::ws::url(&base),
                &ids,
            )
            .await?;
            Ok(json_value(StatusCode::OK, &out, &n))
        }
        (_, "$hold" | "$book" | "$cancel" | "$generate-slots", false) => Err(ApiError(
            FhirError::MethodNotAllowed(format!("{op} changes data: use POST")),
        )),
        _ => Err(ApiError(FhirError::NotSupported(format!(
            "Operation {op} is not defined on {rt}{}",
            if id.is_some() { " instances" } else { "" }
        )))),
    }
}

type BookingResult = (StatusCode, Value, Option<i64>, Option<(String, i64)>);

/// Runs `$hold`/`$book` through the admission queue.
async fn booking(
    st: &AppState,
    base: &str,
    op: &str,
    id: Option<&str>,
    p: &OpParams,
) -> FhirResult<BookingResult> {
    let result = if op == "hold" {
        st.queue.run("hold", st.scheduler.hold(p, id)).await?
    } else {
        st.queue.run("book", st.scheduler.book(p, id)).await?
    };
    let s = &result.appointment;
    let created = s.version == 1;
    let location = format!("{base}/Appointment/{}/_history/{}", s.id, s.version);
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        result_bundle(base, s),
        result.expires,
        Some((location, s.version)),
    ))
}

/// The FHIR asynchronous request pattern: 202 now, the result at `Content-Location` later.
fn run_async(st: AppState, base: String, op: String, id: Option<String>, p: OpParams) -> Response {
    let job = st.jobs.start();
    let status_url = format!("{base}/_async/{job}");
    let st2 = st.clone();
    access::spawn_as_caller(async move {
        let (status, body) = match booking(&st2, &base, &op, id.as_deref(), &p).await {
            Ok((status, bundle, _, _)) => (status.as_u16(), bundle),
            Err(e) => {
                let (status, issues) = crate::fhir::error::status_and_issues(&e);
                (status, crate::fhir::outcome::operation_outcome(&issues))
            }
        };
        st2.jobs.finish(&job, status, body);
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    set_header(&mut resp, header::CONTENT_LOCATION, &status_url);
    resp
}

/// `GET [base]/_async/{id}`: 202 while running; then the operation's status and body.
pub async fn async_status(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    match st.jobs.get(&id) {
        None => Err(ApiError(FhirError::NotFound(format!("async request {id}")))),
        Some(None) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            set_header(&mut r, header::RETRY_AFTER, "1");
            Ok(r)
        }
        Some(Some((status, body))) => Ok(json_value(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            &body,
            &n,
        )),
    }
}
