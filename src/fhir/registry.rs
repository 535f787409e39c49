//! The search parameters the server supports, loaded from `profiles/` (FHIR SearchParameter
//! resources in a Bundle). What is listed here is what is indexed, searchable and declared in
//! `/metadata`; nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::fhir::fhirpath;

/// R4 `SearchParamType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "number" => Self::Number,
            "date" => Self::Date,
            "string" => Self::String,
            "token" => Self::Token,
            "reference" => Self::Reference,
            "composite" => Self::Composite,
            "quantity" => Self::Quantity,
            "uri" => Self::Uri,
            "special" => Self::Special,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Composite => "composite",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
            Self::Special => "special",
        }
    }
}

/// One search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParamDef {
    /// The name used in URLs, e.g. `schedule`.
    pub code: String,
    /// Canonical URL of the SearchParameter.
    pub url: String,
    pub ptype: ParamType,
    /// The FHIRPath expression restricted to this resource type's branch (unions for other
    /// types removed), e.g. `Slot.schedule`. `None` for parameters that are not indexed by path
    /// (`_id`, `_lastUpdated` are served from the resource table).
    pub expression: Option<String>,
    /// Resource types a reference parameter may point to.
    pub targets: Vec<String>,
    pub documentation: Option<String>,
}

/// All parameters by resource type, then by code.
#[derive(Debug, Default)]
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, Arc<SearchParamDef>>>,
    /// Parsed expressions, by expression text.
    compiled: HashMap<String, fhirpath::Expr>,
    /// Date parameters that index at most one value per resource, each narrower than this
    /// many microseconds (`hi - lo` below it), by resource type and code: see `date_width`.
    date_widths: HashMap<(String, String), i64>,
}

/// `where(…).element` → `element`: a `where` applied to the resource itself (the path's first
/// step after the type) keeps the resource or not, so what follows has as many values as it
/// has without it. Anything else is returned as it is.
fn strip_root_filter(path: &str) -> &str {
    let Some(args) = path.strip_prefix("where(") else {
        return path;
    };
    let mut depth = 1usize;
    let mut quoted = false;
    for (i, c) in args.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return args[i + 1..].strip_prefix('.').unwrap_or(path);
                }
            }
            _ => {}
        }
    }
    path
}

impl Registry {
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&Arc<SearchParamDef>> {
        self.by_type.get(resource_type)?.get(code)
    }

    /// Parameters of a type, sorted by code.
    pub fn params_of(&self, resource_type: &str) -> impl Iterator<Item = &Arc<SearchParamDef>> {
        self.by_type
            .get(resource_type)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// The parsed form of a parameter's expression (`None` without an expression, or when it
    /// could not be parsed).
    pub fn compiled(&self, def: &SearchParamDef) -> Option<&fhirpath::Expr> {
        self.compiled.get(def.expression.as_deref()?)
    }

    /// `Some(w)` when every resource of `resource_type` has at most one index row for the date
    /// parameter `code` and that row's range is narrower than `w` µs (`hi - lo < w`). The
    /// planner then tests several conditions on that one row and bounds `lo` from them.
    pub fn date_width(&self, resource_type: &str, code: &str) -> Option<i64> {
        self.date_widths
            .get(&(resource_type.to_string(), code.to_string()))
            .copied()
    }

    /// Learns `date_width` from the element definitions: a date parameter whose expression is
    /// `Type.element` or `Type.where(…).element` (the resource itself filtered: still at most
    /// one value), an element of at most one value of one type: `instant` (always to the
    /// second: narrower than 1 s), `date` or `dateTime` (at most a year: 367 days).
    pub fn learn_date_widths(&mut self, single_type: impl Fn(&str, &str) -> Option<String>) {
        let mut widths = HashMap::new();
        for (rt, params) in &self.by_type {
            for def in params.values() {
                if def.ptype != ParamType::Date {
                    continue;
                }
                let Some(element) = def
                    .expression
                    .as_deref()
                    .and_then(|e| e.strip_prefix(rt.as_str()))
                    .and_then(|e| e.strip_prefix('.'))
                    .map(strip_root_filter)
                else {
                    continue;
                };
                if element.is_empty() || !element.chars().all(|c| c.is_ascii_alphanumeric()) {
                    continue;
                }
                let width = match single_type(rt, element).as_deref() {
                    Some("instant") => 1_000_000,
                    Some("date" | "dateTime") => 367 * 86_400 * 1_000_000,
                    _ => continue,
                };
                widths.insert((rt.clone(), def.code.clone()), width);
            }
        }
        self.date_widths = widths;
    }

    /// Parses and caches an expression.
    fn compile(&mut self, expression: &str) -> Result<(), fhirpath::ParseError> {
        if !self.compiled.contains_key(expression) {
            let parsed = fhirpath::parse(expression)?;
            self.compiled.insert(expression.to_string(), parsed);
        }
        Ok(())
    }

    /// Adds a parameter; its expression is parsed here (an unparseable one is kept but not
    /// indexed: `compiled` returns `None`).
    pub fn insert(&mut self, resource_type: &str, def: SearchParamDef) {
        if let Some(e) = &def.expression {
            let _ = self.compile(e);
        }
        // What was learnt of a parameter of this code no longer holds.
        self.date_widths
            .remove(&(resource_type.to_string(), def.code.clone()));
        self.by_type
            .entry(resource_type.to_string())
            .or_default()
            .insert(def.code.clone(), Arc::new(def));
    }

    /// Builds the registry from SearchParameter resources, keeping only the given resource types.
    /// Expressions that cover several bases (`Patient.name | Practitioner.name`) are split so each
    /// type keeps only its own branch.
    pub fn from_search_parameters<'a>(
        params: impl IntoIterator<Item = &'a Value>,
        resource_types: &[&str],
    ) -> Result<Self, String> {
        let mut reg = Registry::default();
        for sp in params {
            let code = sp["code"].as_str().ok_or("SearchParameter without code")?;
            let url = sp["url"].as_str().unwrap_or_default();
            let ptype = ParamType::parse(sp["type"].as_str().unwrap_or_default())
                .ok_or_else(|| format!("SearchParameter {code}: bad type"))?;
            let targets: Vec<String> = sp["target"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let bases = sp["base"].as_array().cloned().unwrap_or_default();
            for base in bases.iter().filter_map(Value::as_str) {
                let applies: Vec<&str> = if base == "Resource" || base == "DomainResource" {
                    resource_types.to_vec()
                } else if resource_types.contains(&base) {
                    vec![base]
                } else {
                    continue;
                };
                for rt in applies {
                    let expression = sp["expression"]
                        .as_str()
                        .and_then(|e| branch_for(e, rt, base));
                    if let Some(e) = &expression {
                        reg.compile(e)
                            .map_err(|err| format!("SearchParameter {code} ({rt}): {err}: {e}"))?;
                    }
                    reg.insert(
                        rt,
                        SearchParamDef {
                            code: code.to_string(),
                            url: url.to_string(),
                            ptype,
                            expression,
                            targets: targets.clone(),
                            documentation: sp["description"].as_str().map(String::from),
                        },
                    );
                }
            }
        }
        Ok(reg)
    }
}

/// Keeps the union branches of `expr` that start with `resource_type` (or with `base` when the
/// parameter is declared on Resource/DomainResource), rewritten to start with `resource_type`.
fn branch_for(expr: &str, resource_type: &str, base: &str) -> Option<String> {
    let branches: Vec<String> = split_top_level_union(expr)
        .into_iter()
        .map(|b| strip_wrapping_parens(b.trim()).to_string())
        .filter_map(|b| {
            for prefix in [resource_type, base] {
                if let Some(rest) = b.strip_prefix(prefix) {
                    if rest.is_empty() || rest.starts_with('.') || rest.starts_with(' ') {
                        return Some(format!("{resource_type}{rest}"));
                    }
                }
            }
            None
        })
        .collect();
    if branches.is_empty() {
        None
    } else {
        Some(branches.join(" | "))
    }
}

/// `(a.b)` → `a.b`, but `a.where(b)` stays as it is.
fn strip_wrapping_parens(mut s: &str) -> &str {
    while s.starts_with('(') && s.ends_with(')') {
        let inner = &s[1..s.len() - 1];
        let mut depth = 0i32;
        let balanced = inner.chars().all(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            depth >= 0
        });
        if !balanced || depth != 0 {
            break;
        }
        s = inner.trim();
    }
    s
}

/// Splits `a | b | (c | d)` at the `|` that are not inside parentheses or quotes.
fn split_top_level_union(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in expr.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            '|' if !quoted && depth == 0 => {
                out.push(&expr[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&expr[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_branches_are_split_per_type() {
        let e = "Patient.name | Practitioner.name | Person.name";
        assert_eq!(
            branch_for(e, "Practitioner", "Practitioner").as_deref(),
            Some("Practitioner.name")
        );
        assert_eq!(
            branch_for("Resource.id", "Slot", "Resource").as_deref(),
            Some("Slot.id")
        );
        assert_eq!(
            branch_for("(Patient.deceased as dateTime)", "Patient", "Patient").as_deref(),
            Some("Patient.deceased as dateTime")
        );
        assert_eq!(
            branch_for(
                "Patient.telecom.where(system='email')",
                "Patient",
                "Patient"
            )
            .as_deref(),
            Some("Patient.telecom.where(system='email')")
        );
    }

    #[test]
    fn a_filter_on_the_resource_keeps_an_element_single_valued() {
        assert_eq!(strip_root_filter("where(status = 'free').start"), "start");
        assert_eq!(
            strip_root_filter("where(a.where(b=')').exists()).end"),
            "end"
        );
        assert_eq!(strip_root_filter("start"), "start");
        assert_eq!(
            strip_root_filter("where(status = 'free')"),
            "where(status = 'free')"
        );
        assert_eq!(strip_root_filter("where(x"), "where(x");
    }
}
