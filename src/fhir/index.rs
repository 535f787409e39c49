//! Search index extraction: a resource and the registry in, the rows to store out.
//! Pure: no IO. The store writes these rows in the same transaction as the resource.

use serde_json::{Number, Value};

use crate::fhir::datetime::{self, Kind};
use crate::fhir::fhirpath::{self, Node};
use crate::fhir::registry::{ParamType, Registry};
use crate::fhir::search::normalize;

/// One value of one search parameter of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// The search parameter code, e.g. `schedule`.
    pub param: String,
    pub value: IndexValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// token: Coding/CodeableConcept/Identifier/ContactPoint/code/boolean/id/string-as-token.
    /// `text` holds the display/text (lowercased, for `:text`).
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// string: `norm` is lowercased with accents removed (default search: starts-with, and
    /// `:contains`); `exact` is the value as written (`:exact`).
    String { norm: String, exact: String },
    /// date: an inclusive range in microseconds since the epoch (see `fhir::datetime`).
    Date { lo: i64, hi: i64 },
    /// reference: a relative reference split into type and id; absolute URLs and canonicals keep
    /// `url` (and, when the URL ends in Type/id, the type and id too).
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: Option<String>,
    },
    /// number: the value and its implicit precision range.
    Number { value: f64, lo: f64, hi: f64 },
    /// quantity: value with precision range and unit identity.
    Quantity {
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    /// uri: as written.
    Uri { uri: String },
    /// special `near`: a point in decimal degrees (WGS84).
    Geo { lat: f64, lon: f64 },
    /// Not a search parameter: a row of the open-slot index `$find` walks (see
    /// [`open_slot_rows`]): a free Slot's start, its Schedule's id and one specialty coding;
    /// `ord` 0 for the slot's first row.
    Open {
        lo: i64,
        schedule: String,
        system: Option<String>,
        code: Option<String>,
        ord: i64,
    },
}

/// The `param` of open-slot rows.
pub const OPEN_SLOT: &str = "open";

/// Most rows one parameter may produce for one resource (a guard against pathological input).
const MAX_ROWS_PER_PARAM: usize = 1000;

/// Parameters searched on the resource table's own columns, never on index rows.
const SERVED_FROM_RESOURCE_TABLE: &[&str] = &["_id", "_lastUpdated"];

/// The index rows of a resource: for every parameter of its type that has an expression, the
/// expression's results converted by parameter type. Composite and special parameters, `_id`
/// and `_lastUpdated` produce nothing here. Identical rows of one parameter are kept once.
///
/// String rows hold [`normalize`]d text in `norm`; token `text` (display, concept text,
/// identifier type text) is lowercased only, as `:text` search expects.
pub fn extract(registry: &Registry, resource: &Value) -> Vec<IndexRow> {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for def in registry.params_of(rtype) {
        if def.ptype == ParamType::Composite
            || SERVED_FROM_RESOURCE_TABLE.contains(&def.code.as_str())
        {
            continue;
        }
        let Some(expr) = registry.compiled(def) else {
            continue;
        };
        let Ok(nodes) = fhirpath::evaluate(expr, resource) else {
            continue;
        };
        let mut values: Vec<IndexValue> = Vec::new();
        for node in &nodes {
            for v in convert(def.ptype, node) {
                if values.len() >= MAX_ROWS_PER_PARAM {
                    break;
                }
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
        rows.extend(values.into_iter().map(|value| IndexRow {
            param: def.code.clone(),
            value,
        }));
    }
    if rtype == "Slot" {
        let open = open_slot_rows(&rows);
        rows.extend(open);
    }
    rows
}

/// The open-slot rows of a Slot, from its other index rows: when it is free (it has a
/// `free-start`) and names its Schedule by a relative reference, one row per distinct
/// specialty coding (one without, when it has none), each carrying the start and the
/// schedule. `$find` walks them in start order and tests the schedule and the specialty on
/// the row it reads.
fn open_slot_rows(rows: &[IndexRow]) -> Vec<IndexRow> {
    let lo = rows.iter().find_map(|r| match &r.value {
        IndexValue::Date { lo, .. } if r.param == "free-start" => Some(*lo),
        _ => None,
    });
    let schedule = rows.iter().find_map(|r| match &r.value {
        IndexValue::Reference {
            target_type: Some(t),
            target_id: Some(id),
            url: None,
        } if r.param == "schedule" && t == "Schedule" => Some(id.clone()),
        _ => None,
    });
    let (Some(lo), Some(schedule)) = (lo, schedule) else {
        return Vec::new();
    };
    let mut codings: Vec<(Option<String>, Option<String>)> = Vec::new();
    for r in rows.iter().filter(|r| r.param == "specialty") {
        if let IndexValue::Token {
            system,
            code: Some(code),
            ..
        } = &r.value
        {
            let c = (system.clone(), Some(code.clone()));
            if !codings.contains(&c) {
                codings.push(c);
            }
        }
    }
    codings.sort();
    if codings.is_empty() {
        codings.push((None, None));
    }
    codings
        .into_iter()
        .zip(0..)
        .map(|((system, code), ord)| IndexRow {
            param: OPEN_SLOT.to_string(),
            value: IndexValue::Open {
                lo,
                schedule: schedule.clone(),
                system,
                code,
                ord,
            },
        })
        .collect()
}

/// A `position`-shaped node (`latitude`, `longitude` in decimal degrees, WGS84).
fn geo(v: &Value) -> Option<IndexValue> {
    let lat = v.get("latitude")?.as_f64()?;
    let lon = v.get("longitude")?.as_f64()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
        .then_some(IndexValue::Geo { lat, lon })
}

fn convert(ptype: ParamType, node: &Node<'_>) -> Vec<IndexValue> {
    if node.resolved {
        return Vec::new();
    }
    let v: &Value = &node.value;
    match ptype {
        ParamType::Token => tokens(v, node.type_name),
        ParamType::String => strings(v),
        ParamType::Date => dates(v),
        ParamType::Reference => reference(v).into_iter().collect(),
        ParamType::Number => number(v).into_iter().collect(),
        ParamType::Quantity => quantity(v).into_iter().collect(),
        ParamType::Uri => match v {
            Value::String(s) if !s.is_empty() => vec![IndexValue::Uri { uri: s.clone() }],
            _ => Vec::new(),
        },
        // The only special parameter of our types is Location `near` over `Location.position`.
        ParamType::Special => geo(v).into_iter().collect(),
        ParamType::Composite => Vec::new(),
    }
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}

/// ContactPoint.system codes: an object with one of these as `system` is a ContactPoint, not an
/// Identifier (whose system is a URI).
const CONTACT_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];

fn tokens(v: &Value, type_name: Option<&str>) -> Vec<IndexValue> {
    let token = |system: Option<&str>, code: Option<&str>, text: Option<&str>| IndexValue::Token {
        system: owned(system),
        code: owned(code),
        text: text.map(str::to_lowercase),
    };
    match v {
        Value::String(s) if !s.is_empty() => vec![token(None, Some(s), None)],
        Value::Bool(b) => vec![token(None, Some(if *b { "true" } else { "false" }), None)],
        Value::Number(n) => vec![token(None, Some(&n.to_string()), None)],
        Value::Object(o) => {
            let text = str_of(v, "text");
            if let Some(codings) = o.get("coding").filter(|_| type_name != Some("Coding")) {
                // CodeableConcept: one row per coding with its display, and one row for the
                // concept's text: `:text` matches either (R4 search, token `:text`).
                let mut out: Vec<IndexValue> = codings
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| {
                        let (system, code) = (str_of(c, "system"), str_of(c, "code"));
                        (system.is_some() || code.is_some())
                            .then(|| token(system, code, str_of(c, "display")))
                    })
                    .collect();
                if text.is_some() {
                    out.push(token(None, None, text));
                }
                return out;
            }
            if type_name == Some("CodeableConcept") || (o.len() == 1 && text.is_some()) {
                return text
                    .map(|t| token(None, None, Some(t)))
                    .into_iter()
                    .collect();
            }
            if o.contains_key("code") || type_name == Some("Coding") {
                let (system, code) = (str_of(v, "system"), str_of(v, "code"));
                if system.is_none() && code.is_none() {
                    return Vec::new();
                }
                return vec![token(system, code, str_of(v, "display"))];
            }
            let (system, value) = (str_of(v, "system"), str_of(v, "value"));
            let contact_point = type_name == Some("ContactPoint")
                || o.contains_key("rank")
                || system.is_some_and(|s| CONTACT_SYSTEMS.contains(&s));
            if contact_point {
                // Telecom tokens match on the value alone.
                value
                    .map(|value| token(None, Some(value), None))
                    .into_iter()
                    .collect()
            } else if system.is_some() || value.is_some() {
                // Identifier
                let type_text = v.get("type").and_then(|t| str_of(t, "text"));
                vec![token(system, value, type_text)]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn string_row(s: &str) -> IndexValue {
    IndexValue::String {
        norm: normalize(s),
        exact: s.to_string(),
    }
}

/// HumanName and Address parts that string search matches.
const NAME_PARTS: &[&str] = &["family", "given", "prefix", "suffix", "text"];
const ADDRESS_PARTS: &[&str] = &[
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
];

fn strings(v: &Value) -> Vec<IndexValue> {
    match v {
        Value::String(s) if !s.is_empty() => vec![string_row(s)],
        Value::Object(o) => {
            let is_name = NAME_PARTS
                .iter()
                .any(|k| o.contains_key(*k) && *k != "text");
            let parts = if is_name { NAME_PARTS } else { ADDRESS_PARTS };
            let mut out = Vec::new();
            for part in parts {
                match o.get(*part) {
                    Some(Value::String(s)) if !s.is_empty() => out.push(string_row(s)),
                    Some(Value::Array(items)) => out.extend(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .map(string_row),
                    ),
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn date_of(s: &str) -> Option<IndexValue> {
    let (r, _) = datetime::parse(s, Kind::DateTime).or_else(|| datetime::parse(s, Kind::Search))?;
    Some(IndexValue::Date { lo: r.lo, hi: r.hi })
}

fn dates(v: &Value) -> Vec<IndexValue> {
    match v {
        Value::String(s) => date_of(s).into_iter().collect(),
        Value::Object(o) if o.contains_key("start") || o.contains_key("end") => {
            // Period
            datetime::period_range(str_of(v, "start"), str_of(v, "end"))
                .map(|r| IndexValue::Date { lo: r.lo, hi: r.hi })
                .into_iter()
                .collect()
        }
        Value::Object(o) => {
            // Timing: its explicit events.
            o.get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(date_of)
                .collect()
        }
        _ => Vec::new(),
    }
}

fn reference(v: &Value) -> Option<IndexValue> {
    match v {
        // canonical / uri
        Value::String(s) if !s.is_empty() => Some(IndexValue::Reference {
            target_type: None,
            target_id: None,
            url: Some(s.clone()),
        }),
        Value::Object(_) => {
            let r = str_of(v, "reference")?;
            if r.starts_with('#') || r.starts_with("urn:") {
                // Contained resources and transaction placeholders are not indexed.
                return None;
            }
            let split = fhirpath::reference_type_id(r);
            if r.contains("://") {
                Some(IndexValue::Reference {
                    target_type: owned(split.map(|s| s.0)),
                    target_id: owned(split.map(|s| s.1)),
                    url: Some(r.to_string()),
                })
            } else {
                let (t, id) = split?;
                Some(IndexValue::Reference {
                    target_type: Some(t.to_string()),
                    target_id: Some(id.to_string()),
                    url: None,
                })
            }
        }
        _ => None,
    }
}

/// A decimal and the range its written precision implies: `100` → [99.5, 100.5],
/// `1.50` → [1.495, 1.505]. serde_json keeps integers apart from decimals but not trailing
/// zeros, so `1.50` reads as `1.5`.
fn with_precision(n: &Number) -> Option<Bounds> {
    let value = n.as_f64().filter(|x| x.is_finite())?;
    let text = n.to_string();
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let half = 0.5 * 10f64.powi(exp.saturating_sub(decimals));
    Some((value, value - half, value + half))
}

fn number(v: &Value) -> Option<IndexValue> {
    match v {
        Value::Number(n) => {
            let (value, lo, hi) = with_precision(n)?;
            Some(IndexValue::Number { value, lo, hi })
        }
        Value::Object(_) => {
            // Range: low..high, open ends unbounded.
            let (low, high) = range_bounds(v)?;
            let value = if low.0 == f64::MIN { high.0 } else { low.0 };
            Some(IndexValue::Number {
                value,
                lo: low.1,
                hi: high.2,
            })
        }
        _ => None,
    }
}

/// A value with its precision range: (value, lo, hi).
type Bounds = (f64, f64, f64);

/// Bounds of a Range as (value, lo, hi) of each end; a missing end is unbounded.
fn range_bounds(v: &Value) -> Option<(Bounds, Bounds)> {
    let end = |k: &str| {
        v.get(k)
            .and_then(|q| q.get("value"))
            .and_then(Value::as_number)
            .and_then(with_precision)
    };
    let (low, high) = (end("low"), end("high"));
    if low.is_none() && high.is_none() {
        return None;
    }
    let low = low.unwrap_or((f64::MIN, f64::MIN, f64::MIN));
    let high = high.unwrap_or((f64::MAX, f64::MAX, f64::MAX));
    Some((low, high))
}

fn quantity(v: &Value) -> Option<IndexValue> {
    let Value::Object(o) = v else { return None };
    if let Some(n) = o.get("value").and_then(Value::as_number) {
        let (value, lo, hi) = with_precision(n)?;
        // Money has `currency` instead of a unit.
        let (system, code) = match str_of(v, "currency") {
            Some(c) => (Some("urn:iso:std:iso:4217"), Some(c)),
            None => (str_of(v, "system"), str_of(v, "code")),
        };
        return Some(IndexValue::Quantity {
            value,
            lo,
            hi,
            system: owned(system),
            code: owned(code),
            unit: owned(str_of(v, "unit")),
        });
    }
    // Range: the unit of whichever end is given.
    let (low, high) = range_bounds(v)?;
    let unit_of = o
        .get("low")
        .filter(|q| q.get("value").is_some())
        .or_else(|| o.get("high"))?;
    let value = if low.0 == f64::MIN { high.0 } else { low.0 };
    Some(IndexValue::Quantity {
        value,
        lo: low.1,
        hi: high.2,
        system: owned(str_of(unit_of, "system")),
        code: owned(str_of(unit_of, "code")),
        unit: owned(str_of(unit_of, "unit")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::datetime::format_instant;
    use serde_json::json;

    const TYPES: &[&str] = &[
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

    fn registry() -> Registry {
        let bundle: Value =
            serde_json::from_str(include_str!("../../profiles/search-parameters.json")).unwrap();
        let params = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"]);
        Registry::from_search_parameters(params, TYPES).unwrap()
    }

    fn rows_of<'r>(rows: &'r [IndexRow], param: &str) -> Vec<&'r IndexValue> {
        rows.iter()
            .filter(|r| r.param == param)
            .map(|r| &r.value)
            .collect()
    }

    fn tok(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
        IndexValue::Token {
            system: system.map(String::from),
            code: code.map(String::from),
            text: text.map(String::from),
        }
    }

    fn refr(t: &str, id: &str) -> IndexValue {
        IndexValue::Reference {
            target_type: Some(t.into()),
            target_id: Some(id.into()),
            url: None,
        }
    }

    fn string(norm: &str, exact: &str) -> IndexValue {
        IndexValue::String {
            norm: norm.into(),
            exact: exact.into(),
        }
    }

    fn date(lo: &str, hi_exclusive: &str) -> (String, String) {
        (lo.to_string(), hi_exclusive.to_string())
    }

    fn as_dates(values: &[&IndexValue]) -> Vec<(String, String)> {
        values
            .iter()
            .map(|v| match v {
                IndexValue::Date { lo, hi } => {
                    (format_instant(*lo), format_instant(hi.saturating_add(1)))
                }
                other => panic!("not a date: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_expression_of_our_types_parses() {
        let reg = registry();
        let mut n = 0;
        for t in TYPES {
            for def in reg.params_of(t) {
                if def.expression.is_some() {
                    assert!(reg.compiled(def).is_some(), "{t}.{}", def.code);
                    n += 1;
                }
            }
        }
        assert!(n > 100, "only {n} expressions");
    }

    #[test]
    fn appointment() {
        let appt = json!({
            "resourceType": "Appointment",
            "id": "a1",
            "status": "booked",
            "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009",
                "display": "General practice"}], "text": "Général"}],
            "start": "2026-03-01T10:00:00+01:00",
            "end": "2026-03-01T10:30:00+01:00",
            "slot": [{"reference": "Slot/s1"}],
            "participant": [
                {"actor": {"reference": "Patient/p1", "display": "Anna"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr1/_history/4"}, "status": "accepted"},
                {"actor": {"reference": "https://other.example/fhir/Location/l1"}, "status": "tentative"},
                {"actor": {"reference": "urn:uuid:5b1f7a4c-0000-4000-8000-000000000000"}, "status": "needs-action"},
                {"actor": {"type": "Practitioner", "identifier": {"value": "x"}}, "status": "declined"},
                {"actor": {"reference": "#contained"}, "status": "accepted"}
            ]
        });
        let rows = extract(&registry(), &appt);
        assert_eq!(rows_of(&rows, "patient"), vec![&refr("Patient", "p1")]);
        assert_eq!(
            rows_of(&rows, "practitioner"),
            vec![&refr("Practitioner", "dr1")]
        );
        let location = IndexValue::Reference {
            target_type: Some("Location".into()),
            target_id: Some("l1".into()),
            url: Some("https://other.example/fhir/Location/l1".into()),
        };
        assert_eq!(rows_of(&rows, "location"), vec![&location]);
        assert_eq!(
            rows_of(&rows, "actor"),
            vec![
                &refr("Patient", "p1"),
                &refr("Practitioner", "dr1"),
                &location
            ]
        );
        assert_eq!(
            rows_of(&rows, "part-status"),
            ["accepted", "tentative", "needs-action", "declined"]
                .iter()
                .map(|c| tok(None, Some(c), None))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            rows_of(&rows, "status"),
            vec![&tok(None, Some("booked"), None)]
        );
        assert_eq!(
            rows_of(&rows, "service-type"),
            vec![
                &tok(
                    Some("http://snomed.info/sct"),
                    Some("394814009"),
                    Some("general practice")
                ),
                &tok(None, None, Some("général"))
            ]
        );
        assert_eq!(rows_of(&rows, "slot"), vec![&refr("Slot", "s1")]);
        assert_eq!(
            as_dates(&rows_of(&rows, "date")),
            vec![date("2026-03-01T09:00:00.000Z", "2026-03-01T09:00:01.000Z")]
        );
    }

    #[test]
    fn patient() {
        let p = json!({
            "resourceType": "Patient",
            "id": "p1",
            "active": true,
            "identifier": [{"system": "urn:oid:2.16.756.5.32", "value": "7560000000001",
                "type": {"text": "AHV-Nummer"}}],
            "name": [
                {"use": "official", "family": "Müller-Lüdenscheidt", "given": ["Anna", "Zoë"],
                 "prefix": ["Dr."]},
                {"text": "Anna Straße"}
            ],
            "telecom": [
                {"system": "phone", "value": "+41 44 000 00 00", "use": "work"},
                {"system": "email", "value": "Anna@Example.org"},
                {"system": "phone", "value": "+41 44 000 00 00", "use": "home"}
            ],
            "gender": "female",
            "birthDate": "1980-05",
            "deceasedDateTime": "2025-12-24T18:00:00Z",
            "address": [{"line": ["Bahnhofstraße 1"], "city": "Zürich", "postalCode": "8001",
                "country": "CH"}],
            "generalPractitioner": [{"reference": "Practitioner/dr1"}],
            "managingOrganization": {"reference": "Organization/o1"}
        });
        let rows = extract(&registry(), &p);
        assert_eq!(
            rows_of(&rows, "family"),
            vec![&string("muller-ludenscheidt", "Müller-Lüdenscheidt")]
        );
        assert_eq!(
            rows_of(&rows, "given"),
            vec![&string("anna", "Anna"), &string("zoe", "Zoë")]
        );
        assert_eq!(
            rows_of(&rows, "name"),
            vec![
                &string("muller-ludenscheidt", "Müller-Lüdenscheidt"),
                &string("anna", "Anna"),
                &string("zoe", "Zoë"),
                &string("dr.", "Dr."),
                &string("anna strasse", "Anna Straße"),
            ]
        );
        assert_eq!(
            rows_of(&rows, "address"),
            vec![
                &string("bahnhofstrasse 1", "Bahnhofstraße 1"),
                &string("zurich", "Zürich"),
                &string("8001", "8001"),
                &string("ch", "CH"),
            ]
        );
        assert_eq!(
            rows_of(&rows, "address-city"),
            vec![&string("zurich", "Zürich")]
        );
        assert_eq!(
            as_dates(&rows_of(&rows, "birthdate")),
            vec![date("1980-05-01T00:00:00.000Z", "1980-06-01T00:00:00.000Z")]
        );
        assert_eq!(
            as_dates(&rows_of(&rows, "death-date")),
            vec![date("2025-12-24T18:00:00.000Z", "2025-12-24T18:00:01.000Z")]
        );
        assert_eq!(
            rows_of(&rows, "deceased"),
            vec![&tok(None, Some("true"), None)]
        );
        assert_eq!(
            rows_of(&rows, "email"),
            vec![&tok(None, Some("Anna@Example.org"), None)]
        );
        // Two identical telecom values: one row.
        assert_eq!(
            rows_of(&rows, "phone"),
            vec![&tok(None, Some("+41 44 000 00 00"), None)]
        );
        assert_eq!(rows_of(&rows, "telecom").len(), 2);
        assert_eq!(
            rows_of(&rows, "identifier"),
            vec![&tok(
                Some("urn:oid:2.16.756.5.32"),
                Some("7560000000001"),
                Some("ahv-nummer")
            )]
        );
        assert_eq!(
            rows_of(&rows, "active"),
            vec![&tok(None, Some("true"), None)]
        );
        assert_eq!(
            rows_of(&rows, "gender"),
            vec![&tok(None, Some("female"), None)]
        );
        assert_eq!(
            rows_of(&rows, "general-practitioner"),
            vec![&refr("Practitioner", "dr1")]
        );
        assert_eq!(
            rows_of(&rows, "organization"),
            vec![&refr("Organization", "o1")]
        );
        // Served from the resource table.
        assert!(rows_of(&rows, "_id").is_empty());

        let alive = json!({"resourceType": "Patient", "deceasedBoolean": false});
        let rows = extract(&registry(), &alive);
        assert_eq!(
            rows_of(&rows, "deceased"),
            vec![&tok(None, Some("false"), None)]
        );
        assert!(rows_of(&rows, "death-date").is_empty());
    }

    #[test]
    fn slot_and_schedule() {
        let reg = registry();
        let slot = json!({
            "resourceType": "Slot",
            "id": "s1",
            "schedule": {"reference": "Schedule/sch1"},
            "status": "free",
            "start": "2026-03-01T10:00:00Z",
            "end": "2026-03-01T10:30:00Z",
            "serviceType": [{"text": "Hausarzt"}]
        });
        let rows = extract(&reg, &slot);
        assert_eq!(rows_of(&rows, "schedule"), vec![&refr("Schedule", "sch1")]);
        assert_eq!(
            rows_of(&rows, "status"),
            vec![&tok(None, Some("free"), None)]
        );
        assert_eq!(
            rows_of(&rows, "service-type"),
            vec![&tok(None, None, Some("hausarzt"))]
        );
        assert_eq!(
            as_dates(&rows_of(&rows, "start")),
            vec![date("2026-03-01T10:00:00.000Z", "2026-03-01T10:00:01.000Z")]
        );

        let schedule = json!({
            "resourceType": "Schedule",
            "id": "sch1",
            "active": true,
            "actor": [{"reference": "Practitioner/dr1"}, {"reference": "Location/l1"}],
            "planningHorizon": {"start": "2026-03-01", "end": "2026-03-31"}
        });
        let rows = extract(&reg, &schedule);
        assert_eq!(
            rows_of(&rows, "actor"),
            vec![&refr("Practitioner", "dr1"), &refr("Location", "l1")]
        );
        assert_eq!(
            as_dates(&rows_of(&rows, "date")),
            vec![date("2026-03-01T00:00:00.000Z", "2026-04-01T00:00:00.000Z")]
        );
        let open = json!({"resourceType": "Schedule", "planningHorizon": {"start": "2026-03-01"}});
        match rows_of(&extract(&reg, &open), "date").as_slice() {
            [IndexValue::Date { hi, .. }] => assert_eq!(*hi, i64::MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn location_position_is_indexed_for_near() {
        let loc = json!({
            "resourceType": "Location",
            "name": "Praxis Zentrum",
            "alias": ["Zentrum"],
            "position": {"longitude": 8.54, "latitude": 47.37},
            "partOf": {"reference": "Location/l0"}
        });
        let rows = extract(&registry(), &loc);
        assert_eq!(
            rows_of(&rows, "near"),
            vec![&IndexValue::Geo {
                lat: 47.37,
                lon: 8.54
            }]
        );
        assert_eq!(
            rows_of(&rows, "name"),
            vec![
                &string("praxis zentrum", "Praxis Zentrum"),
                &string("zentrum", "Zentrum")
            ]
        );
        assert_eq!(rows_of(&rows, "partof"), vec![&refr("Location", "l0")]);
    }

    #[test]
    fn numbers_and_quantities_keep_their_precision() {
        let n = |v: Value| match number(&v) {
            Some(IndexValue::Number { value, lo, hi }) => (value, lo, hi),
            other => panic!("{other:?}"),
        };
        assert_eq!(n(json!(100)), (100.0, 99.5, 100.5));
        let (v, lo, hi) = n(json!(1.25));
        assert_eq!(v, 1.25);
        assert!((lo - 1.245).abs() < 1e-12 && (hi - 1.255).abs() < 1e-12);
        let (_, lo, hi) = n(json!(1.5e-7));
        assert!((hi - lo - 1e-8).abs() < 1e-20);
        match quantity(
            &json!({"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}),
        ) {
            Some(IndexValue::Quantity {
                value,
                lo,
                hi,
                system,
                code,
                unit,
            }) => {
                assert_eq!(value, 5.4);
                assert!((lo - 5.35).abs() < 1e-12 && (hi - 5.45).abs() < 1e-12);
                assert_eq!(system.as_deref(), Some("http://unitsofmeasure.org"));
                assert_eq!(code.as_deref(), Some("mg"));
                assert_eq!(unit.as_deref(), Some("mg"));
            }
            other => panic!("{other:?}"),
        }
        assert!(quantity(&json!({"unit": "mg"})).is_none());
    }

    #[test]
    fn tokens_by_shape() {
        let t = |v: Value| tokens(&v, None);
        assert_eq!(
            t(json!({"system": "http://loinc.org", "code": "1-8", "display": "Ä B"})),
            vec![tok(Some("http://loinc.org"), Some("1-8"), Some("ä b"))]
        );
        assert_eq!(
            t(json!({"coding": [{"system": "s", "code": "a"}, {"code": "b", "display": "Bee"}]})),
            vec![
                tok(Some("s"), Some("a"), None),
                tok(None, Some("b"), Some("bee"))
            ]
        );
        assert_eq!(
            t(json!({"system": "email", "value": "x@y"})),
            vec![tok(None, Some("x@y"), None)]
        );
        assert_eq!(
            t(json!({"system": "urn:x"})),
            vec![tok(Some("urn:x"), None, None)]
        );
        assert!(t(json!({"coding": []})).is_empty());
        assert!(t(json!({})).is_empty());
        assert!(t(json!(null)).is_empty());
        assert!(t(json!("")).is_empty());
    }

    #[test]
    fn references_by_shape() {
        assert_eq!(
            reference(&json!({"reference": "Patient/1/_history/2"})),
            Some(refr("Patient", "1"))
        );
        assert_eq!(reference(&json!({"reference": "#p"})), None);
        assert_eq!(reference(&json!({"reference": "urn:uuid:1234"})), None);
        assert_eq!(reference(&json!({"reference": "garbage"})), None);
        assert_eq!(reference(&json!({"identifier": {"value": "1"}})), None);
        assert_eq!(
            reference(&json!({"reference": "http://example.org/x"})),
            Some(IndexValue::Reference {
                target_type: None,
                target_id: None,
                url: Some("http://example.org/x".into())
            })
        );
        assert_eq!(
            reference(&json!("http://hl7.org/fhir/ValueSet/x|4.0.1")),
            Some(IndexValue::Reference {
                target_type: None,
                target_id: None,
                url: Some("http://hl7.org/fhir/ValueSet/x|4.0.1".into())
            })
        );
    }

    #[test]
    fn odd_resources_do_not_panic() {
        let reg = registry();
        for v in [
            json!(null),
            json!({"resourceType": "Nope"}),
            json!({"resourceType": "Patient", "name": "x", "telecom": [1, null], "birthDate": 5,
                "deceasedBoolean": "yes", "identifier": {"value": {}}}),
            json!({"resourceType": "Appointment", "participant": [{"actor": "Patient/1"}],
                "start": "not a date", "slot": [{"reference": 3}]}),
            json!({"resourceType": "Schedule", "planningHorizon": {"start": "x", "end": []}}),
        ] {
            let _ = extract(&reg, &v);
        }
    }
}
