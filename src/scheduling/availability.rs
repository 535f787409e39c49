//! Availability templates → Slots, pure.
//!
//! A provider's availability lives in FHIR: `PractitionerRole.availableTime` / `notAvailable`,
//! plus our extensions (`profiles/extensions.json`): `slot-duration`, `buffer`, `break`,
//! `visit-mode`, `availability-location` and `timezone`. [`template`] reads a Schedule with its
//! roles (and locations, for the time zone) into a [`Template`]; [`generate`] lays the slots it
//! implies over a window; [`slot_resource`] makes a free Slot with a deterministic identifier (so
//! a conditional create with `If-None-Exist` is idempotent); [`regenerate`] says which free
//! future Slots to delete and which to create after a template change; [`conflicts`] lists the
//! active appointments the template no longer allows.
//!
//! Rules:
//! - Local times are read in the template's time zone (Schedule `timezone` extension, else that
//!   of a Location it, or its roles, point to, else UTC). Each window is converted to instants
//!   and slots are laid in real elapsed time, so DST changes are honoured: a local time that does
//!   not exist (spring forward) moves forward by the gap; an ambiguous one (fall back) is its
//!   first occurrence.
//! - One series of slots per (Schedule.serviceType, visit mode); without service types one series
//!   without. Within a series and a local day slots never overlap: each piece of a window (a
//!   window minus its breaks) is packed from its start, `duration` then `buffer`, and a window
//!   overlapping an earlier one continues after it. Series of different service types or modes
//!   may overlap (each offers the same time for a different kind of visit).
//! - A slot touching a `notAvailable` period is left out (the others keep their place); so is a
//!   slot outside the role's `period` or the Schedule's `planningHorizon`. An inactive Schedule
//!   (or role) generates nothing.
//! - Slot length: the role's `slot-duration` for the service type, else its `slot-duration`
//!   without a service type, else [`DEFAULT_SLOT_MINUTES`]. Buffer: `buffer`, else none.
//!   Visit mode: `visit-mode` on the available time (may repeat), else in-person. Location:
//!   `availability-location` on the available time, else the role's only location.

use std::collections::HashSet;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike, Weekday,
};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::fhir::datetime::{self, format_instant, Kind, MICROS_PER_SEC};
use crate::scheduling::effects::ext_url;
use crate::scheduling::status::is_active;

/// Identifier system of generated Slots; the value is [`slot_key`].
pub const SLOT_KEY_SYSTEM: &str = "https://fhir-scheduler.org/fhir/slot-key";
/// Slot length when a role says nothing (`slot-duration`).
pub const DEFAULT_SLOT_MINUTES: i64 = 15;
pub const DEFAULT_VISIT_MODE: &str = "in-person";
pub const VISIT_MODES: [&str; 2] = ["in-person", "virtual"];
/// The extensions pack's time zone extension (R5 era); read as well as ours.
const HL7_TIMEZONE_EXT: &str = "http://hl7.org/fhir/StructureDefinition/timezone";
const DAY: u32 = 86_400;

/// A Schedule's availability, read from its PractitionerRoles.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// `Schedule/{id}` (empty when the Schedule has no id).
    pub schedule: String,
    /// `Schedule.active` (absent: true).
    pub active: bool,
    pub tz: Tz,
    /// `Schedule.planningHorizon` as `[lo, hi)` µs; unbounded when absent.
    pub horizon: (i64, i64),
    /// `Schedule.serviceType`: one series of slots per entry.
    pub service_types: Vec<Value>,
    /// What every slot offers as `Slot.specialty`: `Schedule.specialty`, else the specialties of
    /// the active roles (so `$find?specialty=` finds generated slots).
    pub specialty: Vec<Value>,
    /// The available times of the active roles.
    pub windows: Vec<Window>,
    /// `notAvailable.during` of every role, `[lo, hi)` µs.
    pub not_available: Vec<(i64, i64)>,
}

/// One `PractitionerRole.availableTime`, with what its role adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `PractitionerRole/{id}` it comes from.
    pub role: Option<String>,
    /// Days it applies to; every day when `daysOfWeek` is absent.
    pub days: Vec<Weekday>,
    /// Local time of day in seconds, `[start, end)`; `end` may pass midnight (up to 48 h) for an
    /// overnight window (`availableEndTime` ≤ `availableStartTime`).
    pub start: u32,
    pub end: u32,
    pub modes: Vec<String>,
    /// `Location/{id}`.
    pub location: Option<String>,
    /// The role's breaks and the window's own.
    pub breaks: Vec<Break>,
    /// µs between consecutive slots.
    pub buffer: i64,
    pub durations: Vec<SlotDuration>,
    /// The role's `period`, `[lo, hi)` µs.
    pub valid: (i64, i64),
}

/// A recurring break, local time of day in seconds `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Break {
    /// Empty: every day.
    pub days: Vec<Weekday>,
    pub start: u32,
    pub end: u32,
}

/// A `slot-duration` entry: `service_type` None is the role's default.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotDuration {
    pub service_type: Option<Value>,
    /// µs
    pub duration: i64,
}

/// A slot to be: `[start, end)` in µs since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpec {
    pub start: i64,
    pub end: i64,
    /// One CodeableConcept of `Schedule.serviceType`.
    pub service_type: Option<Value>,
    pub visit_mode: String,
    /// `Location/{id}`.
    pub location: Option<String>,
}

/// What to do to bring a schedule's slots in line with its template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regeneration {
    pub create: Vec<SlotSpec>,
    /// Ids of free future slots no longer wanted.
    pub delete: Vec<String>,
}

// ------------------------------------------------------------------------------------ reading

/// Reads a Schedule, its PractitionerRoles and (for the time zone) Locations into a template.
pub fn template(
    schedule: &Value,
    roles: &[Value],
    locations: &[Value],
) -> Result<Template, String> {
    if schedule["resourceType"] != "Schedule" {
        return Err("not a Schedule".into());
    }
    let tz = zone(schedule, roles, locations)?;
    let horizon = period(&schedule["planningHorizon"], tz, "Schedule.planningHorizon")?;
    let mut t = Template {
        schedule: schedule["id"]
            .as_str()
            .map(|id| format!("Schedule/{id}"))
            .unwrap_or_default(),
        active: schedule["active"].as_bool() != Some(false),
        tz,
        horizon,
        service_types: array(&schedule["serviceType"]).cloned().collect(),
        specialty: array(&schedule["specialty"]).cloned().collect(),
        windows: Vec::new(),
        not_available: Vec::new(),
    };
    for role in roles {
        if role["resourceType"] != "PractitionerRole" {
            return Err("not a PractitionerRole".into());
        }
        if role["active"].as_bool() == Some(false) {
            continue;
        }
        read_role(role, &mut t)?;
        if schedule["specialty"].is_null() {
            for sp in array(&role["specialty"]) {
                if !t.specialty.contains(sp) {
                    t.specialty.push(sp.clone());
                }
            }
        }
    }
    Ok(t)
}

fn read_role(role: &Value, t: &mut Template) -> Result<(), String> {
    let valid = period(&role["period"], t.tz, "PractitionerRole.period")?;
    let buffer = match extensions(role, "buffer").next() {
        Some(e) => duration(&e["valueDuration"], "buffer")?,
        None => 0,
    };
    let mut durations = Vec::new();
    for e in extensions(role, "slot-duration") {
        let d = duration(&part(e, "duration")["valueDuration"], "slot-duration")?;
        if d <= 0 {
            return Err("slot-duration: the duration must be positive".into());
        }
        let st = part(e, "serviceType")["valueCodeableConcept"].clone();
        durations.push(SlotDuration {
            service_type: (!st.is_null()).then_some(st),
            duration: d,
        });
    }
    let role_breaks = extensions(role, "break")
        .map(read_break)
        .collect::<Result<Vec<_>, _>>()?;
    let locations: Vec<&str> = array(&role["location"])
        .filter_map(|l| l["reference"].as_str())
        .collect();
    let default_location = (locations.len() == 1).then(|| locations[0].to_string());
    for at in array(&role["availableTime"]) {
        let days = match at.get("daysOfWeek") {
            Some(list) => array(list)
                .map(|d| weekday(d.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()?,
            None => ALL_DAYS.to_vec(),
        };
        let (start, end) = if at["allDay"].as_bool() == Some(true) {
            (0, DAY)
        } else {
            let start = match at["availableStartTime"].as_str() {
                Some(s) => time_of_day(s)?,
                None => 0,
            };
            let end = match at["availableEndTime"].as_str() {
                Some(s) => time_of_day(s)?,
                None => DAY,
            };
            (start, if end <= start { end + DAY } else { end })
        };
        let mut modes = Vec::new();
        for e in extensions(at, "visit-mode") {
            let m = e["valueCode"].as_str().unwrap_or_default();
            if !VISIT_MODES.contains(&m) {
                return Err(format!("visit-mode: '{m}' is not in-person or virtual"));
            }
            if !modes.iter().any(|x| x == m) {
                modes.push(m.to_string());
            }
        }
        if modes.is_empty() {
            modes.push(DEFAULT_VISIT_MODE.to_string());
        }
        let location = extensions(at, "availability-location")
            .find_map(|e| e["valueReference"]["reference"].as_str())
            .map(String::from)
            .or_else(|| default_location.clone());
        let mut breaks = role_breaks.clone();
        for b in extensions(at, "break") {
            breaks.push(read_break(b)?);
        }
        t.windows.push(Window {
            role: role["id"]
                .as_str()
                .map(|id| format!("PractitionerRole/{id}")),
            days,
            start,
            end,
            modes,
            location,
            breaks,
            buffer,
            durations: durations.clone(),
            valid,
        });
    }
    for na in array(&role["notAvailable"]) {
        if na.get("during").is_some() {
            let p = period(&na["during"], t.tz, "notAvailable.during")?;
            if p.0 < p.1 {
                t.not_available.push(p);
            }
        }
    }
    Ok(())
}

fn read_break(e: &Value) -> Result<Break, String> {
    let days = e["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["url"] == "daysOfWeek")
        .map(|p| weekday(p["valueCode"].as_str().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()?;
    let bound = |name: &str| -> Result<u32, String> {
        part(e, name)["valueTime"]
            .as_str()
            .ok_or_else(|| format!("break: '{name}' (a time) is required"))
            .and_then(time_of_day)
    };
    let start = bound("start")?;
    let end = bound("end")?;
    Ok(Break {
        days,
        start,
        end: if end <= start { end + DAY } else { end },
    })
}

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn weekday(code: &str) -> Result<Weekday, String> {
    let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| *d == code)
        .ok_or_else(|| format!("'{code}' is not a day of the week"))?;
    Ok(ALL_DAYS[i])
}

/// `hh:mm:ss[.fff]` → seconds from midnight.
fn time_of_day(s: &str) -> Result<u32, String> {
    let t = NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
        .map_err(|_| format!("'{s}' is not a time (hh:mm:ss)"))?;
    Ok(t.num_seconds_from_midnight())
}

/// A FHIR Duration (UCUM `s`, `min`, `h`, `d`; `code`, else `unit`) in µs, not negative.
fn duration(d: &Value, what: &str) -> Result<i64, String> {
    let value = d["value"]
        .as_f64()
        .ok_or_else(|| format!("{what}: a Duration with a value is required"))?;
    let unit = d["code"].as_str().or(d["unit"].as_str()).unwrap_or("");
    let secs: f64 = match unit {
        "s" | "sec" | "second" | "seconds" => 1.0,
        "min" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return Err(format!("{what}: unit '{unit}' is not s, min, h or d")),
    };
    let us = value * secs * MICROS_PER_SEC as f64;
    if !(0.0..=7.0 * 86400.0 * MICROS_PER_SEC as f64).contains(&us) {
        return Err(format!("{what}: {value} {unit} is out of range"));
    }
    Ok(us.round() as i64)
}

/// A Period as `[lo, hi)` µs. Date-only bounds are local days of `tz` (an end date includes
/// that whole day); dateTime bounds are the instants they name. Absent bounds are open.
fn period(p: &Value, tz: Tz, what: &str) -> Result<(i64, i64), String> {
    let bound = |key: &str, end: bool| -> Result<i64, String> {
        let Some(text) = p[key].as_str() else {
            return Ok(if end { i64::MAX } else { i64::MIN });
        };
        let bad = || format!("{what}.{key}: '{text}' is not a date or dateTime");
        if text.contains('T') {
            Ok(datetime::parse(text, Kind::DateTime).ok_or_else(bad)?.0.lo)
        } else {
            let r = datetime::parse(text, Kind::Date).ok_or_else(bad)?.0;
            let naive = DateTime::from_timestamp_micros(if end { r.hi + 1 } else { r.lo })
                .ok_or_else(bad)?
                .naive_utc();
            Ok(local_to_utc(tz, naive))
        }
    };
    Ok((bound("start", false)?, bound("end", true)?))
}

/// The template's time zone: the Schedule's, else that of a Location the Schedule or its roles
/// point to (Schedule.actor, availability-location, PractitionerRole.location, in that order),
/// else of any Location given, else UTC.
fn zone(schedule: &Value, roles: &[Value], locations: &[Value]) -> Result<Tz, String> {
    if let Some(name) = tz_name(schedule) {
        return parse_tz(name);
    }
    let mut refs: Vec<&str> = array(&schedule["actor"])
        .filter_map(|a| a["reference"].as_str())
        .collect();
    for role in roles {
        for at in array(&role["availableTime"]) {
            refs.extend(
                extensions(at, "availability-location")
                    .filter_map(|e| e["valueReference"]["reference"].as_str()),
            );
        }
        refs.extend(array(&role["location"]).filter_map(|l| l["reference"].as_str()));
    }
    let by_ref = refs.iter().filter_map(|r| {
        let id = r.strip_prefix("Location/")?;
        locations.iter().find(|l| l["id"].as_str() == Some(id))
    });
    for loc in by_ref.chain(locations.iter()) {
        if let Some(name) = tz_name(loc) {
            return parse_tz(name);
        }
    }
    Ok(Tz::UTC)
}

fn tz_name(r: &Value) -> Option<&str> {
    let ours = ext_url("timezone");
    array(&r["extension"])
        .find(|e| e["url"] == ours.as_str() || e["url"] == HL7_TIMEZONE_EXT)
        .and_then(|e| e["valueCode"].as_str())
}

fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("'{name}' is not an IANA time zone"))
}

fn array(v: &Value) -> std::slice::Iter<'_, Value> {
    v.as_array().map(Vec::as_slice).unwrap_or_default().iter()
}

/// The extensions of ours named `name` on `v`.
fn extensions<'a>(v: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    let url = ext_url(name);
    array(&v["extension"]).filter(move |e| e["url"] == url.as_str())
}

/// The part `name` of a complex extension (Null when absent).
fn part<'a>(e: &'a Value, name: &str) -> &'a Value {
    array(&e["extension"])
        .find(|p| p["url"] == name)
        .unwrap_or(&Value::Null)
}

// ---------------------------------------------------------------------------------- local time

/// A local date-time of `tz` as µs: a time in a DST gap moves forward by the gap, an ambiguous
/// one is its first occurrence.
fn local_to_utc(tz: Tz, naive: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => d.timestamp_micros(),
        LocalResult::None => {
            // Read it with the offset in force before the gap: that lands after the gap.
            let before = naive - Duration::hours(6);
            let offset = tz
                .from_local_datetime(&before)
                .earliest()
                .map(|d| i64::from(d.offset().fix().local_minus_utc()))
                .unwrap_or(0);
            naive.and_utc().timestamp_micros() - offset * MICROS_PER_SEC
        }
    }
}

fn local_date(tz: Tz, us: i64) -> NaiveDate {
    match DateTime::from_timestamp_micros(us) {
        Some(d) => d.with_timezone(&tz).date_naive(),
        None if us < 0 => NaiveDate::MIN,
        None => NaiveDate::MAX,
    }
}

/// `day` at `secs` seconds after its local midnight (secs may pass 24 h), as µs.
fn at(tz: Tz, day: NaiveDate, secs: u32) -> i64 {
    let naive = day.and_time(NaiveTime::MIN) + Duration::seconds(i64::from(secs));
    local_to_utc(tz, naive)
}

/// The pieces `[lo, hi)` µs of window `w` on local `day` (its breaks cut out, clamped to the
/// role's period), or none when `w` does not apply that day.
fn pieces(tz: Tz, w: &Window, day: NaiveDate) -> Vec<(i64, i64)> {
    if !w.days.contains(&day.weekday()) {
        return Vec::new();
    }
    let mut local = vec![(w.start, w.end)];
    for b in &w.breaks {
        // A break applies on this day and, for the part of an overnight window, the next.
        for (offset, d) in [(0, day), (DAY, day.succ_opt().unwrap_or(day))] {
            if b.days.is_empty() || b.days.contains(&d.weekday()) {
                local = subtract(&local, (b.start + offset, b.end + offset));
            }
        }
    }
    local
        .into_iter()
        .map(|(s, e)| {
            let lo = at(tz, day, s).max(w.valid.0);
            let hi = at(tz, day, e).min(w.valid.1);
            (lo, hi)
        })
        .filter(|(lo, hi)| lo < hi)
        .collect()
}

fn subtract(ranges: &[(u32, u32)], cut: (u32, u32)) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(s, e) in ranges {
        if cut.1 <= s || e <= cut.0 {
            out.push((s, e));
            continue;
        }
        if s < cut.0 {
            out.push((s, cut.0));
        }
        if cut.1 < e {
            out.push((cut.1, e));
        }
    }
    out
}

/// The local days whose windows may reach into `[lo, hi)` (one before, for overnight windows).
fn days(tz: Tz, lo: i64, hi: i64) -> impl Iterator<Item = NaiveDate> {
    let first = local_date(tz, lo).pred_opt().unwrap_or(NaiveDate::MIN);
    let last = local_date(tz, hi);
    first.iter_days().take_while(move |d| *d <= last)
}

fn blocked(t: &Template, lo: i64, hi: i64) -> bool {
    t.not_available.iter().any(|&(a, b)| lo < b && a < hi)
}

// ---------------------------------------------------------------------------------- generating

/// The slots the template implies that lie entirely inside `[from, to)`, sorted by start.
/// The result for a slot does not depend on the window asked for, so generating day by day or
/// all at once gives the same slots.
pub fn generate(t: &Template, from: i64, to: i64) -> Vec<SlotSpec> {
    let lo = from.max(t.horizon.0);
    let hi = to.min(t.horizon.1);
    let mut out = Vec::new();
    if !t.active || lo >= hi || t.windows.is_empty() {
        return out;
    }
    let service_types: Vec<Option<&Value>> = if t.service_types.is_empty() {
        vec![None]
    } else {
        t.service_types.iter().map(Some).collect()
    };
    let mut modes: Vec<&str> = Vec::new();
    for m in t.windows.iter().flat_map(|w| &w.modes) {
        if !modes.contains(&m.as_str()) {
            modes.push(m);
        }
    }
    for day in days(t.tz, lo, hi) {
        for st in &service_types {
            for mode in &modes {
                // (lo, hi, duration, buffer, location) of every window piece of this series.
                let mut parts: Vec<(i64, i64, i64, i64, Option<&String>)> = Vec::new();
                for w in t
                    .windows
                    .iter()
                    .filter(|w| w.modes.iter().any(|m| m == mode))
                {
                    let d = slot_length(w, *st);
                    for (a, b) in pieces(t.tz, w, day) {
                        parts.push((a, b, d, w.buffer, w.location.as_ref()));
                    }
                }
                parts.sort_by_key(|p| (p.0, p.1));
                let mut cursor = i64::MIN;
                for (a, b, d, buffer, location) in parts {
                    let mut s = a.max(cursor);
                    while s.saturating_add(d) <= b {
                        let e = s + d;
                        if s >= lo && e <= hi && !blocked(t, s, e) {
                            out.push(SlotSpec {
                                start: s,
                                end: e,
                                service_type: st.cloned(),
                                visit_mode: mode.to_string(),
                                location: location.cloned(),
                            });
                        }
                        s = e.saturating_add(buffer);
                    }
                    cursor = cursor.max(s);
                }
            }
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

fn slot_length(w: &Window, service_type: Option<&Value>) -> i64 {
    let minutes = DEFAULT_SLOT_MINUTES * 60 * MICROS_PER_SEC;
    service_type
        .and_then(|st| {
            w.durations.iter().find(|d| {
                d.service_type
                    .as_ref()
                    .is_some_and(|x| concept_matches(x, st))
            })
        })
        .or_else(|| w.durations.iter().find(|d| d.service_type.is_none()))
        .map_or(minutes, |d| d.duration)
}

/// Two CodeableConcepts name the same thing: a shared coding (same code, and same system when
/// both have one), or, when neither has codings, the same text.
pub fn concept_matches(a: &Value, b: &Value) -> bool {
    let codings = |v: &Value| -> Vec<(Option<String>, String)> {
        array(&v["coding"])
            .filter_map(|c| {
                let code = c["code"].as_str()?;
                Some((c["system"].as_str().map(String::from), code.to_string()))
            })
            .collect()
    };
    let (ca, cb) = (codings(a), codings(b));
    if !ca.is_empty() || !cb.is_empty() {
        return ca.iter().any(|(sa, a)| {
            cb.iter()
                .any(|(sb, b)| a == b && (sa.is_none() || sb.is_none() || sa == sb))
        });
    }
    match (a["text"].as_str(), b["text"].as_str()) {
        (Some(x), Some(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => false,
    }
}

/// A canonical text for a CodeableConcept: its `system|code` codings sorted, else its text.
fn concept_key(v: &Value) -> String {
    let mut codes: Vec<String> = array(&v["coding"])
        .filter_map(|c| {
            let code = c["code"].as_str()?;
            Some(format!("{}|{code}", c["system"].as_str().unwrap_or("")))
        })
        .collect();
    if codes.is_empty() {
        return format!(
            "text:{}",
            v["text"].as_str().unwrap_or("").trim().to_lowercase()
        );
    }
    codes.sort();
    codes.dedup();
    codes.join(",")
}

// -------------------------------------------------------------------------------------- slots

/// The identifier value of a generated slot: `{schedule id}-{start, UTC}-{hash}`, the hash over
/// the schedule, start, end, service type, visit mode and location. Only `[A-Za-z0-9.-]`, so it
/// can go into `If-None-Exist: identifier=https://fhir-scheduler.org/fhir/slot-key|{key}` as is.
pub fn slot_key(schedule_ref: &str, spec: &SlotSpec) -> String {
    let id: String = schedule_ref
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    let start = DateTime::from_timestamp_micros(spec.start)
        .map(|d| d.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default();
    let text = format!(
        "{schedule_ref}\n{}\n{}\n{}\n{}\n{}",
        spec.start,
        spec.end,
        spec.service_type
            .as_ref()
            .map(concept_key)
            .unwrap_or_default(),
        spec.visit_mode,
        spec.location.as_deref().unwrap_or("")
    );
    format!("{id}-{start}-{:016x}", fnv1a(text.as_bytes()))
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A free R4 Slot for `spec` in the schedule `schedule_ref` (`Schedule/{id}`), identified by
/// [`slot_key`], its visit mode and location as extensions, offering `specialty`.
pub fn slot_resource(schedule_ref: &str, spec: &SlotSpec, specialty: &[Value]) -> Value {
    let mut extension = vec![json!({"url": ext_url("visit-mode"), "valueCode": spec.visit_mode})];
    if let Some(loc) = &spec.location {
        extension.push(json!({"url": ext_url("availability-location"),
                              "valueReference": {"reference": loc}}));
    }
    let mut slot = json!({
        "resourceType": "Slot",
        "extension": extension,
        "identifier": [{"system": SLOT_KEY_SYSTEM, "value": slot_key(schedule_ref, spec)}],
    });
    if let Some(st) = &spec.service_type {
        slot["serviceType"] = json!([st]);
    }
    if !specialty.is_empty() {
        slot["specialty"] = json!(specialty);
    }
    slot["schedule"] = json!({"reference": schedule_ref});
    slot["status"] = json!("free");
    slot["start"] = json!(format_instant(spec.start));
    slot["end"] = json!(format_instant(spec.end));
    slot
}

/// What a slot offers, for comparing existing Slots with wanted ones.
type Signature = (i64, i64, String, String, String);

fn spec_signature(s: &SlotSpec) -> Signature {
    (
        s.start,
        s.end,
        s.service_type.as_ref().map(concept_key).unwrap_or_default(),
        s.visit_mode.clone(),
        s.location.clone().unwrap_or_default(),
    )
}

fn slot_signature(slot: &Value) -> Option<Signature> {
    let instant = |k: &str| Some(datetime::parse(slot[k].as_str()?, Kind::Instant)?.0.lo);
    let service_types: Vec<String> = array(&slot["serviceType"]).map(concept_key).collect();
    let mode = extensions(slot, "visit-mode")
        .find_map(|e| e["valueCode"].as_str())
        .unwrap_or(DEFAULT_VISIT_MODE);
    let location = extensions(slot, "availability-location")
        .find_map(|e| e["valueReference"]["reference"].as_str())
        .unwrap_or("");
    Some((
        instant("start")?,
        instant("end")?,
        service_types.join(";"),
        mode.to_string(),
        location.to_string(),
    ))
}

/// Brings the slots of a window in line with `wanted` (from [`generate`] over the same window):
/// free future slots no longer wanted are deleted; wanted slots not there yet are created,
/// unless they would overlap a slot that is not free (booked, held or blocked). Slots that have
/// started (`start < now`) and slots that are not free are never deleted.
pub fn regenerate(existing: &[Value], wanted: &[SlotSpec], now: i64) -> Regeneration {
    let wanted_sigs: HashSet<Signature> = wanted.iter().map(spec_signature).collect();
    let mut present: HashSet<Signature> = HashSet::new();
    let mut taken: Vec<(i64, i64)> = Vec::new();
    let mut out = Regeneration::default();
    for slot in existing {
        let status = slot["status"].as_str().unwrap_or_default();
        if status == "entered-in-error" {
            continue;
        }
        let Some(sig) = slot_signature(slot) else {
            continue;
        };
        if status != "free" {
            taken.push((sig.0, sig.1));
            present.insert(sig);
        } else if sig.0 < now || wanted_sigs.contains(&sig) {
            present.insert(sig);
        } else if let Some(id) = slot["id"].as_str() {
            out.delete.push(id.to_string());
        }
    }
    for spec in wanted {
        let sig = spec_signature(spec);
        if spec.start < now
            || present.contains(&sig)
            || taken.iter().any(|&(a, b)| spec.start < b && a < spec.end)
        {
            continue;
        }
        present.insert(sig);
        out.create.push(spec.clone());
    }
    out
}

// ---------------------------------------------------------------------------------- conflicts

/// Ids of the active appointments (of `booked`) that the template no longer allows: they touch
/// a `notAvailable` period, or — when the template has available times at all — they do not lie
/// within one (breaks and the role's period count; visit mode, service type and buffer do not).
pub fn conflicts(booked: &[Value], t: &Template) -> Vec<String> {
    let mut out = Vec::new();
    for a in booked {
        if !is_active(a["status"].as_str().unwrap_or_default()) {
            continue;
        }
        let Some(id) = a["id"].as_str() else {
            continue;
        };
        let instant = |k: &str| Some(datetime::parse(a[k].as_str()?, Kind::Instant)?.0.lo);
        let (Some(s), Some(e)) = (instant("start"), instant("end")) else {
            continue;
        };
        if blocked(t, s, e) || (!t.windows.is_empty() && !covered(t, s, e)) {
            out.push(id.to_string());
        }
    }
    out
}

/// Is `[s, e)` inside the union of the template's window pieces?
fn covered(t: &Template, s: i64, e: i64) -> bool {
    let mut ranges: Vec<(i64, i64)> = days(t.tz, s, e)
        .flat_map(|day| t.windows.iter().flat_map(move |w| pieces(t.tz, w, day)))
        .collect();
    ranges.sort_unstable();
    let mut reach: Option<(i64, i64)> = None;
    for (a, b) in ranges {
        reach = match reach {
            Some((lo, hi)) if a <= hi => Some((lo, hi.max(b))),
            _ => Some((a, b)),
        };
        if let Some((lo, hi)) = reach {
            if lo <= s && e <= hi {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::structure::Structures;
    use crate::scheduling::effects::EXT_BASE;

    const MIN: i64 = 60 * MICROS_PER_SEC;

    fn us(text: &str) -> i64 {
        datetime::parse(text, Kind::Instant).unwrap().0.lo
    }

    fn hm(spec: &SlotSpec) -> String {
        format!(
            "{}/{}",
            &format_instant(spec.start)[..16],
            &format_instant(spec.end)[11..16]
        )
    }

    fn ext(name: &str, value: Value) -> Value {
        let mut e = value;
        e["url"] = json!(ext_url(name));
        e
    }

    fn schedule() -> Value {
        json!({"resourceType": "Schedule", "id": "s1", "active": true,
               "actor": [{"reference": "PractitionerRole/r1"}]})
    }

    /// Mon–Fri 09:00–12:00, 30 min slots, 10 min buffer, lunch break irrelevant here.
    fn role() -> Value {
        json!({"resourceType": "PractitionerRole", "id": "r1", "active": true,
               "location": [{"reference": "Location/l1"}],
               "extension": [
                   ext("slot-duration", json!({"extension": [
                       {"url": "duration", "valueDuration": {"value": 30, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}}]})),
                   ext("buffer", json!({"valueDuration": {"value": 10, "system": "http://unitsofmeasure.org", "code": "min"}}))],
               "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                                  "availableStartTime": "09:00:00", "availableEndTime": "12:00:00"}]})
    }

    fn location(tz: &str) -> Value {
        json!({"resourceType": "Location", "id": "l1", "name": "Clinic",
               "extension": [{"url": ext_url("timezone"), "valueCode": tz}]})
    }

    // 2030-01-07 is a Monday.
    const MON: &str = "2030-01-07T00:00:00Z";

    #[test]
    fn slots_follow_days_duration_and_buffer() {
        let t = template(&schedule(), &[role()], &[]).unwrap();
        assert_eq!(t.tz, Tz::UTC);
        let slots = generate(&t, us(MON), datetime::add_days(us(MON), 7));
        // 09:00, 09:40, 10:20, 11:00 (11:40 + 30 > 12:00), five weekdays.
        assert_eq!(slots.len(), 20);
        let first: Vec<String> = slots[..4].iter().map(hm).collect();
        assert_eq!(
            first,
            [
                "2030-01-07T09:00/09:30",
                "2030-01-07T09:40/10:10",
                "2030-01-07T10:20/10:50",
                "2030-01-07T11:00/11:30"
            ]
        );
        assert!(slots.iter().all(|s| s.visit_mode == "in-person"
            && s.location.as_deref() == Some("Location/l1")
            && s.service_type.is_none()));
        assert!(slots.windows(2).all(|w| w[0].start <= w[1].start));
        // Only slots entirely inside the window; the same slots whatever the window.
        let part = generate(&t, us("2030-01-07T09:30:00Z"), us("2030-01-07T11:30:00Z"));
        assert_eq!(part, slots[1..4].to_vec());
    }

    #[test]
    fn defaults_without_extensions() {
        let r = json!({"resourceType": "PractitionerRole", "id": "r",
                       "availableTime": [{"availableStartTime": "09:00:00", "availableEndTime": "10:00:00"}]});
        let t = template(&schedule(), &[r], &[]).unwrap();
        let slots = generate(&t, us(MON), datetime::add_days(us(MON), 1));
        // Every day (no daysOfWeek), 15 minutes, no buffer, no location.
        assert_eq!(slots.len(), 4);
        assert_eq!(slots[1].start - slots[0].end, 0);
        assert_eq!(slots[0].end - slots[0].start, DEFAULT_SLOT_MINUTES * MIN);
        assert_eq!(slots[0].location, None);
        // allDay fills the day.
        let r = json!({"resourceType": "PractitionerRole", "availableTime": [{"allDay": true}]});
        let t = template(&schedule(), &[r], &[]).unwrap();
        assert_eq!(
            generate(&t, us(MON), datetime::add_days(us(MON), 1)).len(),
            96
        );
    }

    #[test]
    fn breaks_and_not_available_remove_slots() {
        let mut r = role();
        r["extension"].as_array_mut().unwrap().push(ext(
            "break",
            json!({"extension": [
                {"url": "daysOfWeek", "valueCode": "mon"},
                {"url": "start", "valueTime": "10:00:00"},
                {"url": "end", "valueTime": "10:30:00"}]}),
        ));
        r["notAvailable"] = json!([
            {"description": "Holiday", "during": {"start": "2030-01-08", "end": "2030-01-08"}},
            {"description": "Dentist", "during": {"start": "2030-01-09T09:50:00Z", "end": "2030-01-09T10:20:00Z"}},
            {"description": "No period"}]);
        let t = template(&schedule(), &[r], &[]).unwrap();
        let day = |d: &str| -> Vec<String> {
            let lo = us(&format!("{d}T00:00:00Z"));
            generate(&t, lo, datetime::add_days(lo, 1))
                .iter()
                .map(hm)
                .collect()
        };
        // Monday: 09:00 only before the break; after it the piece is packed from 10:30.
        assert_eq!(
            day("2030-01-07"),
            [
                "2030-01-07T09:00/09:30",
                "2030-01-07T10:30/11:00",
                "2030-01-07T11:10/11:40"
            ]
        );
        assert!(day("2030-01-08").is_empty());
        // Wednesday: the slot touching the dentist goes, the others keep their place.
        assert_eq!(
            day("2030-01-09"),
            [
                "2030-01-09T09:00/09:30",
                "2030-01-09T10:20/10:50",
                "2030-01-09T11:00/11:30"
            ]
        );
    }

    #[test]
    fn local_time_and_dst() {
        // Europe/Paris goes from +01:00 to +02:00 on Sunday 2030-03-31 at 02:00 local.
        let r = json!({"resourceType": "PractitionerRole", "id": "r1",
                       "location": [{"reference": "Location/l1"}],
                       "extension": [ext("slot-duration", json!({"extension": [
                           {"url": "duration", "valueDuration": {"value": 1, "code": "h"}}]}))],
                       "availableTime": [
                           {"daysOfWeek": ["sat", "sun"], "availableStartTime": "09:00:00", "availableEndTime": "10:00:00"},
                           {"daysOfWeek": ["sun"], "availableStartTime": "01:00:00", "availableEndTime": "04:00:00"}]});
        let t = template(&schedule(), &[r], &[location("Europe/Paris")]).unwrap();
        assert_eq!(t.tz, chrono_tz::Europe::Paris);
        let slots: Vec<String> =
            generate(&t, us("2030-03-30T00:00:00Z"), us("2030-04-01T00:00:00Z"))
                .iter()
                .map(hm)
                .collect();
        assert_eq!(
            slots,
            [
                "2030-03-30T08:00/09:00",
                // 01:00 CET to 04:00 CEST is two real hours.
                "2030-03-31T00:00/01:00",
                "2030-03-31T01:00/02:00",
                "2030-03-31T07:00/08:00"
            ]
        );
        // A local time inside the gap moves forward by the gap.
        let gap = NaiveDate::from_ymd_opt(2030, 3, 31)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(
            format_instant(local_to_utc(chrono_tz::Europe::Paris, gap)),
            "2030-03-31T01:30:00.000Z"
        );
        // The Schedule's own zone wins; a bad zone is an error.
        let mut s = schedule();
        s["extension"] = json!([{"url": ext_url("timezone"), "valueCode": "America/New_York"}]);
        let t = template(&s, &[], &[location("Europe/Paris")]).unwrap();
        assert_eq!(t.tz, chrono_tz::America::New_York);
        s["extension"][0]["valueCode"] = json!("Mars/Olympus");
        assert!(template(&s, &[], &[]).is_err());
    }

    #[test]
    fn service_types_modes_and_locations() {
        let mut s = schedule();
        s["serviceType"] = json!([
            {"coding": [{"system": "urn:svc", "code": "new"}]},
            {"coding": [{"system": "urn:svc", "code": "follow-up"}]}]);
        let r = json!({"resourceType": "PractitionerRole", "id": "r1",
            "extension": [
                ext("slot-duration", json!({"extension": [
                    {"url": "serviceType", "valueCodeableConcept": {"coding": [{"system": "urn:svc", "code": "new"}]}},
                    {"url": "duration", "valueDuration": {"value": 60, "code": "min"}}]})),
                ext("slot-duration", json!({"extension": [
                    {"url": "duration", "valueDuration": {"value": 20, "code": "min"}}]}))],
            "availableTime": [
                {"daysOfWeek": ["mon"], "availableStartTime": "09:00:00", "availableEndTime": "10:00:00",
                 "extension": [ext("visit-mode", json!({"valueCode": "virtual"})),
                               ext("visit-mode", json!({"valueCode": "in-person"})),
                               ext("availability-location", json!({"valueReference": {"reference": "Location/l2"}}))]}]});
        let t = template(&s, &[r], &[]).unwrap();
        let slots = generate(&t, us(MON), datetime::add_days(us(MON), 1));
        let count = |code: &str, mode: &str| {
            slots
                .iter()
                .filter(|x| {
                    x.service_type.as_ref().unwrap()["coding"][0]["code"] == code
                        && x.visit_mode == mode
                })
                .count()
        };
        assert_eq!(count("new", "virtual"), 1);
        assert_eq!(count("new", "in-person"), 1);
        assert_eq!(count("follow-up", "virtual"), 3);
        assert_eq!(count("follow-up", "in-person"), 3);
        assert!(slots
            .iter()
            .all(|x| x.location.as_deref() == Some("Location/l2")));
        // Bad codes are errors.
        let mut bad = role();
        bad["availableTime"][0]["daysOfWeek"] = json!(["monday"]);
        assert!(template(&schedule(), &[bad], &[]).is_err());
    }

    #[test]
    fn horizon_inactive_and_role_period() {
        let mut s = schedule();
        s["planningHorizon"] =
            json!({"start": "2030-01-08T00:00:00Z", "end": "2030-01-09T00:00:00Z"});
        let t = template(&s, &[role()], &[]).unwrap();
        let slots = generate(&t, us(MON), datetime::add_days(us(MON), 7));
        assert_eq!(slots.len(), 4);
        assert!(format_instant(slots[0].start).starts_with("2030-01-08"));
        s["active"] = json!(false);
        let t = template(&s, &[role()], &[]).unwrap();
        assert!(generate(&t, us(MON), datetime::add_days(us(MON), 7)).is_empty());
        let mut r = role();
        r["period"] = json!({"end": "2030-01-07"});
        let t = template(&schedule(), &[r.clone()], &[]).unwrap();
        assert_eq!(
            generate(&t, us(MON), datetime::add_days(us(MON), 7)).len(),
            4
        );
        r["active"] = json!(false);
        let t = template(&schedule(), &[r], &[]).unwrap();
        assert!(t.windows.is_empty());
    }

    #[test]
    fn slot_resources_are_deterministic() {
        let spec = SlotSpec {
            start: us("2030-01-07T09:00:00Z"),
            end: us("2030-01-07T09:30:00Z"),
            service_type: Some(json!({"coding": [{"system": "urn:svc", "code": "new"}]})),
            visit_mode: "virtual".into(),
            location: Some("Location/l1".into()),
        };
        let a = slot_resource("Schedule/s1", &spec, &[]);
        assert_eq!(a, slot_resource("Schedule/s1", &spec, &[]));
        assert_eq!(a["status"], "free");
        assert_eq!(a["start"], "2030-01-07T09:00:00.000Z");
        assert_eq!(a["identifier"][0]["system"], SLOT_KEY_SYSTEM);
        let key = a["identifier"][0]["value"].as_str().unwrap();
        assert!(key.starts_with("s1-20300107T090000Z-"), "{key}");
        assert!(key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        let mut other = spec.clone();
        other.visit_mode = "in-person".into();
        assert_ne!(slot_key("Schedule/s1", &other), key);
        assert_ne!(slot_key("Schedule/s2", &spec), key);
        // Read back, it is the same slot.
        assert_eq!(slot_signature(&a), Some(spec_signature(&spec)));
        assert!(structures().validate(&a).is_empty());
    }

    #[test]
    fn regeneration_spares_booked_and_past_slots() {
        let t = template(&schedule(), &[role()], &[]).unwrap();
        let (lo, hi) = (us(MON), datetime::add_days(us(MON), 1));
        let old = generate(&t, lo, hi);
        let mut existing: Vec<Value> = old
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut r = slot_resource("Schedule/s1", s, &[]);
                r["id"] = json!(format!("x{i}"));
                r
            })
            .collect();
        let now = us("2030-01-07T09:35:00Z");
        // Nothing changed: nothing to do.
        assert_eq!(regenerate(&existing, &old, now), Regeneration::default());
        // x2 (10:20) is booked, x0 (09:00) is past. Slots become 45 min, no buffer.
        existing[2]["status"] = json!("busy");
        let mut r = role();
        r["extension"] = json!([ext(
            "slot-duration",
            json!({"extension": [
            {"url": "duration", "valueDuration": {"value": 45, "code": "min"}}]})
        )]);
        let t2 = template(&schedule(), &[r], &[]).unwrap();
        let wanted = generate(&t2, lo, hi); // 09:00, 09:45, 10:30, 11:15
        let re = regenerate(&existing, &wanted, now);
        assert_eq!(re.delete, ["x1", "x3"]);
        // 09:00 is past; 09:45 and 10:30 overlap the booked 10:20–10:50.
        let created: Vec<String> = re.create.iter().map(hm).collect();
        assert_eq!(created, ["2030-01-07T11:15/12:00"]);
        // Running it again after applying changes nothing.
        let mut applied: Vec<Value> = existing
            .into_iter()
            .filter(|s| !re.delete.contains(&s["id"].as_str().unwrap().to_string()))
            .collect();
        applied.extend(
            re.create
                .iter()
                .map(|s| slot_resource("Schedule/s1", s, &[])),
        );
        assert_eq!(regenerate(&applied, &wanted, now), Regeneration::default());
    }

    #[test]
    fn conflicts_list_appointments_out_of_availability() {
        let mut r = role();
        r["notAvailable"] = json!([{"description": "Leave", "during": {"start": "2030-01-08", "end": "2030-01-09"}}]);
        let t = template(&schedule(), &[r], &[]).unwrap();
        let appt = |id: &str, status: &str, s: &str, e: &str| {
            json!({"resourceType": "Appointment", "id": id, "status": status,
                   "start": s, "end": e, "participant": [{"actor": {"reference": "PractitionerRole/r1"}, "status": "accepted"}]})
        };
        let booked = [
            appt(
                "ok",
                "booked",
                "2030-01-07T09:00:00Z",
                "2030-01-07T09:30:00Z",
            ),
            // Inside the window even though off the slot grid (no buffer check).
            appt(
                "ok2",
                "booked",
                "2030-01-07T09:20:00Z",
                "2030-01-07T10:00:00Z",
            ),
            appt(
                "leave",
                "booked",
                "2030-01-08T09:00:00Z",
                "2030-01-08T09:30:00Z",
            ),
            appt(
                "late",
                "pending",
                "2030-01-07T11:45:00Z",
                "2030-01-07T12:15:00Z",
            ),
            appt(
                "sunday",
                "booked",
                "2030-01-06T09:00:00Z",
                "2030-01-06T09:30:00Z",
            ),
            appt(
                "gone",
                "cancelled",
                "2030-01-08T09:00:00Z",
                "2030-01-08T09:30:00Z",
            ),
        ];
        assert_eq!(conflicts(&booked, &t), ["leave", "late", "sunday"]);
    }

    fn structures() -> Structures {
        let sds: Value = serde_json::from_str(crate::fhir::profiles::STRUCTURES).unwrap();
        let vss: Value = serde_json::from_str(crate::fhir::profiles::VALUESETS).unwrap();
        Structures::from_bundles(&sds, &vss).unwrap()
    }

    fn extensions_bundle() -> Value {
        serde_json::from_str(crate::fhir::profiles::EXTENSIONS).unwrap()
    }

    #[test]
    fn extension_definitions_are_valid_r4() {
        let b = extensions_bundle();
        assert_eq!(b["type"], "collection");
        // The strict parse does look inside conformance resources.
        assert!(
            fhir_r4::check_strict(r#"{"resourceType":"StructureDefinition","colour":1}"#).is_err()
        );
        fhir_r4::check_strict(&b.to_string()).unwrap();
        let mut defined = Vec::new();
        for e in b["entry"].as_array().unwrap() {
            let r = &e["resource"];
            fhir_r4::check_strict(&r.to_string()).unwrap();
            if r["resourceType"] == "StructureDefinition" {
                assert_eq!(r["type"], "Extension");
                assert_eq!(r["derivation"], "constraint");
                assert_eq!(r["kind"], "complex-type");
                assert!(!r["context"].as_array().unwrap().is_empty());
                let url = r["url"].as_str().unwrap();
                defined.push(url.strip_prefix(EXT_BASE).unwrap().to_string());
            }
        }
        // Every extension the code writes or reads is defined.
        for name in [
            "slot-duration",
            "buffer",
            "break",
            "visit-mode",
            "availability-location",
            "accommodation",
            "interpreter-language",
            "virtual-join-link",
            "hold-expires",
            "status-history",
            "timezone",
            "accepted-insurance",
        ] {
            assert!(defined.iter().any(|d| d == name), "{name}");
        }
    }

    #[test]
    fn resources_carrying_our_extensions_validate() {
        let s = structures();
        let acc = |code: &str| {
            json!({"valueCodeableConcept": {"coding": [
                {"system": "https://fhir-scheduler.org/fhir/CodeSystem/accommodation", "code": code}]}})
        };
        let mut role = role();
        role["availableTime"][0]["extension"] = json!([
            ext("visit-mode", json!({"valueCode": "virtual"})),
            ext(
                "availability-location",
                json!({"valueReference": {"reference": "Location/l1"}})
            ),
            ext(
                "break",
                json!({"extension": [
                {"url": "start", "valueTime": "10:00:00"}, {"url": "end", "valueTime": "10:15:00"}]})
            )
        ]);
        let list = role["extension"].as_array_mut().unwrap();
        list.push(ext(
            "break",
            json!({"extension": [
            {"url": "daysOfWeek", "valueCode": "mon"}, {"url": "daysOfWeek", "valueCode": "fri"},
            {"url": "start", "valueTime": "12:00:00"}, {"url": "end", "valueTime": "13:00:00"}]}),
        ));
        list.push(ext("accommodation", acc("wheelchair-access")));
        list.push(ext(
            "accepted-insurance",
            json!({"valueCodeableConcept": {"coding": [{"system": "urn:plans", "code": "acme"}]}}),
        ));
        role["notAvailable"] = json!([{"description": "Holiday", "during": {"start": "2030-01-08", "end": "2030-01-08"}}]);
        let appt = json!({
            "resourceType": "Appointment", "id": "a1", "status": "pending",
            "start": "2030-01-07T09:00:00Z", "end": "2030-01-07T09:30:00Z",
            "extension": [
                ext("accommodation", acc("interpreter")),
                ext("interpreter-language", json!({"valueCode": "es"})),
                ext("accommodation", acc("longer-visit")),
                ext("visit-mode", json!({"valueCode": "virtual"})),
                ext("virtual-join-link", json!({"valueUrl": "https://visit.example.org/join/a1"})),
                ext("hold-expires", json!({"valueInstant": "2030-01-07T08:05:00.000Z"})),
                ext("status-history", json!({"extension": [
                    {"url": "status", "valueCode": "pending"},
                    {"url": "at", "valueInstant": "2030-01-07T08:00:00.000Z"}]}))],
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]});
        let mut loc = location("Europe/Paris");
        loc["extension"]
            .as_array_mut()
            .unwrap()
            .push(ext("accommodation", acc("hearing-assistance")));
        let mut sched = schedule();
        sched["extension"] = json!([ext("timezone", json!({"valueCode": "Europe/Paris"}))]);
        for r in [&role, &appt, &loc, &sched] {
            assert_eq!(s.validate(r), vec![], "{}", r["resourceType"]);
            fhir_r4::check_strict(&r.to_string()).unwrap();
        }
        // And the template reads them.
        let t = template(&sched, &[role], &[loc]).unwrap();
        assert_eq!(t.windows[0].breaks.len(), 2);
        assert_eq!(t.windows[0].modes, ["virtual"]);
    }
}
