//! Content negotiation and the HTTP details of FHIR: media types, `_format`, `_pretty`,
//! `Prefer`, body limits, ETag and Last-Modified headers.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::fhir::FhirError;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// What the client asked for, from headers and the `_format`/`_pretty` parameters.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    pub pretty: bool,
    pub prefer_return: PreferReturn,
    pub lenient: bool,
    pub respond_async: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreferReturn {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

fn is_json_media(m: &str) -> bool {
    let m = m
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        m.as_str(),
        "application/fhir+json"
            | "application/json"
            | "application/json+fhir"
            | "json"
            | "fhir+json"
            | "*/*"
            | "application/*"
            | ""
    )
}

/// Reads `Accept`, `_format`, `_pretty` and `Prefer`. Non-JSON formats → 406.
pub fn negotiate(headers: &HeaderMap, query: &[(String, String)]) -> ApiResult<Negotiated> {
    let mut n = Negotiated::default();
    for (k, v) in query {
        match k.as_str() {
            "_format" if !is_json_media(v) => {
                return Err(ApiError(FhirError::NotAcceptable(format!(
                    "_format={v} is not supported; this server speaks application/fhir+json"
                ))))
            }
            "_pretty" => n.pretty = v == "true",
            _ => {}
        }
    }
    if !query.iter().any(|(k, _)| k == "_format") {
        if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
            if !accept.split(',').any(is_json_media) {
                return Err(ApiError(FhirError::NotAcceptable(format!(
                    "Cannot produce {accept}; this server speaks application/fhir+json"
                ))));
            }
        }
    }
    for prefer in headers.get_all("prefer") {
        for part in prefer.to_str().unwrap_or("").split([',', ';']) {
            match part.trim().replace(' ', "").as_str() {
                "return=minimal" => n.prefer_return = PreferReturn::Minimal,
                "return=representation" => n.prefer_return = PreferReturn::Representation,
                "return=OperationOutcome" => n.prefer_return = PreferReturn::OperationOutcome,
                "handling=lenient" => n.lenient = true,
                "handling=strict" => n.lenient = false,
                "respond-async" => n.respond_async = true,
                _ => {}
            }
        }
    }
    Ok(n)
}

/// The request's media type must be one of `allowed` (or absent when `allow_missing`) → else 415.
pub fn require_content_type(headers: &HeaderMap, allowed: &[&str]) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if allowed.iter().any(|a| *a == media) {
        Ok(())
    } else {
        Err(ApiError(FhirError::UnsupportedMediaType(format!(
            "Content-Type {ct:?} is not accepted here; use {}",
            allowed.join(" or ")
        ))))
    }
}

pub const RESOURCE_MEDIA: [&str; 3] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];

/// Reads a body up to `limit` bytes; over it → 413.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<axum::body::Bytes> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError(FhirError::PayloadTooLarge(limit as u64)))
}

/// A FHIR JSON response from an already serialised body (the fast path for reads).
pub fn json_text(status: StatusCode, body: String, n: &Negotiated) -> Response {
    let body = if n.pretty {
        match serde_json::from_str::<Value>(&body) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(body),
            Err(_) => body,
        }
    } else {
        body
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A FHIR JSON response from a value.
pub fn json_value(status: StatusCode, body: &Value, n: &Negotiated) -> Response {
    let text = if n.pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_default();
    let mut resp = (status, text).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// RFC 7231 date for `Last-Modified`.
pub fn http_date(micros: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

pub fn set_header(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}
