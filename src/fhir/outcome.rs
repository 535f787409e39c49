//! OperationOutcome issues, as the engine reports them. Rendering to JSON lives here too, since
//! OperationOutcome is a FHIR resource like any other; which HTTP status goes with which error
//! is decided in `api::error` only.

use serde_json::{json, Value};

/// R4 `IssueType` codes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Forbidden,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    Conflict,
    TooCostly,
    Throttled,
    Transient,
    Exception,
    Informational,
}

impl IssueCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Structure => "structure",
            Self::Required => "required",
            Self::Value => "value",
            Self::Invariant => "invariant",
            Self::Security => "security",
            Self::Login => "login",
            Self::Forbidden => "forbidden",
            Self::Processing => "processing",
            Self::NotSupported => "not-supported",
            Self::Duplicate => "duplicate",
            Self::MultipleMatches => "multiple-matches",
            Self::NotFound => "not-found",
            Self::Deleted => "deleted",
            Self::TooLong => "too-long",
            Self::Conflict => "conflict",
            Self::TooCostly => "too-costly",
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::Exception => "exception",
            Self::Informational => "informational",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Information => "information",
        }
    }
}

/// One issue: what went wrong, where (a FHIRPath expression), and a readable explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub expression: Option<String>,
    pub diagnostics: String,
}

impl Issue {
    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            expression: None,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "severity": self.severity.code(),
            "code": self.code.code(),
            "diagnostics": self.diagnostics,
        });
        if let Some(e) = &self.expression {
            v["expression"] = json!([e]);
        }
        v
    }
}

/// An OperationOutcome resource holding `issues` (at least one).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = if issues.is_empty() {
        vec![Issue {
            severity: Severity::Information,
            code: IssueCode::Informational,
            expression: None,
            diagnostics: "All OK".into(),
        }
        .to_json()]
    } else {
        issues.iter().map(Issue::to_json).collect()
    };
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}

/// An informational OperationOutcome (for `Prefer: return=OperationOutcome`).
pub fn informational(message: &str) -> Value {
    operation_outcome(&[Issue {
        severity: Severity::Information,
        code: IssueCode::Informational,
        expression: None,
        diagnostics: message.to_string(),
    }])
}
