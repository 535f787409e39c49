//! Query parameters → `SearchRequest`, checked against the registry.

use std::sync::Arc;

use crate::fhir::datetime::{self, Kind};
use crate::fhir::registry::{ParamType, Registry, SearchParamDef};

use super::{
    DateValue, Filter, Include, IndexTable, NearValue, NumberValue, ParamTest, Prefix,
    QuantityValue, RefValue, SearchError, SearchRequest, SortKey, SortKind, StringMode, Summary,
    Test, TestKind, TokenValue, TotalMode, UriMode, DEFAULT_COUNT, MAX_COUNT,
};

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Larger `_offset`s are reduced to this (keeps `offset + count` arithmetic safe).
const MAX_OFFSET: usize = 1_000_000_000;

/// Why a parameter was refused. Unknown/unsupported parameters are ignored under lenient
/// handling; invalid values never are.
enum Refusal {
    Unknown(SearchError),
    Invalid(SearchError),
}

impl From<SearchError> for Refusal {
    fn from(e: SearchError) -> Self {
        Refusal::Invalid(e)
    }
}

fn unknown(message: impl Into<String>, param: &str) -> Refusal {
    Refusal::Unknown(SearchError::new(message, Some(param)))
}

fn invalid(message: impl Into<String>, param: &str) -> SearchError {
    SearchError::new(message, Some(param))
}

/// Parses the search parameters of a `GET [type]?…` or `POST [type]/_search` (already
/// URL-decoded name/value pairs, in order). `lenient` = `Prefer: handling=lenient`: unknown and
/// unsupported parameters are then ignored (and listed in `ignored`) instead of refused.
pub fn parse(
    registry: &Registry,
    resource_type: &str,
    pairs: &[(String, String)],
    lenient: bool,
) -> Result<SearchRequest, SearchError> {
    let mut req = SearchRequest {
        resource_type: resource_type.to_string(),
        filters: Vec::new(),
        sort: Vec::new(),
        count: DEFAULT_COUNT,
        offset: 0,
        total: TotalMode::None,
        summary: None,
        elements: None,
        include: Vec::new(),
        revinclude: Vec::new(),
        ignored: Vec::new(),
    };
    for (name, value) in pairs {
        match parse_pair(registry, &mut req, name, value, lenient) {
            Ok(()) => {}
            Err(Refusal::Invalid(e)) => return Err(e),
            Err(Refusal::Unknown(e)) => {
                if lenient {
                    req.ignored.push(name.clone());
                } else {
                    return Err(e);
                }
            }
        }
    }
    // What the audit log's own store cannot answer.
    super::audit::check(&mut req, lenient)?;
    Ok(req)
}

fn parse_pair(
    registry: &Registry,
    req: &mut SearchRequest,
    name: &str,
    value: &str,
    lenient: bool,
) -> Result<(), Refusal> {
    let rt = req.resource_type.clone();
    let (base, modifier) = match name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    match base {
        "_format" | "_pretty" => return Ok(()),
        "_count" | "_offset" | "_total" | "_summary" | "_elements" | "_sort"
            if modifier.is_some() =>
        {
            return Err(Refusal::Invalid(invalid(
                format!("{base} takes no modifier"),
                name,
            )));
        }
        "_count" => {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| invalid("_count must be a non-negative integer", name))?;
            req.count = n.min(MAX_COUNT);
            return Ok(());
        }
        "_offset" => {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| invalid("_offset must be a non-negative integer", name))?;
            req.offset = n.min(MAX_OFFSET);
            return Ok(());
        }
        "_total" => {
            req.total = match value {
                "none" => TotalMode::None,
                "estimate" => TotalMode::Estimate,
                "accurate" => TotalMode::Accurate,
                _ => return Err(invalid("_total must be none, estimate or accurate", name).into()),
            };
            return Ok(());
        }
        "_summary" => {
            req.summary = Some(match value {
                "true" => Summary::True,
                "text" => Summary::Text,
                "data" => Summary::Data,
                "count" => Summary::Count,
                "false" => Summary::False,
                _ => {
                    return Err(
                        invalid("_summary must be true, text, data, count or false", name).into(),
                    )
                }
            });
            return Ok(());
        }
        "_elements" => {
            let mut els = Vec::new();
            for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let ok = e
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']'));
                if !ok {
                    return Err(invalid(format!("bad element name '{e}'"), name).into());
                }
                els.push(e.to_string());
            }
            req.elements = if els.is_empty() { None } else { Some(els) };
            return Ok(());
        }
        "_sort" => {
            req.sort = parse_sort(registry, &rt, name, value, lenient, &mut req.ignored)?;
            return Ok(());
        }
        "_include" | "_revinclude" => {
            let iterate = match modifier {
                None => false,
                Some("iterate" | "recurse") => true,
                Some(m) => return Err(invalid(format!("unknown modifier ':{m}'"), name).into()),
            };
            if value.is_empty() {
                return Ok(());
            }
            let inc = parse_include(registry, name, value, iterate)?;
            if base == "_include" {
                req.include.push(inc);
            } else {
                req.revinclude.push(inc);
            }
            return Ok(());
        }
        _ => {}
    }
    if base == "_has" {
        let test = parse_has(registry, &rt, name, modifier.unwrap_or_default(), value)?;
        if let Some(test) = test {
            req.filters.push(Filter {
                name: name.to_string(),
                value: value.to_string(),
                test,
            });
        }
        return Ok(());
    }
    let test = if let Some((head, tail)) = name.split_once('.') {
        parse_chain(registry, &rt, name, head, tail, value)?
    } else {
        let def = lookup(registry, &rt, base, name)?;
        parse_test(&def, name, modifier, value)?.map(Test::Param)
    };
    if let Some(test) = test {
        req.filters.push(Filter {
            name: name.to_string(),
            value: value.to_string(),
            test,
        });
    }
    Ok(())
}

/// A parameter of a type that the planner can serve; others are unknown or unsupported.
fn lookup(
    registry: &Registry,
    rt: &str,
    code: &str,
    name: &str,
) -> Result<Arc<SearchParamDef>, Refusal> {
    let Some(def) = registry.get(rt, code) else {
        return Err(unknown(
            format!("unknown search parameter '{code}' for {rt}"),
            name,
        ));
    };
    let served = match code {
        "_id" | "_lastUpdated" => true,
        _ => def.expression.is_some() && IndexTable::of(def.ptype).is_some(),
    };
    if !served {
        return Err(unknown(
            format!("search parameter '{code}' is not supported"),
            name,
        ));
    }
    Ok(def.clone())
}

/// `Type:param[:target]`.
fn parse_include(
    registry: &Registry,
    name: &str,
    value: &str,
    iterate: bool,
) -> Result<Include, Refusal> {
    if value == "*" || value.ends_with(":*") {
        return Err(unknown(
            "_include/_revinclude wildcards are not supported",
            name,
        ));
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(*t)),
        _ => return Err(invalid("expected Type:param or Type:param:TargetType", name).into()),
    };
    let def = registry.get(source, param).ok_or_else(|| {
        unknown(
            format!("unknown search parameter '{param}' for {source}"),
            name,
        )
    })?;
    if def.ptype != ParamType::Reference || def.expression.is_none() {
        return Err(invalid(
            format!("'{source}:{param}' is not a reference parameter"),
            name,
        )
        .into());
    }
    if let Some(t) = target {
        if !def.targets.is_empty() && !def.targets.iter().any(|x| x == t) {
            return Err(invalid(format!("'{source}:{param}' cannot refer to {t}"), name).into());
        }
    }
    Ok(Include {
        source_type: source.to_string(),
        param: param.to_string(),
        target_type: target.map(String::from),
        iterate,
    })
}

fn parse_sort(
    registry: &Registry,
    rt: &str,
    name: &str,
    value: &str,
    lenient: bool,
    ignored: &mut Vec<String>,
) -> Result<Vec<SortKey>, Refusal> {
    let mut keys = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (code, descending) = match item.strip_prefix('-') {
            Some(c) => (c, true),
            None => (item, false),
        };
        let kind = match code {
            "_id" => SortKind::Id,
            "_lastUpdated" => SortKind::LastUpdated,
            _ => match lookup(registry, rt, code, name) {
                Ok(def) if def.ptype == ParamType::Special => {
                    return Err(
                        invalid("sorting by a special parameter is not supported", name).into(),
                    )
                }
                Ok(def) => SortKind::Index(def.ptype),
                Err(Refusal::Unknown(_)) if lenient => {
                    ignored.push(format!("_sort={item}"));
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        if keys.iter().any(|k: &SortKey| k.param == code) {
            continue;
        }
        keys.push(SortKey {
            param: code.to_string(),
            descending,
            kind,
        });
    }
    Ok(keys)
}

/// `_has:Source:refParam:param[:modifier]=value` (one level).
fn parse_has(
    registry: &Registry,
    rt: &str,
    name: &str,
    rest: &str,
    value: &str,
) -> Result<Option<Test>, Refusal> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(ref_param), Some(inner)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("expected _has:Type:reference:parameter", name).into());
    };
    if inner.starts_with("_has") || inner.contains('.') {
        return Err(unknown(
            "nested _has and chains inside _has are not supported",
            name,
        ));
    }
    let rdef = registry.get(source, ref_param).ok_or_else(|| {
        unknown(
            format!("unknown search parameter '{ref_param}' for {source}"),
            name,
        )
    })?;
    if rdef.ptype != ParamType::Reference || rdef.expression.is_none() {
        return Err(invalid(
            format!("'{source}:{ref_param}' is not a reference parameter"),
            name,
        )
        .into());
    }
    if !rdef.targets.is_empty() && !rdef.targets.iter().any(|t| t == rt) {
        return Err(invalid(format!("'{source}:{ref_param}' cannot refer to {rt}"), name).into());
    }
    let (code, modifier) = match inner.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (inner, None),
    };
    let def = lookup(registry, source, code, name)?;
    Ok(
        parse_test(&def, name, modifier, value)?.map(|inner| Test::Has {
            source_type: source.to_string(),
            ref_param: ref_param.to_string(),
            inner,
        }),
    )
}

/// `ref[:Type].sub[:modifier]=value` (one level).
fn parse_chain(
    registry: &Registry,
    rt: &str,
    name: &str,
    head: &str,
    tail: &str,
    value: &str,
) -> Result<Option<Test>, Refusal> {
    if tail.contains('.') {
        return Err(unknown(
            "chains of more than one level are not supported",
            name,
        ));
    }
    let (ref_code, type_mod) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    let rdef = lookup(registry, rt, ref_code, name)?;
    if rdef.ptype != ParamType::Reference {
        return Err(invalid(
            format!("'{ref_code}' is not a reference parameter and cannot be chained"),
            name,
        )
        .into());
    }
    let (code, modifier) = match tail.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (tail, None),
    };
    let candidates: Vec<String> = match type_mod {
        Some(t) => {
            if !rdef.targets.is_empty() && !rdef.targets.iter().any(|x| x == t) {
                return Err(invalid(
                    format!("unknown modifier ':{t}': '{ref_code}' cannot refer to {t}"),
                    name,
                )
                .into());
            }
            vec![t.to_string()]
        }
        None => rdef.targets.clone(),
    };
    let mut targets = Vec::new();
    for t in candidates {
        let Ok(def) = lookup(registry, &t, code, name) else {
            continue;
        };
        match parse_test(&def, name, modifier, value)? {
            Some(test) => targets.push((t, test)),
            None => return Ok(None),
        }
    }
    if targets.is_empty() {
        return Err(unknown(
            format!("no resource type '{ref_code}' may refer to has a search parameter '{code}'"),
            name,
        ));
    }
    Ok(Some(Test::Chain {
        param: ref_code.to_string(),
        targets,
    }))
}

/// A parameter's test from its modifier and value; `None` when the value is empty (the
/// parameter is then ignored).
fn parse_test(
    def: &SearchParamDef,
    name: &str,
    modifier: Option<&str>,
    value: &str,
) -> Result<Option<ParamTest>, Refusal> {
    let code = def.code.clone();
    let bad_modifier =
        |m: &str| Err(invalid(format!("unknown or unsupported modifier ':{m}'"), name).into());
    let mk = |kind| {
        Ok(Some(ParamTest {
            code: code.clone(),
            kind,
        }))
    };
    if value.is_empty() {
        if let Some(m) = modifier {
            // Still refuse modifiers we do not know, even without a value.
            if !known_modifier(def, m) {
                return bad_modifier(m);
            }
        }
        return Ok(None);
    }
    if def.code == "_id" {
        return match modifier {
            None => mk(TestKind::Id(
                split_values(value).iter().map(|v| unescape(v)).collect(),
            )),
            Some(m) => bad_modifier(m),
        };
    }
    if def.code == "_lastUpdated" {
        return match modifier {
            None => mk(TestKind::LastUpdated(dates(value, name)?)),
            Some(m) => bad_modifier(m),
        };
    }
    let Some(table) = IndexTable::of(def.ptype) else {
        return Err(unknown(
            format!("search parameter '{}' is not supported", def.code),
            name,
        ));
    };
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(":missing takes true or false", name).into()),
        };
        return mk(TestKind::Missing { table, missing });
    }
    let values = split_values(value);
    let kind = match def.ptype {
        ParamType::Token => match modifier {
            None | Some("not") => {
                let mut vs = Vec::new();
                for v in &values {
                    vs.push(token(v, name)?);
                }
                TestKind::Token {
                    not: modifier.is_some(),
                    values: vs,
                }
            }
            Some("text") => {
                TestKind::TokenText(values.iter().map(|v| unescape(v).to_lowercase()).collect())
            }
            Some(m) => return bad_modifier(m),
        },
        ParamType::String => {
            let mode = match modifier {
                None => StringMode::StartsWith,
                Some("exact") => StringMode::Exact,
                Some("contains") => StringMode::Contains,
                Some(m) => return bad_modifier(m),
            };
            TestKind::String {
                mode,
                values: values.iter().map(|v| unescape(v)).collect(),
            }
        }
        ParamType::Date => match modifier {
            None => TestKind::Date(dates(value, name)?),
            Some(m) => return bad_modifier(m),
        },
        ParamType::Number => match modifier {
            None => {
                let mut vs = Vec::new();
                for v in &values {
                    vs.push(number_value(&unescape(v), name)?);
                }
                TestKind::Number(vs)
            }
            Some(m) => return bad_modifier(m),
        },
        ParamType::Quantity => match modifier {
            None => {
                let mut vs = Vec::new();
                for v in &values {
                    vs.push(quantity(v, name)?);
                }
                TestKind::Quantity(vs)
            }
            Some(m) => return bad_modifier(m),
        },
        ParamType::Reference => {
            let type_mod = match modifier {
                None => None,
                Some(t)
                    if is_type_name(t)
                        && (def.targets.is_empty() || def.targets.iter().any(|x| x == t)) =>
                {
                    Some(t.to_string())
                }
                Some(m) => return bad_modifier(m),
            };
            let mut vs = Vec::new();
            for v in &values {
                vs.push(reference(&unescape(v), type_mod.as_deref(), name)?);
            }
            TestKind::Reference(vs)
        }
        ParamType::Uri => {
            let mode = match modifier {
                None => UriMode::Exact,
                Some("below") => UriMode::Below,
                Some("above") => UriMode::Above,
                Some(m) => return bad_modifier(m),
            };
            TestKind::Uri {
                mode,
                values: values.iter().map(|v| unescape(v)).collect(),
            }
        }
        ParamType::Special if def.code == "near" => match modifier {
            None => {
                let mut vs = Vec::new();
                for v in &values {
                    vs.push(near(&unescape(v), name)?);
                }
                TestKind::Near(vs)
            }
            Some(m) => return bad_modifier(m),
        },
        ParamType::Composite | ParamType::Special => {
            return Err(unknown(
                format!("search parameter '{}' is not supported", def.code),
                name,
            ));
        }
    };
    mk(kind)
}

/// Distance used when `near` gives none (the spec leaves it to the server).
pub const DEFAULT_NEAR_KM: f64 = 50.0;

/// `lat|long[|distance[|unit]]`; units km (default), m, mi / [mi_i].
fn near(v: &str, name: &str) -> Result<NearValue, Refusal> {
    let bad = || Refusal::from(invalid("near takes latitude|longitude|distance|unit", name));
    let parts: Vec<&str> = v.split('|').collect();
    if parts.len() < 2 || parts.len() > 4 {
        return Err(bad());
    }
    let num = |s: &str| s.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    let lat = num(parts[0])
        .filter(|l| (-90.0..=90.0).contains(l))
        .ok_or_else(bad)?;
    let lon = num(parts[1])
        .filter(|l| (-180.0..=180.0).contains(l))
        .ok_or_else(bad)?;
    let distance = match parts.get(2).filter(|s| !s.is_empty()) {
        Some(d) => num(d).filter(|d| *d >= 0.0).ok_or_else(bad)?,
        None => DEFAULT_NEAR_KM,
    };
    let factor = match parts.get(3).map(|u| u.trim()) {
        None | Some("") | Some("km") => 1.0,
        Some("m") => 0.001,
        Some("mi") | Some("[mi_i]") => 1.609_344,
        Some(_) => return Err(bad()),
    };
    Ok(NearValue {
        lat,
        lon,
        km: distance * factor,
    })
}

fn known_modifier(def: &SearchParamDef, m: &str) -> bool {
    if m == "missing" {
        return !matches!(def.code.as_str(), "_id" | "_lastUpdated");
    }
    match def.ptype {
        ParamType::Token => matches!(m, "not" | "text"),
        ParamType::String => matches!(m, "exact" | "contains"),
        ParamType::Uri => matches!(m, "below" | "above"),
        ParamType::Reference => {
            is_type_name(m) && (def.targets.is_empty() || def.targets.iter().any(|x| x == m))
        }
        _ => false,
    }
}

fn is_type_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Splits a value at the commas that are not escaped; empty items are dropped. Escapes are kept
/// (see `unescape`).
pub(super) fn split_values(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect()
}

/// Splits at `sep` when not preceded by an escaping backslash; the parts keep their escapes.
fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Removes the search escapes `\,` `\|` `\$` `\\`; any other backslash is kept as it is.
pub(super) fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if matches!(n, ',' | '|' | '$' | '\\') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

fn token(v: &str, name: &str) -> Result<TokenValue, SearchError> {
    let parts = split_unescaped(v, '|');
    let value = match parts.as_slice() {
        [code] => TokenValue {
            system: None,
            code: Some(unescape(code)),
        },
        [system, code] => {
            let system = if system.is_empty() {
                None
            } else {
                Some(unescape(system))
            };
            let code = if code.is_empty() {
                None
            } else {
                Some(unescape(code))
            };
            if system.is_none() && code.is_none() {
                return Err(invalid("a token needs a system or a code", name));
            }
            TokenValue {
                system: Some(system),
                code,
            }
        }
        _ => {
            return Err(invalid(
                format!("bad token '{v}': use code, system|code, |code or system|"),
                name,
            ))
        }
    };
    Ok(value)
}

/// The tokens of one parameter value (`a,b` is a OR b, with the search syntax's escapes), as
/// a search reads them; `None` if one of them is not a token.
pub(crate) fn token_list(v: &str) -> Option<Vec<TokenValue>> {
    split_unescaped(v, ',')
        .iter()
        .map(|t| token(t, "").ok())
        .collect()
}

/// Splits an optional two-letter prefix off a date/number/quantity value.
fn prefix(v: &str, name: &str) -> Result<(Prefix, String), SearchError> {
    if let Some(p) = v.get(..2) {
        if p.chars().all(|c| c.is_ascii_alphabetic()) {
            let prefix =
                Prefix::parse(p).ok_or_else(|| invalid(format!("unknown prefix '{p}'"), name))?;
            return Ok((prefix, v[2..].to_string()));
        }
    }
    Ok((Prefix::Eq, v.to_string()))
}

fn dates(value: &str, name: &str) -> Result<Vec<DateValue>, SearchError> {
    let now = datetime::now_micros();
    split_values(value)
        .iter()
        .map(|v| date_value(&unescape(v), name, now))
        .collect()
}

fn date_value(v: &str, name: &str, now: i64) -> Result<DateValue, SearchError> {
    let (prefix, text) = prefix(v, name)?;
    // A `+` of a zone offset that was not percent-encoded arrives as a space.
    let parsed = datetime::parse(&text, Kind::Search)
        .or_else(|| datetime::parse(&text.replace(' ', "+"), Kind::Search))
        .ok_or_else(|| invalid(format!("bad date '{text}'"), name))?;
    let (mut lo, mut hi) = (parsed.0.lo, parsed.0.hi);
    if prefix == Prefix::Ap {
        let dist = now
            .saturating_sub(lo)
            .unsigned_abs()
            .max(hi.saturating_sub(now).unsigned_abs());
        let delta = i64::try_from(dist / 10)
            .unwrap_or(i64::MAX)
            .max(MICROS_PER_DAY);
        lo = lo.saturating_sub(delta);
        hi = hi.saturating_add(delta);
    }
    Ok(DateValue { prefix, lo, hi })
}

/// `[prefix]number`: the value and the range of its implicit precision.
fn number_value(v: &str, name: &str) -> Result<NumberValue, SearchError> {
    let (prefix, text) = prefix(v, name)?;
    let (value, half) =
        parse_number(&text).ok_or_else(|| invalid(format!("bad number '{text}'"), name))?;
    let (lo, hi) = if prefix == Prefix::Ap {
        let d = (value.abs() * 0.1).max(half);
        (value - d, value + d)
    } else {
        (value - half, value + half)
    };
    Ok(NumberValue {
        prefix,
        value,
        lo,
        hi,
    })
}

/// A decimal (`-12.50`, `1e3`, `1.5E-2`): its value and half the unit of its last digit.
fn parse_number(s: &str) -> Option<(f64, f64)> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut decimals = 0i32;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s0 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        decimals = i32::try_from(i - s0).ok()?;
        if decimals == 0 {
            return None;
        }
    }
    if int_digits == 0 {
        return None;
    }
    let mut exp = 0i32;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let e = s.get(i..)?;
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        exp = e.parse().ok()?;
        i = b.len();
    }
    if i != b.len() {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    let half = 0.5 * 10f64.powi(exp - decimals);
    (value.is_finite() && half.is_finite()).then_some((value, half))
}

fn quantity(v: &str, name: &str) -> Result<QuantityValue, SearchError> {
    let parts = split_unescaped(v, '|');
    let (num, system, code) = match parts.as_slice() {
        [n] => (n.as_str(), None, None),
        [n, s, c] => {
            let s = if s.is_empty() {
                None
            } else {
                Some(unescape(s))
            };
            let c = if c.is_empty() {
                None
            } else {
                Some(unescape(c))
            };
            (n.as_str(), s, c)
        }
        _ => {
            return Err(invalid(
                format!("bad quantity '{v}': use [prefix]number[|system|code]"),
                name,
            ))
        }
    };
    Ok(QuantityValue {
        number: number_value(&unescape(num), name)?,
        system,
        code,
    })
}

fn reference(v: &str, type_mod: Option<&str>, name: &str) -> Result<RefValue, SearchError> {
    if v.contains("://") || v.starts_with("urn:") {
        return Ok(RefValue::Url(v.to_string()));
    }
    let parts: Vec<&str> = v.split('/').collect();
    Ok(match parts.as_slice() {
        [id] => RefValue::Local {
            type_: type_mod.map(String::from),
            id: id.to_string(),
        },
        [t, id] | [t, id, "_history", _] if is_type_name(t) && !id.is_empty() => {
            if let Some(m) = type_mod.filter(|m| m != t) {
                return Err(invalid(format!("'{v}' is not a reference to {m}"), name));
            }
            RefValue::Local {
                type_: Some(t.to_string()),
                id: id.to_string(),
            }
        }
        _ => RefValue::Url(v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::tests_support::registry;

    fn p(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn ok(rt: &str, q: &[(&str, &str)]) -> SearchRequest {
        parse(&registry(), rt, &p(q), false).unwrap()
    }

    fn err(rt: &str, q: &[(&str, &str)]) -> SearchError {
        parse(&registry(), rt, &p(q), false).unwrap_err()
    }

    fn kind(req: &SearchRequest, i: usize) -> &TestKind {
        match &req.filters[i].test {
            Test::Param(t) => &t.kind,
            other => panic!("not a param test: {other:?}"),
        }
    }

    #[test]
    fn escapes_split_and_unescape() {
        assert_eq!(split_values(r"a\,b,c,,d"), vec![r"a\,b", "c", "d"]);
        assert_eq!(unescape(r"a\,b\|c\$d\\e\x"), r"a,b|c$d\e\x");
        assert_eq!(split_unescaped(r"s\|x|c", '|'), vec![r"s\|x", "c"]);
        let r = ok("Patient", &[("family", r"O\,Brien,Smith")]);
        match kind(&r, 0) {
            TestKind::String { values, .. } => assert_eq!(values, &["O,Brien", "Smith"]),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn tokens() {
        let r = ok(
            "Slot",
            &[
                ("status", "free"),
                ("identifier", "http://x|1,|2,http://y|"),
                ("status:not", "busy"),
            ],
        );
        assert_eq!(
            kind(&r, 1),
            &TestKind::Token {
                not: false,
                values: vec![
                    TokenValue {
                        system: Some(Some("http://x".into())),
                        code: Some("1".into())
                    },
                    TokenValue {
                        system: Some(None),
                        code: Some("2".into())
                    },
                    TokenValue {
                        system: Some(Some("http://y".into())),
                        code: None
                    },
                ]
            }
        );
        assert!(matches!(kind(&r, 2), TestKind::Token { not: true, .. }));
        assert!(err("Slot", &[("status", "a|b|c")])
            .message
            .contains("bad token"));
        assert!(err("Slot", &[("status", "|")])
            .message
            .contains("system or a code"));
        assert!(err("Slot", &[("status:below", "x")])
            .message
            .contains("modifier"));
    }

    #[test]
    fn dates_and_prefixes() {
        let r = ok("Slot", &[("start", "ge2026-01-01,lt2025")]);
        match kind(&r, 0) {
            TestKind::Date(v) => {
                assert_eq!(v[0].prefix, Prefix::Ge);
                assert_eq!(
                    datetime::format_instant(v[0].lo),
                    "2026-01-01T00:00:00.000Z"
                );
                assert_eq!(v[1].prefix, Prefix::Lt);
            }
            k => panic!("{k:?}"),
        }
        // An unencoded `+` arrives as a space.
        let r = ok("Slot", &[("start", "2026-01-01T10:00:00 02:00")]);
        match kind(&r, 0) {
            TestKind::Date(v) => assert_eq!(
                datetime::format_instant(v[0].lo),
                "2026-01-01T08:00:00.000Z"
            ),
            k => panic!("{k:?}"),
        }
        assert!(err("Slot", &[("start", "xx2026")])
            .message
            .contains("prefix"));
        assert!(err("Slot", &[("start", "2026-13")])
            .message
            .contains("bad date"));
        assert!(err("Slot", &[("start", "ge")]).message.contains("bad date"));
        assert!(err("Slot", &[("_lastUpdated", "tomorrow")])
            .message
            .contains("prefix"));
        let r = ok("Slot", &[("start", "ap2026-01-01")]);
        match kind(&r, 0) {
            TestKind::Date(v) => assert!(v[0].hi - v[0].lo >= 3 * MICROS_PER_DAY - 1),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("100"), Some((100.0, 0.5)));
        assert_eq!(parse_number("-1.50"), Some((-1.5, 0.005)));
        assert_eq!(parse_number("1e2"), Some((100.0, 50.0)));
        for bad in [
            "", "-", "1.", ".5", "1e", "inf", "NaN", "1e99999", "1,5", "0x10", "١",
        ] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
        let n = number_value("gt5.4", "x").unwrap();
        assert_eq!((n.prefix, n.value), (Prefix::Gt, 5.4));
        let q = quantity(r"le5.4|http://unitsofmeasure.org|mg", "x").unwrap();
        assert_eq!(q.system.as_deref(), Some("http://unitsofmeasure.org"));
        assert_eq!(q.code.as_deref(), Some("mg"));
        assert!(quantity("5|mg", "x").is_err());
    }

    #[test]
    fn references() {
        let local = |t: Option<&str>, id: &str| RefValue::Local {
            type_: t.map(String::from),
            id: id.into(),
        };
        assert_eq!(
            reference("Patient/1", None, "x"),
            Ok(local(Some("Patient"), "1"))
        );
        assert_eq!(
            reference("Patient/1/_history/2", None, "x"),
            Ok(local(Some("Patient"), "1"))
        );
        assert_eq!(
            reference("1", Some("Patient"), "x"),
            Ok(local(Some("Patient"), "1"))
        );
        assert_eq!(
            reference("Patient/1", Some("Patient"), "x"),
            Ok(local(Some("Patient"), "1"))
        );
        assert!(reference("Group/1", Some("Patient"), "x").is_err());
        assert_eq!(reference("1", None, "x"), Ok(local(None, "1")));
        assert_eq!(
            reference("http://x/Patient/1", None, "x"),
            Ok(RefValue::Url("http://x/Patient/1".into()))
        );
        let r = ok("Appointment", &[("patient:Patient", "1")]);
        assert!(matches!(kind(&r, 0), TestKind::Reference(_)));
        assert!(err("Appointment", &[("patient:Group", "1")])
            .message
            .contains("modifier"));
    }

    #[test]
    fn chains_and_has() {
        let r = ok("Appointment", &[("practitioner.family", "Smith")]);
        match &r.filters[0].test {
            Test::Chain { param, targets } => {
                assert_eq!(param, "practitioner");
                assert_eq!(targets.len(), 1);
                assert_eq!(targets[0].0, "Practitioner");
            }
            t => panic!("{t:?}"),
        }
        // actor may refer to several types that have `name`.
        let r = ok("Appointment", &[("actor.name", "x")]);
        match &r.filters[0].test {
            Test::Chain { targets, .. } => assert!(targets.len() >= 2),
            t => panic!("{t:?}"),
        }
        let r = ok("Appointment", &[("actor:Patient.name:exact", "x")]);
        match &r.filters[0].test {
            Test::Chain { targets, .. } => {
                assert_eq!(targets.len(), 1);
                assert!(matches!(
                    targets[0].1.kind,
                    TestKind::String {
                        mode: StringMode::Exact,
                        ..
                    }
                ));
            }
            t => panic!("{t:?}"),
        }
        assert!(
            err("Appointment", &[("practitioner.organization.name", "x")])
                .message
                .contains("one level")
        );
        assert!(err("Appointment", &[("status.x", "x")])
            .message
            .contains("not a reference"));
        assert!(err("Appointment", &[("practitioner.nope", "x")])
            .message
            .contains("no resource type"));
        let r = ok("Patient", &[("_has:Appointment:patient:status", "booked")]);
        assert!(
            matches!(&r.filters[0].test, Test::Has { source_type, ref_param, .. } if source_type == "Appointment" && ref_param == "patient")
        );
        assert!(err("Patient", &[("_has:Appointment:patient", "x")])
            .message
            .contains("expected"));
        assert!(err("Patient", &[("_has:Slot:schedule:status", "x")])
            .message
            .contains("cannot refer"));
    }

    #[test]
    fn control_parameters() {
        let r = ok(
            "Slot",
            &[
                ("_count", "5000"),
                ("_offset", "40"),
                ("_sort", "-start,_id,status"),
                ("_total", "none"),
                ("_summary", "count"),
                ("_elements", "id, status"),
                ("_include", "Slot:schedule"),
                ("_revinclude:iterate", "Appointment:slot"),
                ("_format", "json"),
            ],
        );
        assert_eq!(
            (r.count, r.offset, r.total),
            (MAX_COUNT, 40, TotalMode::None)
        );
        assert_eq!(r.sort.len(), 3);
        assert!(r.sort[0].descending && r.sort[0].kind == SortKind::Index(ParamType::Date));
        assert_eq!(r.sort[1].kind, SortKind::Id);
        assert!(r.count_only());
        assert_eq!(
            r.elements.as_deref(),
            Some(&["id".to_string(), "status".to_string()][..])
        );
        assert_eq!(
            r.include[0],
            Include {
                source_type: "Slot".into(),
                param: "schedule".into(),
                target_type: None,
                iterate: false
            }
        );
        assert!(r.revinclude[0].iterate);
        assert_eq!(ok("Slot", &[("_count", "0")]).count, 0);
        for bad in [
            ("_count", "-1"),
            ("_count", "x"),
            ("_offset", "1.5"),
            ("_total", "all"),
            ("_summary", "yes"),
        ] {
            err("Slot", &[bad]);
        }
        assert!(err("Slot", &[("_include", "Slot")])
            .message
            .contains("expected"));
        assert!(err("Slot", &[("_include", "Slot:status")])
            .message
            .contains("not a reference"));
        assert!(err("Slot", &[("_include", "Slot:schedule:Patient")])
            .message
            .contains("cannot refer"));
        assert!(err("Slot", &[("_include:deep", "Slot:schedule")])
            .message
            .contains("modifier"));
    }

    #[test]
    fn unknown_parameters_and_lenient_handling() {
        let e = err("Patient", &[("colour", "blue")]);
        assert_eq!(e.param.as_deref(), Some("colour"));
        assert!(err("Patient", &[("_text", "x")])
            .message
            .contains("not supported"));
        assert!(err("Patient", &[("_sort", "colour")])
            .message
            .contains("unknown"));
        let q = p(&[
            ("colour", "blue"),
            ("_id", "x"),
            ("_sort", "colour,-_id"),
            ("_content", "y"),
        ]);
        let r = parse(&registry(), "Patient", &q, true).unwrap();
        assert_eq!(r.filters.len(), 1);
        assert_eq!(r.sort.len(), 1);
        assert_eq!(r.ignored, vec!["colour", "_sort=colour", "_content"]);
        // Bad values and modifiers of known parameters are errors even when lenient.
        assert!(parse(&registry(), "Patient", &p(&[("birthdate", "soon")]), true).is_err());
        assert!(parse(&registry(), "Patient", &p(&[("family:fuzzy", "x")]), true).is_err());
        // Empty values are ignored.
        assert!(ok("Patient", &[("family", ""), ("birthdate", "")])
            .filters
            .is_empty());
        assert!(err("Patient", &[("birthdate:missing", "maybe")])
            .message
            .contains("missing"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "",
            ":",
            "::",
            "\\",
            "\\\\",
            "|",
            "||",
            "|||",
            ",",
            "é",
            "ge",
            "gé",
            "éé",
            "g",
            "1e",
            "-",
            "\u{0}",
            "Patient/",
            "/1",
            "a/b/c/d",
            "urn:x",
            "ap9999",
            "ap0001",
            "eb-1",
            "\u{10FFFF}",
        ];
        let names = [
            "_id",
            "_lastUpdated",
            "status",
            "status:not",
            "status:text",
            "start",
            "schedule",
            "schedule:Schedule",
            "schedule.actor",
            "schedule:Schedule.actor",
            "schedule.",
            ".actor",
            "_has",
            "_has:",
            "_has:::",
            "_has:Slot:schedule:_has",
            "_sort",
            "_include",
            "_revinclude:iterate",
            "_count",
            "_tag",
            "_profile:below",
            "_profile:above",
            "identifier:missing",
            "x-comment:contains",
            "x.y.z",
            "_security:text",
        ];
        let reg = registry();
        for n in names {
            for v in odd {
                for lenient in [false, true] {
                    if let Ok(r) = parse(&reg, "Slot", &p(&[(n, v)]), lenient) {
                        let _ = r.link_query(0);
                        let _ = r.page_query(&reg, crate::store::sql::Dialect::Postgres);
                        let _ = r.count_query(&reg, crate::store::sql::Dialect::Sqlite);
                    }
                }
            }
        }
    }
}
