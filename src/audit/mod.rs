//! The audit log: every access to PHI, every login and every token issued becomes a FHIR R4
//! AuditEvent shaped like IHE BALP (Basic Audit Log Patterns), stored append-only behind a hash
//! chain.
//!
//! - [`Record`] — what happened, in plain Rust, as the HTTP layer knows it.
//! - [`render`] — `Record` → AuditEvent JSON (built here, so it skips request validation; a test
//!   holds it to the server's own validator).
//! - [`Auditor`] — a bounded buffer and one writer task that stores batches: each AuditEvent as an
//!   ordinary resource (searchable like any other) plus a link of the hash chain, in one
//!   transaction. `record` waits only while the buffer is full and fails once the writer cannot
//!   write, so the caller fails its request rather than lose the record.
//! - [`chain`] — the link hash and `verify` (`fhir-scheduler audit verify`).
//!
//! AuditEvent writes go straight to the store: they are neither audited themselves nor subject
//! to access control (the policy refuses every REST write to AuditEvent).

pub mod chain;
pub mod index;
pub mod render;
pub mod writer;

pub use chain::{verify, Break, Verification};
pub use render::render;
pub use writer::{AuditConfig, Auditor};

use crate::fhir::FhirError;

/// A RESTful interaction (codes of `http://hl7.org/fhir/restful-interaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestInteraction {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    Capabilities,
    Transaction,
    Batch,
    Operation,
}

impl RestInteraction {
    pub fn code(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Vread => "vread",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::HistoryInstance => "history-instance",
            Self::HistoryType => "history-type",
            Self::HistorySystem => "history-system",
            Self::Create => "create",
            Self::SearchType => "search-type",
            Self::SearchSystem => "search-system",
            Self::Capabilities => "capabilities",
            Self::Transaction => "transaction",
            Self::Batch => "batch",
            Self::Operation => "operation",
        }
    }

    /// The BALP action: create C, reads and history R, update/patch U, delete D; searches
    /// (BALP "Query"), operations, batches and transactions E.
    pub fn action(self) -> Action {
        match self {
            Self::Create => Action::Create,
            Self::Read
            | Self::Vread
            | Self::HistoryInstance
            | Self::HistoryType
            | Self::HistorySystem
            | Self::Capabilities => Action::Read,
            Self::Update | Self::Patch => Action::Update,
            Self::Delete => Action::Delete,
            Self::SearchType
            | Self::SearchSystem
            | Self::Transaction
            | Self::Batch
            | Self::Operation => Action::Execute,
        }
    }
}

/// What kind of event a record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A RESTful interaction (type `rest`, subtype the interaction).
    Rest(RestInteraction),
    /// A FHIR operation such as `$book` (type `rest`, subtype `operation` and the name).
    Operation(String),
    /// A login attempt (DICOM 110114 User Authentication / 110122 Login); a failed login is
    /// this with a failure outcome.
    Login,
    /// DICOM 110114 User Authentication / 110123 Logout.
    Logout,
    /// An access token issued by the token endpoint (IHE IUA ITI-71 Get Access Token).
    TokenIssued,
}

/// `AuditEvent.action` (`http://hl7.org/fhir/audit-event-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl Action {
    pub fn code(self) -> &'static str {
        match self {
            Self::Create => "C",
            Self::Read => "R",
            Self::Update => "U",
            Self::Delete => "D",
            Self::Execute => "E",
        }
    }
}

/// `AuditEvent.outcome` (`http://hl7.org/fhir/audit-event-outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The request was refused or failed on its input (4xx, a failed login).
    MinorFailure,
    /// The server failed (5xx).
    SeriousFailure,
    MajorFailure,
}

impl Outcome {
    pub fn code(self) -> &'static str {
        match self {
            Self::Success => "0",
            Self::MinorFailure => "4",
            Self::SeriousFailure => "8",
            Self::MajorFailure => "12",
        }
    }

    /// 1xx–3xx success, 4xx minor failure, 5xx serious failure.
    pub fn from_status(status: u16) -> Self {
        match status {
            0..=399 => Self::Success,
            400..=499 => Self::MinorFailure,
            _ => Self::SeriousFailure,
        }
    }
}

/// One auditable event, as the HTTP layer knows it. `render` turns it into an AuditEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub event: Event,
    pub action: Action,
    pub outcome: Outcome,
    /// Why it failed (shown as `outcomeDesc`; defaults to `HTTP <status>` when a status is set).
    pub outcome_desc: Option<String>,
    /// The HTTP status of the response.
    pub status: Option<u16>,
    /// The user: a reference (`Practitioner/123`, the token's `fhirUser`) or `user:<name>`.
    pub who: Option<String>,
    /// The user's role (`patient`, `practitioner`, `admin`).
    pub role: Option<String>,
    /// The client application (OAuth `client_id`).
    pub client_id: Option<String>,
    /// The network address the request came from (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`).
    pub source_addr: Option<String>,
    /// What was touched: references (`Patient/1`, `Appointment/7/_history/2`).
    pub entities: Vec<String>,
    /// The patient concerned, when known (`Patient/1`): an entity with role 1 Patient.
    pub patient: Option<String>,
    /// A search's query string (stored base64 in `entity.query`, as BALP does).
    pub query: Option<String>,
    /// When it happened: microseconds since the epoch.
    pub at: i64,
}

impl Record {
    /// An event that happened now, with outcome success and nothing else known yet.
    pub fn new(event: Event, action: Action) -> Self {
        Self {
            event,
            action,
            outcome: Outcome::Success,
            outcome_desc: None,
            status: None,
            who: None,
            role: None,
            client_id: None,
            source_addr: None,
            entities: Vec::new(),
            patient: None,
            query: None,
            at: crate::fhir::datetime::now_micros(),
        }
    }

    /// A RESTful interaction answered with `status`.
    pub fn rest(interaction: RestInteraction, status: u16) -> Self {
        Self::new(Event::Rest(interaction), interaction.action()).status(status)
    }

    /// An operation (`$book`, with or without the `$`) answered with `status`.
    pub fn operation(name: &str, status: u16) -> Self {
        let name = format!("${}", name.trim_start_matches('$'));
        Self::new(Event::Operation(name), Action::Execute).status(status)
    }

    /// A login attempt; `ok = false` records a failed login.
    pub fn login(ok: bool) -> Self {
        let mut r = Self::new(Event::Login, Action::Execute);
        if !ok {
            r.outcome = Outcome::MinorFailure;
        }
        r
    }

    pub fn logout() -> Self {
        Self::new(Event::Logout, Action::Execute)
    }

    /// An access token issued (`ok = false`: a token request refused).
    pub fn token_issued(ok: bool) -> Self {
        let mut r = Self::new(Event::TokenIssued, Action::Execute);
        if !ok {
            r.outcome = Outcome::MinorFailure;
        }
        r
    }

    /// Sets the HTTP status and the outcome that follows from it.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self.outcome = Outcome::from_status(status);
        self
    }

    pub fn outcome(mut self, outcome: Outcome, desc: impl Into<String>) -> Self {
        self.outcome = outcome;
        self.outcome_desc = Some(desc.into());
        self
    }

    pub fn who(mut self, who: impl Into<String>) -> Self {
        self.who = Some(who.into());
        self
    }

    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    pub fn client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    pub fn source_addr(mut self, addr: impl Into<String>) -> Self {
        self.source_addr = Some(addr.into());
        self
    }

    pub fn entity(mut self, reference: impl Into<String>) -> Self {
        self.entities.push(reference.into());
        self
    }

    pub fn patient(mut self, reference: impl Into<String>) -> Self {
        self.patient = Some(reference.into());
        self
    }

    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    pub fn at(mut self, micros: i64) -> Self {
        self.at = micros;
        self
    }
}

/// Why a record could not be accepted. Either way the caller must fail its request (500): the
/// event cannot be put on record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The writer has been failing for longer than `AuditConfig::fail_after`; it keeps retrying
    /// what it holds and accepts records again once a write succeeds.
    #[error("the audit log cannot be written")]
    Unavailable,
    /// The writer task is gone.
    #[error("the audit writer has stopped")]
    Closed,
}

impl From<AuditError> for FhirError {
    fn from(e: AuditError) -> Self {
        FhirError::Internal(e.to_string())
    }
}
