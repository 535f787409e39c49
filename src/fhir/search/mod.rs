//! FHIR R4 search: a search request parsed against the registry (`parse`), and planned into SQL
//! over the index tables for SQLite and PostgreSQL (`plan`).
//!
//! Everything a client sends ends up in a bind, never in SQL text. The planner only reads the
//! index tables and `resources`; index rows exist only for live resources, and `r.deleted =
//! FALSE` is checked on every resource row returned.

pub mod audit;
mod link;
pub mod open;
pub(crate) mod parse;
mod plan;

use std::fmt;

use crate::fhir::registry::ParamType;

pub use parse::parse;
pub use plan::{include_query, revinclude_query};

/// Default page size when `_count` is not given.
pub const DEFAULT_COUNT: usize = 20;
/// Largest page size; a larger `_count` is reduced to this.
pub const MAX_COUNT: usize = 1000;

/// A parsed search: what to match, how to order, which page, and what to return.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub resource_type: String,
    /// All filters must hold (repeated parameters = AND); each filter's values are ORed.
    pub filters: Vec<Filter>,
    /// `_sort` keys in order; the planner always appends `r.rid` as the last tie-break.
    pub sort: Vec<SortKey>,
    /// `_count` (default 20, at most 1000; 0 = only the total).
    pub count: usize,
    /// `_offset`: how many matches to skip.
    pub offset: usize,
    /// `_total` (default `None`: counting is not free; the total is still given when the page
    /// shows it is the last one).
    pub total: TotalMode,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    /// Parameters ignored under lenient handling (unknown or unsupported), as written; for a
    /// warning in the OperationOutcome. They are not part of `link_query`.
    pub ignored: Vec<String>,
}

impl SearchRequest {
    /// Whether the client asked only for the count (`_summary=count`).
    pub fn count_only(&self) -> bool {
        self.summary == Some(Summary::Count)
    }
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Estimate,
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

impl Summary {
    pub fn code(self) -> &'static str {
        match self {
            Self::True => "true",
            Self::Text => "text",
            Self::Data => "data",
            Self::Count => "count",
            Self::False => "false",
        }
    }
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The parameter code, e.g. `start`, `_id`.
    pub param: String,
    pub descending: bool,
    pub kind: SortKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Id,
    LastUpdated,
    /// An indexed parameter of this type (date, string, token, number, quantity, uri, reference).
    Index(ParamType),
}

/// `_include=Source:param[:Target]` or `_revinclude=Source:param[:Target]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The resource type holding the reference.
    pub source_type: String,
    /// The reference parameter of `source_type`.
    pub param: String,
    /// Only references to this type.
    pub target_type: Option<String>,
    /// `:iterate` (also accepted: R3's `:recurse`).
    pub iterate: bool,
}

impl Include {
    fn value(&self) -> String {
        match &self.target_type {
            Some(t) => format!("{}:{}:{}", self.source_type, self.param, t),
            None => format!("{}:{}", self.source_type, self.param),
        }
    }
}

/// One search parameter as given: `name` and `value` as written (URL-decoded), and the test.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub name: String,
    pub value: String,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// A test on the searched resource's own parameter.
    Param(ParamTest),
    /// `ref.sub=v` / `ref:Type.sub=v`: resources whose reference `param` points at a live
    /// resource of one of the types that matches that type's test.
    Chain {
        param: String,
        targets: Vec<(String, ParamTest)>,
    },
    /// `_has:Source:ref:sub=v`: resources referenced through `ref_param` by a resource of
    /// `source_type` that matches `inner`.
    Has {
        source_type: String,
        ref_param: String,
        inner: ParamTest,
    },
}

/// A test on one parameter of one resource type; the values are ORed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTest {
    pub code: String,
    pub kind: TestKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestKind {
    /// `_id`: served from `resources.id`.
    Id(Vec<String>),
    /// `_lastUpdated`: served from `resources.last_updated`.
    LastUpdated(Vec<DateValue>),
    /// `:missing=true|false` on an indexed parameter.
    Missing {
        table: IndexTable,
        missing: bool,
    },
    /// token; `not` = `:not` (no value of the resource matches any of these).
    Token {
        not: bool,
        values: Vec<TokenValue>,
    },
    /// token `:text`: lowercased text starting with, or having a word starting with, the value.
    TokenText(Vec<String>),
    String {
        mode: StringMode,
        values: Vec<String>,
    },
    Date(Vec<DateValue>),
    /// Made by the planner, never by `parse`: the date tests of one parameter that indexes at
    /// most one value per resource (`Registry::date_width`), merged: every group (its values
    /// ORed) holds on the one index row, whose `lo` lies in `[lo_min, lo_max]` (bounds implied
    /// by the groups, for an index range).
    DateRow {
        groups: Vec<Vec<DateValue>>,
        lo_min: Option<i64>,
        lo_max: Option<i64>,
    },
    Number(Vec<NumberValue>),
    Quantity(Vec<QuantityValue>),
    Reference(Vec<RefValue>),
    Uri {
        mode: UriMode,
        values: Vec<String>,
    },
    /// special `near` (Location.position): within a distance of a point.
    Near(Vec<NearValue>),
}

/// `near=lat|long|distance|unit`, the distance in kilometres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearValue {
    pub lat: f64,
    pub lon: f64,
    pub km: f64,
}

/// The index table of a parameter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexTable {
    Token,
    String,
    Date,
    Reference,
    Number,
    Quantity,
    Uri,
    Geo,
}

impl IndexTable {
    pub fn of(ptype: ParamType) -> Option<Self> {
        Some(match ptype {
            ParamType::Token => Self::Token,
            ParamType::String => Self::String,
            ParamType::Date => Self::Date,
            ParamType::Reference => Self::Reference,
            ParamType::Number => Self::Number,
            ParamType::Quantity => Self::Quantity,
            ParamType::Uri => Self::Uri,
            ParamType::Special => Self::Geo,
            ParamType::Composite => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "idx_token",
            Self::String => "idx_string",
            Self::Date => "idx_date",
            Self::Reference => "idx_reference",
            Self::Number => "idx_number",
            Self::Quantity => "idx_quantity",
            Self::Uri => "idx_uri",
            Self::Geo => "idx_geo",
        }
    }
}

/// A token value: `code`, `system|code`, `|code` (no system) or `system|` (any code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    /// `None`: any system; `Some(None)`: no system; `Some(Some(s))`: that system.
    pub system: Option<Option<String>>,
    /// `None`: any code.
    pub code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// Case- and accent-insensitive starts-with on `norm`.
    StartsWith,
    /// `:exact`: equality on `exact`.
    Exact,
    /// `:contains`: case- and accent-insensitive substring on `norm`.
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Exact,
    /// `:below`: the stored URI starts with the value.
    Below,
    /// `:above`: the stored URI is the value or one of its parent paths.
    Above,
}

/// R4 comparison prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "gt" => Self::Gt,
            "lt" => Self::Lt,
            "ge" => Self::Ge,
            "le" => Self::Le,
            "sa" => Self::Sa,
            "eb" => Self::Eb,
            "ap" => Self::Ap,
            _ => return None,
        })
    }
}

/// A date search value: the prefix and the value's range (inclusive, epoch microseconds). For
/// `ap` the range is already widened (10% of the distance from now, at least a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue {
    pub prefix: Prefix,
    pub lo: i64,
    pub hi: i64,
}

/// A number search value: `value`, and the range `[lo, hi)` its implicit precision covers (for
/// `ap`: ±10%, inclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberValue {
    pub prefix: Prefix,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// `[prefix]number[|system|code]`; with `number||code` the code matches `code` or `unit`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub number: NumberValue,
    pub system: Option<String>,
    pub code: Option<String>,
}

/// A reference search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefValue {
    /// `Type/id` or, with `type_` None, a bare `id` (any target type).
    Local { type_: Option<String>, id: String },
    /// An absolute URL (or urn), matched against the stored `url`.
    Url(String),
}

/// Why a search cannot run; becomes a 400 OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchError {
    pub message: String,
    /// The parameter at fault, as written.
    pub param: Option<String>,
    /// A valid request this server does not answer (`not-supported`), rather than an invalid
    /// one (`invalid`).
    pub unsupported: bool,
}

impl SearchError {
    pub fn new(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            message: message.into(),
            param: param.map(String::from),
            unsupported: false,
        }
    }

    pub fn unsupported(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            unsupported: true,
            ..Self::new(message, param)
        }
    }
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SearchError {}

/// The normalisation of string index values and string search values: lowercased, accents and
/// other diacritics removed (`Zoë Müller-Łukasz` → `zoe muller-lukasz`, `ß` → `ss`). The indexer
/// must fill `idx_string.norm` with this function so that searches match.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match fold(c) {
            Fold::Keep => out.push(c),
            Fold::Drop => {}
            Fold::One(f) => out.push(f),
            Fold::Two(a, b) => {
                out.push(a);
                out.push(b);
            }
        }
    }
    out
}

enum Fold {
    Keep,
    Drop,
    One(char),
    Two(char, char),
}

/// Folds a lowercase letter with a diacritic to its base letter (Latin-1 Supplement, Latin
/// Extended-A and the common Latin Extended-B/Additional ones); combining marks are dropped.
fn fold(c: char) -> Fold {
    use Fold::*;
    let base = match c {
        '\u{300}'..='\u{36f}'
        | '\u{1ab0}'..='\u{1aff}'
        | '\u{1dc0}'..='\u{1dff}'
        | '\u{20d0}'..='\u{20ff}' => return Drop,
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' | 'ǎ' | 'ȁ' | 'ȃ' | 'ạ' | 'ả' | 'ấ'
        | 'ầ' | 'ẩ' | 'ẫ' | 'ậ' | 'ắ' | 'ằ' | 'ẳ' | 'ẵ' | 'ặ' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' | 'đ' | 'ð' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' | 'ȅ' | 'ȇ' | 'ẹ' | 'ẻ' | 'ẽ' | 'ế'
        | 'ề' | 'ể' | 'ễ' | 'ệ' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' | 'ǧ' => 'g',
        'ĥ' | 'ħ' => 'h',
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' | 'ǐ' | 'ỉ' | 'ị' => 'i',
        'ĵ' => 'j',
        'ķ' | 'ǩ' => 'k',
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' | 'ŉ' | 'ǹ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' | 'ơ' | 'ǒ' | 'ǫ' | 'ọ' | 'ỏ' | 'ố'
        | 'ồ' | 'ổ' | 'ỗ' | 'ộ' | 'ớ' | 'ờ' | 'ở' | 'ỡ' | 'ợ' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => 's',
        'ţ' | 'ť' | 'ŧ' | 'ț' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' | 'ư' | 'ǔ' | 'ǖ' | 'ǘ' | 'ǚ'
        | 'ǜ' | 'ụ' | 'ủ' | 'ứ' | 'ừ' | 'ử' | 'ữ' | 'ự' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' | 'ỳ' | 'ỵ' | 'ỷ' | 'ỹ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        'æ' => return Two('a', 'e'),
        'œ' => return Two('o', 'e'),
        'ß' => return Two('s', 's'),
        'þ' => return Two('t', 'h'),
        'ĳ' => return Two('i', 'j'),
        _ => return Keep,
    };
    One(base)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use serde_json::{json, Value};

    use crate::fhir::registry::Registry;

    pub const TYPES: [&str; 10] = [
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "HealthcareService",
        "Schedule",
        "Slot",
        "Appointment",
        "AppointmentResponse",
    ];

    fn sp(
        code: &str,
        ptype: &str,
        base: &[&str],
        expression: Option<&str>,
        target: &[&str],
    ) -> Value {
        let mut v = json!({
            "resourceType": "SearchParameter", "code": code, "type": ptype, "base": base,
            "url": format!("http://hl7.org/fhir/SearchParameter/{code}"),
        });
        if let Some(e) = expression {
            v["expression"] = json!(e);
        }
        if !target.is_empty() {
            v["target"] = json!(target);
        }
        v
    }

    /// The R4 parameters the unit tests use (and two made-up number/quantity ones on Slot).
    pub fn registry() -> Registry {
        let actors = [
            "Practitioner",
            "Patient",
            "HealthcareService",
            "PractitionerRole",
            "Location",
            "Device",
        ];
        let params = vec![
            sp("_id", "token", &["Resource"], Some("Resource.id"), &[]),
            sp("_lastUpdated", "date", &["Resource"], Some("Resource.meta.lastUpdated"), &[]),
            sp("_tag", "token", &["Resource"], Some("Resource.meta.tag"), &[]),
            sp("_security", "token", &["Resource"], Some("Resource.meta.security"), &[]),
            sp("_profile", "uri", &["Resource"], Some("Resource.meta.profile"), &[]),
            sp("_source", "uri", &["Resource"], Some("Resource.meta.source"), &[]),
            sp("_text", "string", &["DomainResource"], None, &[]),
            sp("_content", "string", &["Resource"], None, &[]),
            sp("family", "string", &["Patient", "Practitioner"], Some("Patient.name.family | Practitioner.name.family"), &[]),
            sp("name", "string", &["Patient", "Practitioner"], Some("Patient.name | Practitioner.name"), &[]),
            sp("identifier", "token", &["Patient", "Practitioner", "Slot", "Schedule"], Some("Patient.identifier | Practitioner.identifier | Slot.identifier | Schedule.identifier"), &[]),
            sp("gender", "token", &["Patient", "Practitioner"], Some("Patient.gender | Practitioner.gender"), &[]),
            sp("birthdate", "date", &["Patient"], Some("Patient.birthDate"), &[]),
            sp("near", "special", &["Location"], Some("Location.position"), &[]),
            sp("name", "string", &["Location", "Organization", "HealthcareService"], Some("Location.name | Organization.name | HealthcareService.name"), &[]),
            sp("actor", "reference", &["Schedule"], Some("Schedule.actor"), &actors),
            sp("active", "token", &["Schedule"], Some("Schedule.active"), &[]),
            sp("schedule", "reference", &["Slot"], Some("Slot.schedule"), &["Schedule"]),
            sp("start", "date", &["Slot"], Some("Slot.start"), &[]),
            sp("status", "token", &["Slot"], Some("Slot.status"), &[]),
            sp("service-type", "token", &["Slot"], Some("Slot.serviceType"), &[]),
            sp("x-comment", "string", &["Slot"], Some("Slot.comment"), &[]),
            sp("x-number", "number", &["Slot"], Some("Slot.extension('n').value"), &[]),
            sp("x-quantity", "quantity", &["Slot"], Some("Slot.extension('q').value"), &[]),
            sp("status", "token", &["Appointment"], Some("Appointment.status"), &[]),
            sp("date", "date", &["Appointment"], Some("Appointment.start"), &[]),
            sp("actor", "reference", &["Appointment"], Some("Appointment.participant.actor"), &actors),
            sp("patient", "reference", &["Appointment"], Some("Appointment.participant.actor.where(resolve() is Patient)"), &["Patient"]),
            sp("practitioner", "reference", &["Appointment"], Some("Appointment.participant.actor.where(resolve() is Practitioner)"), &["Practitioner"]),
            sp("slot", "reference", &["Appointment"], Some("Appointment.slot"), &["Slot"]),
            sp(
                "appointment",
                "reference",
                &["AppointmentResponse"],
                Some("AppointmentResponse.appointment"),
                &["Appointment"],
            ),
            sp(
                "part-status",
                "token",
                &["AppointmentResponse"],
                Some("AppointmentResponse.participantStatus"),
                &[],
            ),
        ];
        Registry::from_search_parameters(&params, &TYPES).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_case_and_accents() {
        assert_eq!(normalize("Zoë Müller-Łukasz"), "zoe muller-lukasz");
        assert_eq!(normalize("STRAßE Æther"), "strasse aether");
        // Decomposed input: e + combining acute.
        assert_eq!(normalize("Re\u{301}my"), "remy");
        assert_eq!(normalize("İstanbul"), "istanbul");
        assert_eq!(normalize("日本"), "日本");
    }
}
