//! The HTTP layer: axum routers, content negotiation, OperationOutcome rendering, OpenAPI.
//! Only this module knows HTTP.

pub mod auth;
pub mod error;
pub mod negotiate;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod rest;
pub mod ws;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::error::ApiError;
use crate::booking::queue::AdmissionQueue;
use crate::booking::Scheduler;
use crate::fhir::{Fhir, FhirError};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub fhir: Arc<Fhir>,
    pub settings: Arc<ApiSettings>,
    pub scheduler: Arc<Scheduler>,
    pub queue: Arc<AdmissionQueue>,
    pub jobs: Arc<ops::AsyncJobs>,
    pub auth: Arc<crate::auth::Auth>,
    /// Where every access to PHI, login and token issue is put on record.
    pub audit: crate::audit::Auditor,
    /// What `/metrics` exposes.
    pub metrics: Arc<prometheus_client::registry::Registry>,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// The public FHIR base URL; when unset it is derived from the request's Host.
    pub base_url: Option<String>,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let fhir = rest::routes();
    Router::new()
        .nest("/fhir", fhir)
        // `POST [base]/` as well as `POST [base]` for batch/transaction.
        .route("/fhir/", axum::routing::post(rest::system_bundle))
        .merge(oauth::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ws/subscriptions", get(ws::subscriptions))
        .merge(openapi::docs(&state.fhir))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The server and its database are up"),
              (status = 503, description = "The database is unreachable")))]
pub async fn health(State(state): State<AppState>) -> Response {
    match state.fhir.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Prometheus metrics (OpenMetrics text format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics in the OpenMetrics text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    encode_metrics(&state.metrics)
}

/// `/metrics` alone, for processes without the FHIR API (`worker notifications
/// --metrics-addr`).
pub fn metrics_router(registry: Arc<prometheus_client::registry::Registry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { encode_metrics(&registry) }
        }),
    )
}

fn encode_metrics(registry: &prometheus_client::registry::Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => {
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(_) => ApiError(FhirError::Internal("metrics encoding".into())).into_response(),
    }
}

/// Refuses a body whose declared length is over the limit before reading any of it.
async fn limit_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.settings.body_limit as u64) {
        let mut resp =
            ApiError(FhirError::PayloadTooLarge(state.settings.body_limit as u64)).into_response();
        // The unread body makes the connection unusable: say so rather than let it hang.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return resp;
    }
    next.run(req).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    // The payload may quote request data (PHI): log only that it happened.
    tracing::error!("a request handler panicked");
    ApiError(FhirError::Internal("panic".into())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_operation_outcome() {
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));
        let resp = app
            .oneshot(Request::builder().uri("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["code"], "exception");
    }
}
