//! The engine's one error type. `api::error` maps each variant to an HTTP status in one table.

use crate::fhir::outcome::{Issue, IssueCode};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// The request or resource is malformed or fails validation (each issue carries its code).
    #[error("invalid: {}", first(.0))]
    Invalid(Vec<Issue>),
    /// Well-formed, but breaks a business rule of the server.
    #[error("unprocessable: {}", first(.0))]
    Unprocessable(Vec<Issue>),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("deleted: {0}")]
    Deleted(String),
    #[error("unsupported resource type: {0}")]
    UnknownType(String),
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A conditional interaction matched more than one resource.
    #[error("multiple matches: {0}")]
    MultipleMatches(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too costly: {0}")]
    TooCostly(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("body too large: over {0} bytes")]
    PayloadTooLarge(u64),
    /// No valid credentials: 401 with a `WWW-Authenticate` challenge (`error` per RFC 6750).
    #[error("unauthorized: {message}")]
    Unauthorized {
        message: String,
        /// RFC 6750 error code for the challenge (`invalid_token`, …), if any.
        error: Option<&'static str>,
    },
    /// Authenticated, but the scopes or the role policy do not allow it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// Load shedding: the booking queue is full.
    #[error("overloaded: retry after {retry_after} s")]
    Overloaded { retry_after: u64 },
    /// A scheduling rule refuses the write (e.g. a forbidden status transition).
    #[error("scheduling: {0}")]
    Scheduling(#[from] crate::scheduling::SchedulingError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

fn first(issues: &[Issue]) -> &str {
    issues.first().map(|i| i.diagnostics.as_str()).unwrap_or("")
}

impl FhirError {
    pub fn invalid(code: IssueCode, message: impl Into<String>) -> Self {
        Self::Invalid(vec![Issue::error(code, message)])
    }

    pub fn invalid_at(code: IssueCode, expression: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![Issue::error(code, message).at(expression)])
    }
}

pub type FhirResult<T> = Result<T, FhirError>;

/// THE table: every error kind → HTTP status and OperationOutcome issues. Used for HTTP
/// responses and for the `response.status` of batch entries alike; nothing else decides a status.
pub fn status_and_issues(err: &FhirError) -> (u16, Vec<Issue>) {
    use IssueCode as C;
    let one = |code: IssueCode, msg: String| vec![Issue::error(code, msg)];
    match err {
        FhirError::Invalid(issues) => (400, issues.clone()),
        FhirError::Unprocessable(issues) => (422, issues.clone()),
        FhirError::NotFound(what) => (404, one(C::NotFound, format!("{what} is not known"))),
        FhirError::Deleted(what) => (410, one(C::Deleted, format!("{what} has been deleted"))),
        FhirError::UnknownType(t) => (
            404,
            one(
                C::NotSupported,
                format!("Resource type {t} is not supported by this server"),
            ),
        ),
        FhirError::NotSupported(m) => (400, one(C::NotSupported, m.clone())),
        FhirError::PreconditionFailed(m) => (412, one(C::Conflict, m.clone())),
        FhirError::MultipleMatches(m) => (412, one(C::MultipleMatches, m.clone())),
        FhirError::Conflict(m) => (409, one(C::Conflict, m.clone())),
        FhirError::TooCostly(m) => (400, one(C::TooCostly, m.clone())),
        FhirError::Scheduling(e) => (
            409,
            vec![Issue::error(C::Conflict, e.to_string()).at("Appointment.status")],
        ),
        FhirError::UnsupportedMediaType(m) => (415, one(C::NotSupported, m.clone())),
        FhirError::NotAcceptable(m) => (406, one(C::NotSupported, m.clone())),
        FhirError::PayloadTooLarge(limit) => (
            413,
            one(
                C::TooLong,
                format!("The body is larger than the limit of {limit} bytes"),
            ),
        ),
        FhirError::Unauthorized { message, .. } => (401, one(C::Login, message.clone())),
        FhirError::Forbidden(m) => (403, one(C::Forbidden, m.clone())),
        FhirError::MethodNotAllowed(m) => (405, one(C::NotSupported, m.clone())),
        FhirError::Overloaded { retry_after } => (
            429,
            one(
                C::Throttled,
                format!("The server is busy; retry after {retry_after} s"),
            ),
        ),
        FhirError::Store(StoreError::Conflict) => (
            409,
            one(
                C::Conflict,
                "The resource was changed by another request".into(),
            ),
        ),
        FhirError::Store(StoreError::Overlap(key)) => (
            409,
            one(
                C::Conflict,
                format!("Double booking refused: {key} is already booked at that time"),
            ),
        ),
        FhirError::Store(StoreError::Duplicate) => (
            409,
            one(
                C::Duplicate,
                "A resource with that id already exists".into(),
            ),
        ),
        FhirError::Store(e) if e.is_transient() => (
            503,
            one(
                C::Transient,
                "The database could not complete the request at this moment; retry it".into(),
            ),
        ),
        // Internal details are logged by the caller, never sent.
        FhirError::Store(_) | FhirError::Internal(_) => (
            500,
            one(
                C::Exception,
                "The server could not complete the request".into(),
            ),
        ),
    }
}

impl From<crate::fhir::search::SearchError> for FhirError {
    fn from(e: crate::fhir::search::SearchError) -> Self {
        let code = if e.unsupported {
            IssueCode::NotSupported
        } else {
            IssueCode::Invalid
        };
        let issue = Issue::error(code, e.to_string());
        FhirError::Invalid(vec![match e.param {
            Some(p) => issue.at(p),
            None => issue,
        }])
    }
}
