//! The validation pipeline every incoming resource passes, in order:
//! UTF-8 → JSON → `resourceType` → our structural rules (`structure`, from `profiles/`) →
//! fhirbolt strict parsing (`fhir-r4` crate) → invariants and business rules (`invariants`).
//! Our structural pass runs before fhirbolt so inputs known to crash it never reach it.

use serde_json::Value;

use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::{Issue, IssueCode};
use crate::fhir::structure::{IssueKind, Structures};
use crate::fhir::{invariants, is_supported_type};

/// Bytes to JSON: invalid UTF-8 or malformed JSON → 400 `structure`.
pub fn parse_json(bytes: &[u8]) -> FhirResult<Value> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        FhirError::invalid(
            IssueCode::Structure,
            format!("The body is not valid UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        FhirError::invalid(
            IssueCode::Structure,
            format!("The body is not valid JSON: {e}"),
        )
    })
}

/// The `resourceType` of a JSON body, checked against what the URL says.
pub fn resource_type_of<'a>(value: &'a Value, expected: Option<&str>) -> FhirResult<&'a str> {
    let Some(obj) = value.as_object() else {
        return Err(FhirError::invalid(
            IssueCode::Structure,
            "A resource must be a JSON object",
        ));
    };
    let Some(rt) = obj.get("resourceType").and_then(Value::as_str) else {
        return Err(FhirError::invalid_at(
            IssueCode::Required,
            "resourceType",
            "The resource has no resourceType",
        ));
    };
    if let Some(exp) = expected {
        if rt != exp {
            return Err(FhirError::invalid_at(
                IssueCode::Invalid,
                "resourceType",
                format!("The resource is a {rt}, but the URL is for {exp}"),
            ));
        }
    }
    Ok(rt)
}

/// Validates a resource of one of our types. Returns every issue that makes it invalid.
pub fn validate_resource(structures: &Structures, value: &Value) -> FhirResult<()> {
    let rt = resource_type_of(value, None)?;
    if !is_supported_type(rt) {
        return Err(FhirError::UnknownType(rt.to_string()));
    }
    let issues: Vec<Issue> = structures
        .validate(value)
        .into_iter()
        .map(|i| {
            let code = match i.kind {
                IssueKind::Structure => IssueCode::Structure,
                IssueKind::Required => IssueCode::Required,
                IssueKind::Value => IssueCode::Value,
                IssueKind::Invariant => IssueCode::Invariant,
            };
            Issue::error(code, i.message).at(i.expression)
        })
        .collect();
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    let text = serde_json::to_string(value).map_err(|e| FhirError::Internal(e.to_string()))?;
    match fhir_r4::check_strict(&text) {
        Ok(()) => {}
        Err(fhir_r4::ParseError::Invalid(msg)) => {
            return Err(FhirError::invalid(
                IssueCode::Structure,
                format!("Not a valid R4 {rt}: {msg}"),
            ))
        }
        Err(fhir_r4::ParseError::Panicked) => {
            tracing::error!(
                resource_type = rt,
                "the R4 parser panicked on a request body"
            );
            return Err(FhirError::invalid(
                IssueCode::Structure,
                format!("Not a valid R4 {rt}: the structure could not be parsed"),
            ));
        }
    }
    let issues = invariants::check(value);
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    Ok(())
}
