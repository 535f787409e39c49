//! The FHIR engine: parse and validate (fhirbolt + our rules from `profiles/`), search
//! parameters and planning, bundles, history, the CapabilityStatement. Knows nothing of HTTP.

pub mod bundle;
pub mod capability;
pub mod datetime;
pub mod error;
pub mod fhirpath;
pub mod index;
pub mod invariants;
pub mod outcome;
pub mod registry;
pub mod search;
pub mod search_exec;
pub mod service;
pub mod structure;
pub mod validate;

pub use error::FhirError;
pub use service::Fhir;

/// The resource types this server stores and serves, sorted.
pub const RESOURCE_TYPES: [&str; 10] = [
    "Appointment",
    "AppointmentResponse",
    "HealthcareService",
    "Location",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Schedule",
    "Slot",
];

pub fn is_supported_type(t: &str) -> bool {
    RESOURCE_TYPES.binary_search(&t).is_ok()
}

/// The FHIR JSON the server ships with, embedded so the binary stands alone.
pub mod profiles {
    pub const SEARCH_PARAMETERS: &str = include_str!("../../profiles/search-parameters.json");
    /// This server's own SearchParameters (over its extensions).
    pub const LOCAL_SEARCH_PARAMETERS: &str =
        include_str!("../../profiles/search-parameters-local.json");
    /// OperationDefinitions of the operations this server implements.
    pub const OPERATIONS: &str = include_str!("../../profiles/operations.json");
    pub const STRUCTURES: &str = include_str!("../../profiles/r4-structures.json");
    pub const VALUESETS: &str = include_str!("../../profiles/r4-required-valuesets.json");
}
