//! The FHIR RESTful API (R4 http page): instance, type and system interactions.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::negotiate::{
    http_date, json_text, json_value, negotiate, read_body, require_content_type, set_header,
    Negotiated, PreferReturn, RESOURCE_MEDIA,
};
use crate::api::{ops, AppState};
use crate::fhir::bundle::{self, etag, parse_etag};
use crate::fhir::outcome::{informational, IssueCode};
use crate::fhir::service::Written;
use crate::fhir::{capability, datetime, search_exec, validate, FhirError};
use crate::store::HistoryScope;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", post(system_bundle))
        .route("/metadata", get(metadata))
        .route("/_history", get(system_history))
        .route(
            "/{rt}",
            get(search_get)
                .post(create)
                .put(conditional_update)
                .delete(conditional_delete),
        )
        .route("/{rt}/_search", post(search_post))
        .route("/{rt}/_history", get(type_history))
        .route(
            "/{rt}/{id}",
            get(read)
                .put(update)
                .patch(patch)
                .delete(delete)
                .post(ops::type_operation),
        )
        .route("/{rt}/{id}/_history", get(instance_history))
        .route(
            "/{rt}/{id}/{op}",
            get(ops::instance_operation).post(ops::instance_operation),
        )
        .route("/_async/{job}", get(ops::async_status))
        .route("/{rt}/{id}/_history/{vid}", get(vread))
}

pub(crate) fn pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The FHIR base URL for links: configured, or from the request's Host.
pub(crate) fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(b) = &st.settings.base_url {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}/fhir")
}

fn stored_response(status: StatusCode, s: &crate::store::Stored, n: &Negotiated) -> Response {
    let mut resp = json_text(status, s.body.clone(), n);
    set_header(&mut resp, header::ETAG, &etag(s.version));
    set_header(&mut resp, header::LAST_MODIFIED, &http_date(s.last_updated));
    resp
}

fn written_response(base: &str, w: &Written, n: &Negotiated) -> Response {
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let s = &w.stored;
    let mut resp = match n.prefer_return {
        PreferReturn::Representation => json_text(status, s.body.clone(), n),
        PreferReturn::Minimal => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
        PreferReturn::OperationOutcome => json_value(
            status,
            &informational(&format!(
                "{}/{} {} as version {}",
                s.res_type,
                s.id,
                if w.created { "created" } else { "updated" },
                s.version
            )),
            n,
        ),
    };
    set_header(&mut resp, header::ETAG, &etag(s.version));
    set_header(&mut resp, header::LAST_MODIFIED, &http_date(s.last_updated));
    set_header(
        &mut resp,
        header::LOCATION,
        &format!("{base}/{}/{}/_history/{}", s.res_type, s.id, s.version),
    );
    resp
}

fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None => Ok(None),
        Some(v) => parse_etag(v).map(Some).ok_or_else(|| {
            ApiError(FhirError::invalid(
                IssueCode::Value,
                format!("If-Match must be a version ETag like W/\"1\", not {v}"),
            ))
        }),
    }
}

async fn resource_body(st: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Value> {
    require_content_type(headers, &RESOURCE_MEDIA)?;
    let bytes = read_body(body, st.settings.body_limit).await?;
    Ok(validate::parse_json(&bytes)?)
}

/// `GET /metadata`: the CapabilityStatement, generated from what the code supports.
async fn metadata(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    let cs = capability::capability_statement(&st.fhir, &base_url(&st, &headers));
    Ok(json_value(StatusCode::OK, &cs, &n))
}

async fn read(
    State(st): State<AppState>,
    Path((rt, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if id.starts_with('$') {
        // `GET [type]/$op`: a type-level operation, not a read.
        return ops::type_operation(
            State(st),
            Path((rt, id)),
            RawQuery(q),
            axum::http::Method::GET,
            headers,
            Body::empty(),
        )
        .await;
    }
    let n = negotiate(&headers, &pairs(&q))?;
    let s = st.fhir.read(&rt, &id).await?;
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if parse_etag(inm) == Some(s.version) {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(r);
        }
    }
    Ok(stored_response(StatusCode::OK, &s, &n))
}

async fn vread(
    State(st): State<AppState>,
    Path((rt, id, vid)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    let s = st.fhir.vread(&rt, &id, &vid).await?;
    Ok(stored_response(StatusCode::OK, &s, &n))
}

async fn create(
    State(st): State<AppState>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    st.fhir.check_type(&rt)?;
    let value = resource_body(&st, &headers, body).await?;
    let ine = headers
        .get("if-none-exist")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let w = st.fhir.create(&rt, value, ine.as_deref()).await?;
    Ok(written_response(&base_url(&st, &headers), &w, &n))
}

async fn update(
    State(st): State<AppState>,
    Path((rt, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    st.fhir.check_type(&rt)?;
    let value = resource_body(&st, &headers, body).await?;
    let w = st.fhir.update(&rt, &id, value, if_match(&headers)?).await?;
    Ok(written_response(&base_url(&st, &headers), &w, &n))
}

async fn conditional_update(
    State(st): State<AppState>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    st.fhir.check_type(&rt)?;
    let value = resource_body(&st, &headers, body).await?;
    let w = st
        .fhir
        .conditional_update(&rt, &criteria(&q), value)
        .await?;
    Ok(written_response(&base_url(&st, &headers), &w, &n))
}

/// The search criteria of a conditional interaction: the query without `_format`/`_pretty`.
fn criteria(q: &Option<String>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs(q) {
        if k != "_format" && k != "_pretty" {
            ser.append_pair(&k, &v);
        }
    }
    ser.finish()
}

async fn patch(
    State(st): State<AppState>,
    Path((rt, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    st.fhir.check_type(&rt)?;
    require_content_type(&headers, &["application/json-patch+json"])?;
    let bytes = read_body(body, st.settings.body_limit).await?;
    let doc = validate::parse_json(&bytes)?;
    let w = st.fhir.patch(&rt, &id, doc, if_match(&headers)?).await?;
    Ok(written_response(&base_url(&st, &headers), &w, &n))
}

async fn delete(
    State(st): State<AppState>,
    Path((rt, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    negotiate(&headers, &pairs(&q))?;
    st.fhir.delete(&rt, &id).await?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn conditional_delete(
    State(st): State<AppState>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    negotiate(&headers, &pairs(&q))?;
    st.fhir.conditional_delete(&rt, &criteria(&q)).await?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn search_get(
    State(st): State<AppState>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = pairs(&q);
    search(&st, &rt, &headers, p).await
}

/// `POST [type]/_search`: form parameters in the body, merged with those in the URL.
async fn search_post(
    State(st): State<AppState>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_content_type(&headers, &["application/x-www-form-urlencoded"])?;
    let bytes = read_body(body, st.settings.body_limit).await?;
    let mut p = pairs(&q);
    p.extend(form_urlencoded::parse(&bytes).into_owned());
    search(&st, &rt, &headers, p).await
}

async fn search(
    st: &AppState,
    rt: &str,
    headers: &HeaderMap,
    p: Vec<(String, String)>,
) -> ApiResult<Response> {
    let n = negotiate(headers, &p)?;
    let p: Vec<(String, String)> = p
        .into_iter()
        .filter(|(k, _)| k != "_format" && k != "_pretty")
        .collect();
    let req = st.fhir.parse_search(rt, &p, n.lenient)?;
    let bundle = search_exec::run_text(&st.fhir, &base_url(st, headers), rt, &req).await?;
    Ok(json_text(StatusCode::OK, bundle, &n))
}

/// `POST /`: batch or transaction.
pub(crate) async fn system_bundle(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let n = negotiate(&headers, &pairs(&q))?;
    let value = resource_body(&st, &headers, body).await?;
    let out = bundle::process(&st.fhir, &base_url(&st, &headers), value).await?;
    Ok(json_value(StatusCode::OK, &out, &n))
}

struct HistoryParams {
    since: Option<i64>,
    count: usize,
    offset: usize,
}

fn history_params(p: &[(String, String)]) -> ApiResult<HistoryParams> {
    let mut h = HistoryParams {
        since: None,
        count: 20,
        offset: 0,
    };
    let bad = |k: &str, v: &str| {
        ApiError(FhirError::invalid(
            IssueCode::Value,
            format!("Bad value for {k}: {v}"),
        ))
    };
    for (k, v) in p {
        match k.as_str() {
            "_since" => {
                let (r, _) = datetime::parse(v, datetime::Kind::Search).ok_or_else(|| bad(k, v))?;
                h.since = Some(r.lo);
            }
            "_count" => h.count = v.parse::<usize>().map_err(|_| bad(k, v))?.min(1000),
            "_offset" => h.offset = v.parse().map_err(|_| bad(k, v))?,
            "_format" | "_pretty" | "_at" | "_list" => {}
            _ => {
                return Err(ApiError(FhirError::invalid(
                    IssueCode::NotSupported,
                    format!("Unknown history parameter {k}"),
                )))
            }
        }
    }
    Ok(h)
}

async fn history(
    st: &AppState,
    headers: &HeaderMap,
    q: &Option<String>,
    scope: HistoryScope,
    path: &str,
) -> ApiResult<Response> {
    let p = pairs(q);
    let n = negotiate(headers, &p)?;
    let h = history_params(&p)?;
    let b = bundle::history(
        &st.fhir,
        &base_url(st, headers),
        scope,
        h.since,
        h.count,
        h.offset,
        path,
    )
    .await?;
    Ok(json_value(StatusCode::OK, &b, &n))
}

async fn system_history(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    history(&st, &headers, &q, HistoryScope::System, "_history").await
}

async fn type_history(
    State(st): State<AppState>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    st.fhir.check_type(&rt)?;
    let path = format!("{rt}/_history");
    history(&st, &headers, &q, HistoryScope::Type(rt), &path).await
}

async fn instance_history(
    State(st): State<AppState>,
    Path((rt, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    st.fhir.check_type(&rt)?;
    if st.fhir.store.read(&rt, &id).await?.is_none() {
        return Err(ApiError(FhirError::NotFound(format!("{rt}/{id}"))));
    }
    let path = format!("{rt}/{id}/_history");
    history(&st, &headers, &q, HistoryScope::Instance(rt, id), &path).await
}
