//! Strict structural parsing of FHIR R4 JSON with fhirbolt, kept in a crate of its own.
//!
//! fhirbolt's typed `Resource` deserializer is very costly to compile; keeping its only
//! instantiation here, behind a non-generic function, means it is built once and cached while
//! the server crate changes. fhirbolt 0.4 panics on some inputs (an empty `participant: []`),
//! so the call is wrapped in `catch_unwind`: a panic becomes an error, never a crash.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

/// Why fhirbolt refused a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The JSON is not a valid R4 resource (unknown or missing elements, wrong types…).
    Invalid(String),
    /// fhirbolt panicked on this input.
    Panicked,
}

/// Parses `json` as an R4 resource in strict mode and throws the result away: only whether it
/// parses matters. The server keeps working with its own JSON model.
pub fn check_strict(json: &str) -> Result<(), ParseError> {
    let config = DeserializationConfig {
        mode: DeserializationMode::Strict,
    };
    match catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::json::from_str::<Resource>(json, Some(config))
    })) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ParseError::Invalid(e.to_string())),
        Err(_) => Err(ParseError::Panicked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_valid_patient_and_rejects_unknown_elements() {
        assert_eq!(
            check_strict(r#"{"resourceType":"Patient","gender":"female"}"#),
            Ok(())
        );
        assert!(matches!(
            check_strict(r#"{"resourceType":"Patient","colour":"blue"}"#),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn a_panic_inside_fhirbolt_is_an_error() {
        let r =
            check_strict(r#"{"resourceType":"Appointment","status":"proposed","participant":[]}"#);
        assert!(r.is_err());
    }
}
