//! Patient messages about their appointments (pure): the patient's preferences (the
//! `notification-preferences` Patient extension) and the plan of what to send when —
//! confirmations and change/cancel notices at once, reminders their lead times before the start,
//! moved out of the patient's quiet hours.

use chrono::{DateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::scheduling::effects::ext_url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn code(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirmation,
    Reminder,
    Changed,
    Cancelled,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Reminder => "reminder",
            Self::Changed => "changed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prefs {
    pub channels: Vec<Channel>,
    /// Reminder lead times, seconds before the start.
    pub leads: Vec<i64>,
    pub quiet: Option<(NaiveTime, NaiveTime)>,
    pub tz: Tz,
    pub language: String,
}

impl Default for Prefs {
    fn default() -> Self {
        Self {
            channels: vec![Channel::Email],
            leads: vec![24 * 3600],
            quiet: None,
            tz: Tz::UTC,
            language: "en".into(),
        }
    }
}

fn duration_secs(d: &Value) -> Option<i64> {
    let v = d["value"].as_f64()?;
    let unit = d["code"].as_str().or(d["unit"].as_str())?;
    let per = match unit {
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Some((v * per).round() as i64).filter(|s| *s > 0)
}

/// The patient's preferences (defaults where the extension is absent or a part unreadable).
pub fn prefs(patient: &Value, default_tz: Tz) -> Prefs {
    let mut p = Prefs {
        tz: default_tz,
        ..Prefs::default()
    };
    let url = ext_url("notification-preferences");
    let Some(ext) = patient["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == url.as_str())
    else {
        return p;
    };
    let parts: Vec<&Value> = ext["extension"].as_array().into_iter().flatten().collect();
    let part = |name: &'static str| parts.iter().filter(move |e| e["url"] == name);
    if let Some(c) = part("channel").next().and_then(|e| e["valueCode"].as_str()) {
        p.channels = match c {
            "sms" => vec![Channel::Sms],
            "both" => vec![Channel::Email, Channel::Sms],
            "none" => vec![],
            _ => vec![Channel::Email],
        };
    }
    let leads: Vec<i64> = part("lead")
        .filter_map(|e| duration_secs(&e["valueDuration"]))
        .collect();
    if !leads.is_empty() {
        p.leads = leads;
    }
    let time = |name: &'static str| {
        part(name)
            .next()
            .and_then(|e| e["valueTime"].as_str())
            .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M:%S").ok())
    };
    if let (Some(a), Some(b)) = (time("quiet-start"), time("quiet-end")) {
        if a != b {
            p.quiet = Some((a, b));
        }
    }
    if let Some(tz) = part("timezone")
        .next()
        .and_then(|e| e["valueCode"].as_str())
        .and_then(|t| t.parse::<Tz>().ok())
    {
        p.tz = tz;
    }
    if let Some(l) = part("language")
        .next()
        .and_then(|e| e["valueCode"].as_str())
    {
        p.language = l.to_string();
    }
    p
}

/// One message to send: what, on which channel, when (µs since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub kind: Kind,
    pub channel: Channel,
    pub due: i64,
}

fn in_quiet(t: NaiveTime, (start, end): (NaiveTime, NaiveTime)) -> bool {
    if start < end {
        t >= start && t < end
    } else {
        t >= start || t < end // over midnight
    }
}

/// `due` moved out of the quiet hours: to their end if that is still before the appointment
/// (less 15 minutes), else to just before they began; `None` when neither is after `now`.
pub fn out_of_quiet(due: i64, start: i64, now: i64, p: &Prefs) -> Option<i64> {
    let Some(q) = p.quiet else {
        return Some(due);
    };
    let utc = DateTime::<Utc>::from_timestamp_micros(due)?;
    let local = utc.with_timezone(&p.tz);
    if !in_quiet(local.time(), q) {
        return Some(due);
    }
    let day = local.date_naive();
    let at = |d: chrono::NaiveDate, t: NaiveTime| {
        p.tz.from_local_datetime(&d.and_time(t))
            .earliest()
            .map(|x| x.with_timezone(&Utc).timestamp_micros())
    };
    let (qs, qe) = q;
    // The end of this quiet stretch, and its beginning.
    let end_day = if qs > qe && local.time() >= qs {
        day.succ_opt()?
    } else {
        day
    };
    let begin_day = if qs > qe && local.time() < qe {
        day.pred_opt()?
    } else {
        day
    };
    let end = at(end_day, qe)?;
    let begin = at(begin_day, qs)? - 60_000_000;
    if end <= start - 15 * 60_000_000 {
        return Some(end);
    }
    (begin > now).then_some(begin)
}

/// The messages an appointment change calls for. `kind` is the notice sent at once
/// (confirmation, changed, cancelled); reminders follow for confirmations and changes.
pub fn plan(kind: Kind, start: i64, now: i64, p: &Prefs) -> Vec<Planned> {
    let mut out = Vec::new();
    for &channel in &p.channels {
        out.push(Planned {
            kind,
            channel,
            due: now,
        });
        if kind == Kind::Cancelled {
            continue;
        }
        let mut seen = Vec::new();
        for lead in &p.leads {
            let due = start - lead * 1_000_000;
            if due <= now {
                continue;
            }
            if let Some(due) = out_of_quiet(due, start, now, p) {
                // Two leads landing on the same time send one reminder.
                if !seen.contains(&due) {
                    seen.push(due);
                    out.push(Planned {
                        kind: Kind::Reminder,
                        channel,
                        due,
                    });
                }
            }
        }
    }
    out
}

/// Local wall-clock text of an instant for the patient (for message bodies).
pub fn local_text(at: i64, p: &Prefs) -> String {
    DateTime::<Utc>::from_timestamp_micros(at)
        .map(|d| {
            let l = d.with_timezone(&p.tz);
            format!(
                "{} {:02}:{:02} ({})",
                l.date_naive(),
                l.hour(),
                l.minute(),
                p.tz.name()
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    fn patient() -> Value {
        json!({"resourceType": "Patient", "extension": [{"url": ext_url("notification-preferences"),
            "extension": [
                {"url": "channel", "valueCode": "both"},
                {"url": "lead", "valueDuration": {"value": 48, "unit": "h", "system": "http://unitsofmeasure.org", "code": "h"}},
                {"url": "lead", "valueDuration": {"value": 2, "unit": "h", "system": "http://unitsofmeasure.org", "code": "h"}},
                {"url": "quiet-start", "valueTime": "21:00:00"},
                {"url": "quiet-end", "valueTime": "08:00:00"},
                {"url": "timezone", "valueCode": "America/Chicago"},
                {"url": "language", "valueCode": "es"}]}]})
    }

    #[test]
    fn reads_preferences_with_defaults() {
        let p = prefs(&patient(), Tz::UTC);
        assert_eq!(p.channels, [Channel::Email, Channel::Sms]);
        assert_eq!(p.leads, [48 * 3600, 2 * 3600]);
        assert_eq!(p.tz, chrono_tz::America::Chicago);
        assert_eq!(p.language, "es");
        assert_eq!(
            prefs(&json!({"resourceType": "Patient"}), Tz::UTC),
            Prefs::default()
        );
    }

    #[test]
    fn reminders_leave_quiet_hours() {
        let p = prefs(&patient(), Tz::UTC);
        // 09:00 Chicago (15:00Z) on 3 March: 48 h before is 09:00 on the 1st (fine); 2 h before
        // is 07:00 local, inside quiet hours, which end at 08:00 — only 1 h before the visit,
        // still more than 15 min: 08:00 local.
        let start = micros("2030-03-03T15:00:00Z");
        let now = micros("2030-02-20T12:00:00Z");
        let plan = plan(Kind::Confirmation, start, now, &p);
        let email: Vec<i64> = plan
            .iter()
            .filter(|m| m.channel == Channel::Email)
            .map(|m| m.due)
            .collect();
        assert_eq!(
            email,
            [
                now,
                micros("2030-03-01T15:00:00Z"),
                micros("2030-03-03T14:00:00Z")
            ]
        );
        assert_eq!(plan.len(), 6, "both channels");
        // A 08:10 visit: quiet hours end too late (07:10 → 08:00 > 07:55), so before 21:00 the
        // evening before.
        let early = micros("2030-03-03T14:10:00Z");
        let d = out_of_quiet(early - 2 * 3_600_000_000, early, now, &p).unwrap();
        assert_eq!(d, micros("2030-03-03T02:59:00Z"));
        // Cancelled: a notice, no reminders; reminders already past are not planned.
        assert_eq!(plan_len(Kind::Cancelled, start, now, &p), 2);
        assert_eq!(
            plan_len(Kind::Confirmation, start, start - 3_600_000_000, &p),
            2
        );
    }

    fn plan_len(k: Kind, start: i64, now: i64, p: &Prefs) -> usize {
        plan(k, start, now, p).len()
    }
}
