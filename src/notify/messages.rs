//! Patient message texts (pure): templates per language and kind (`templates/messages`,
//! embedded at build time; English when the patient's language has none) and the iCalendar
//! (RFC 5545) attachment of the appointment.

use serde_json::Value;

use crate::fhir::datetime::{self, format_instant};

fn parse_instant(t: &str) -> Option<i64> {
    datetime::parse(t, datetime::Kind::DateTime).map(|(r, _)| r.lo)
}

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// What a template can say.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub name: String,
    pub practitioner: String,
    pub when: String,
    pub place: String,
    pub manage: String,
}

/// `(subject, body)` of a message of `kind` in `language` (else English).
pub fn render(kind: &str, language: &str, c: &Context) -> Option<(String, String)> {
    let find = |l: &str| {
        TEMPLATES
            .iter()
            .find(|(tl, tk, _)| *tl == l && *tk == kind)
            .map(|t| t.2)
    };
    let primary = language.split('-').next().unwrap_or(language);
    let text = find(language)
        .or_else(|| find(primary))
        .or_else(|| find("en"))?;
    let filled = text
        .replace("{name}", &c.name)
        .replace("{practitioner}", &c.practitioner)
        .replace("{when}", &c.when)
        .replace("{where}", &c.place)
        .replace("{manage}", &c.manage);
    let (first, rest) = filled.split_once('\n')?;
    let subject = first.strip_prefix("Subject: ")?.trim().to_string();
    Some((subject, rest.trim_start_matches('\n').to_string()))
}

/// Languages with a full set of templates.
pub fn languages() -> Vec<&'static str> {
    let mut l: Vec<&str> = TEMPLATES.iter().map(|t| t.0).collect();
    l.dedup();
    l
}

fn ics_time(t: i64) -> String {
    // 2030-03-01T09:00:00Z → 20300301T090000Z
    format_instant(t)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect::<String>()
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end_matches('Z')
        .to_string()
        + "Z"
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace('\n', "\\n")
}

/// An iCalendar object for the appointment: `REQUEST` (booked/changed/reminder) or `CANCEL`.
/// The UID is stable per appointment and SEQUENCE follows its version, so calendars update the
/// one event.
pub fn ics(appt: &Value, version: i64, summary: &str, cancel: bool, now: i64) -> Option<String> {
    let id = appt["id"].as_str()?;
    let start = parse_instant(appt["start"].as_str()?)?;
    let end = appt["end"]
        .as_str()
        .and_then(parse_instant)
        .unwrap_or(start + 30 * 60_000_000);
    let (method, status) = if cancel {
        ("CANCEL", "CANCELLED")
    } else {
        ("REQUEST", "CONFIRMED")
    };
    let lines = [
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//fhir-scheduler//appointments//EN".into(),
        format!("METHOD:{method}"),
        "BEGIN:VEVENT".into(),
        format!("UID:{id}@fhir-scheduler"),
        format!("SEQUENCE:{version}"),
        format!("DTSTAMP:{}", ics_time(now)),
        format!("DTSTART:{}", ics_time(start)),
        format!("DTEND:{}", ics_time(end)),
        format!("SUMMARY:{}", escape(summary)),
        format!("STATUS:{status}"),
        "END:VEVENT".into(),
        "END:VCALENDAR".into(),
    ];
    Some(lines.join("\r\n") + "\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            name: "Ana".into(),
            practitioner: "Dr. Ruiz".into(),
            when: "2030-03-01 09:00 (America/Chicago)".into(),
            place: "Main clinic".into(),
            manage: "https://x/manage".into(),
        }
    }

    #[test]
    fn templates_in_english_and_spanish() {
        assert!(languages().contains(&"en") && languages().contains(&"es"));
        let (s, b) = render("confirmation", "es", &ctx()).unwrap();
        assert_eq!(
            s,
            "Su cita está reservada: 2030-03-01 09:00 (America/Chicago)"
        );
        assert!(b.contains("Dr. Ruiz") && b.contains("https://x/manage"));
        let (s, _) = render("reminder", "es-MX", &ctx()).unwrap();
        assert!(s.starts_with("Recordatorio"));
        let (s, _) = render("cancelled", "fr", &ctx()).unwrap();
        assert!(s.contains("is cancelled"), "no French: English");
        for l in ["en", "es"] {
            for k in ["confirmation", "reminder", "changed", "cancelled"] {
                assert!(render(k, l, &ctx()).is_some(), "{l}/{k}");
            }
        }
    }

    #[test]
    fn ics_event() {
        let a = json!({"id": "a1", "start": "2030-03-01T15:00:00Z", "end": "2030-03-01T15:30:00Z"});
        let t = ics(&a, 2, "Visit; Dr. Ruiz", false, 0).unwrap();
        assert!(t.contains("DTSTART:20300301T150000Z\r\n"), "{t}");
        assert!(t.contains("UID:a1@fhir-scheduler\r\nSEQUENCE:2"));
        assert!(t.contains("SUMMARY:Visit\\; Dr. Ruiz"));
        assert!(ics(&a, 3, "x", true, 0).unwrap().contains("METHOD:CANCEL"));
    }
}
