//! Operation parameters: from a `Parameters` resource, a bare resource body, or the query string.

use serde_json::Value;

use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;

/// One input parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Any primitive `value[x]` (or a Reference's `reference`), as text.
    Text(String),
    /// A `resource` parameter, or a complex value such as a CodeableConcept.
    Json(Value),
}

#[derive(Debug, Clone, Default)]
pub struct OpParams {
    pub values: Vec<(String, ParamValue)>,
}

impl OpParams {
    pub fn from_query(pairs: &[(String, String)]) -> Self {
        Self {
            values: pairs
                .iter()
                .filter(|(k, _)| k != "_format" && k != "_pretty")
                .map(|(k, v)| (k.clone(), ParamValue::Text(v.clone())))
                .collect(),
        }
    }

    /// A `Parameters` body, or — as the Argonaut IG allows — the Appointment itself, taken as
    /// `appt-resource`.
    pub fn from_body(body: Value) -> FhirResult<Self> {
        match body["resourceType"].as_str() {
            Some("Parameters") => {}
            Some("Appointment") => {
                return Ok(Self {
                    values: vec![("appt-resource".into(), ParamValue::Json(body))],
                })
            }
            _ => {
                return Err(FhirError::invalid_at(
                    IssueCode::Structure,
                    "Parameters",
                    "An operation body is a Parameters resource (or the Appointment itself)",
                ))
            }
        }
        let mut values = Vec::new();
        for (i, p) in body["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = p["name"].as_str().ok_or_else(|| {
                FhirError::invalid_at(
                    IssueCode::Required,
                    &format!("Parameters.parameter[{i}].name"),
                    "Each parameter needs a name",
                )
            })?;
            let value = if let Some(r) = p.get("resource") {
                ParamValue::Json(r.clone())
            } else if let Some((_, v)) = p
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
            {
                match v {
                    Value::String(s) => ParamValue::Text(s.clone()),
                    Value::Number(n) => ParamValue::Text(n.to_string()),
                    Value::Bool(b) => ParamValue::Text(b.to_string()),
                    Value::Object(o) if o.contains_key("reference") => {
                        ParamValue::Text(o["reference"].as_str().unwrap_or_default().to_string())
                    }
                    other => ParamValue::Json(other.clone()),
                }
            } else {
                continue;
            };
            values.push((name.to_string(), value));
        }
        Ok(Self { values })
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.iter().find_map(|(k, v)| match v {
            ParamValue::Text(t) if k == name => Some(t.as_str()),
            _ => None,
        })
    }

    pub fn texts(&self, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter_map(|(k, v)| match v {
                ParamValue::Text(t) if k == name => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn json(&self, name: &str) -> Option<&Value> {
        self.values.iter().find_map(|(k, v)| match v {
            ParamValue::Json(j) if k == name => Some(j),
            _ => None,
        })
    }
}

/// `Appointment/x`, `x`, or `[base]/Appointment/x` → `x`.
pub fn appointment_id(v: &str) -> FhirResult<String> {
    let id = v.rsplit_once("Appointment/").map_or(v, |(_, id)| id);
    let id = id.split('/').next().unwrap_or_default();
    crate::fhir::service::check_id(id)?;
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_and_bare_resources() {
        let p = OpParams::from_body(json!({"resourceType": "Parameters", "parameter": [
            {"name": "appt-id", "valueUrl": "Appointment/a1"},
            {"name": "reason", "valueCodeableConcept": {"text": "sick"}},
            {"name": "appt-resource", "resource": {"resourceType": "Appointment"}}]}))
        .unwrap();
        assert_eq!(p.text("appt-id"), Some("Appointment/a1"));
        assert_eq!(p.json("reason").unwrap()["text"], "sick");
        assert!(p.json("appt-resource").is_some());
        let bare =
            OpParams::from_body(json!({"resourceType": "Appointment", "status": "proposed"}))
                .unwrap();
        assert!(bare.json("appt-resource").is_some());
        assert!(OpParams::from_body(json!({"resourceType": "Patient"})).is_err());
        assert_eq!(
            appointment_id("http://x/fhir/Appointment/a-1").unwrap(),
            "a-1"
        );
        assert!(appointment_id("Appointment/a b").is_err());
    }
}
