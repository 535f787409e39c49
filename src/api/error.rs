//! Errors leave the server as OperationOutcomes. The status of each error kind comes from the
//! one table, `fhir::error::status_and_issues`; this file only renders it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::fhir::error::status_and_issues;
use crate::fhir::outcome::operation_outcome;
use crate::fhir::FhirError;

/// The API layer's error: an engine error on its way to becoming an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub FhirError);

impl<E: Into<FhirError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, issues) = status_and_issues(&self.0);
        let retry_after = match &self.0 {
            FhirError::Overloaded { retry_after } => Some(*retry_after),
            FhirError::Store(e) if e.is_transient() => Some(1),
            _ => None,
        };
        if status >= 500 {
            // Logged once, here; never the body of the request (PHI).
            tracing::error!(error = %self.0, "request failed");
        }
        let body = operation_outcome(&issues).to_string();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::negotiate::FHIR_JSON),
        );
        if let FhirError::Unauthorized { message, error } = &self.0 {
            // RFC 6750 §3: the challenge; the description must not carry quotes or backslashes.
            let mut challenge = String::from("Bearer realm=\"fhir-scheduler\"");
            if let Some(code) = error {
                let desc: String = message
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\')
                    .collect();
                challenge.push_str(&format!(", error=\"{code}\", error_description=\"{desc}\""));
            }
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
