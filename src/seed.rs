//! `fhir-scheduler seed --demo`: a small clinic loaded through one transaction Bundle, so a new
//! user has something to query at once. Every entry is a conditional create on a demo
//! identifier, so seeding twice adds nothing.

use chrono::{Datelike, Duration, NaiveDate, Utc, Weekday};
use serde_json::{json, Value};

use crate::fhir::{bundle, Fhir};

const SYSTEM: &str = "urn:fhir-scheduler:demo";

const FAMILIES: [&str; 20] = [
    "Garcia", "Smith", "Nguyen", "Okafor", "Müller", "Rossi", "Kowalski", "Haddad", "Tanaka",
    "Silva", "Johnson", "Brown", "Ivanova", "Dubois", "Khan", "Larsen", "O'Brien", "Cohen",
    "Mensah", "Petrov",
];
const GIVEN: [&str; 20] = [
    "Ana", "John", "Linh", "Chidi", "Jonas", "Giulia", "Marta", "Omar", "Yuki", "Pedro", "Emily",
    "Noah", "Olga", "Camille", "Aisha", "Lars", "Siobhan", "Miriam", "Kwame", "Dmitri",
];
/// SNOMED CT practice settings (the R4 `c80-practice-codes` value set).
const SPECIALTIES: [(&str, &str); 5] = [
    ("394814009", "General practice"),
    ("394579002", "Cardiology"),
    ("394582007", "Dermatology"),
    ("394537008", "Pediatric specialty"),
    ("394585009", "Obstetrics and gynecology"),
];
const LANGUAGES: [(&str, &str); 4] = [
    ("en", "English"),
    ("es", "Spanish"),
    ("fr", "French"),
    ("vi", "Vietnamese"),
];

fn ident(value: String) -> Value {
    json!([{"system": SYSTEM, "value": value}])
}

fn entry(rt: &str, key: &str, resource: Value) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid_for(key)),
        "resource": resource,
        "request": {"method": "POST", "url": rt,
                    "ifNoneExist": format!("identifier={SYSTEM}|{key}")}
    })
}

/// A stable UUID-shaped id from a key (fullUrls only; the server assigns the real ids).
fn uuid_for(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let h2 = h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        h2 & 0xfff,
        h2 >> 16 & 0xffff_ffff_ffff
    )
}

fn reference(key: &str) -> Value {
    json!({"reference": format!("urn:uuid:{}", uuid_for(key))})
}

/// The demo clinic as one transaction Bundle; slots cover the 14 days from `first_day`.
pub fn demo_bundle(first_day: NaiveDate) -> Value {
    let mut entries = Vec::new();
    entries.push(entry(
        "Organization",
        "org",
        json!({"resourceType": "Organization", "identifier": ident("org".into()), "active": true,
               "name": "Riverside Community Clinic",
               "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "work"}]}),
    ));
    let locations = [
        ("Downtown", "100 Main St", "Springfield", 39.7817, -89.6501),
        (
            "Northside",
            "2400 North Ave",
            "Springfield",
            39.8303,
            -89.6440,
        ),
        ("Lakeside", "75 Shore Dr", "Chatham", 39.6759, -89.7045),
    ];
    for (i, (name, line, city, lat, long)) in locations.iter().enumerate() {
        let key = format!("loc-{i}");
        entries.push(entry("Location", &key, json!({
            "resourceType": "Location", "identifier": ident(key.clone()), "status": "active",
            "name": format!("Riverside {name}"), "mode": "instance",
            "address": {"line": [line], "city": city, "state": "IL", "postalCode": format!("6270{i}"), "country": "US"},
            "position": {"latitude": lat, "longitude": long},
            "managingOrganization": reference("org")})));
    }
    for (i, (code, display)) in SPECIALTIES.iter().enumerate().take(3) {
        let key = format!("hcs-{i}");
        entries.push(entry("HealthcareService", &key, json!({
            "resourceType": "HealthcareService", "identifier": ident(key.clone()), "active": true,
            "name": *display, "providedBy": reference("org"),
            "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}],
            "location": [reference(&format!("loc-{i}"))]})));
    }
    let days: Vec<NaiveDate> = (0..14)
        .map(|d| first_day + Duration::days(d))
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .collect();
    for p in 0..20 {
        let pr = format!("pr-{p}");
        let (code, display) = SPECIALTIES[p % SPECIALTIES.len()];
        let (lang, lang_name) = LANGUAGES[p % LANGUAGES.len()];
        let loc = format!("loc-{}", p % 3);
        entries.push(entry("Practitioner", &pr, json!({
            "resourceType": "Practitioner", "identifier": ident(pr.clone()), "active": true,
            "name": [{"family": FAMILIES[p], "given": [GIVEN[p]], "prefix": ["Dr."]}],
            "gender": if p % 2 == 0 { "female" } else { "male" },
            "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": lang, "display": lang_name}]}]})));
        let role = format!("role-{p}");
        entries.push(entry("PractitionerRole", &role, json!({
            "resourceType": "PractitionerRole", "identifier": ident(role.clone()), "active": true,
            "practitioner": reference(&pr), "organization": reference("org"),
            "location": [reference(&loc)],
            "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}],
            "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                               "availableStartTime": "09:00:00", "availableEndTime": "17:00:00"}]})));
        let sched = format!("sched-{p}");
        let start = first_day.format("%Y-%m-%dT00:00:00Z").to_string();
        let end = (first_day + Duration::days(14))
            .format("%Y-%m-%dT00:00:00Z")
            .to_string();
        entries.push(entry("Schedule", &sched, json!({
            "resourceType": "Schedule", "identifier": ident(sched.clone()), "active": true,
            "serviceType": [{"text": display}],
            "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}],
            "actor": [reference(&pr), reference(&loc)],
            "planningHorizon": {"start": start, "end": end}})));
        for day in &days {
            for half_hour in 0..16 {
                let h = 9 + half_hour / 2;
                let m = (half_hour % 2) * 30;
                let s = format!("{}T{h:02}:{m:02}:00Z", day.format("%Y-%m-%d"));
                let e_min = m + 30;
                let (eh, em) = if e_min == 60 { (h + 1, 0) } else { (h, e_min) };
                let e = format!("{}T{eh:02}:{em:02}:00Z", day.format("%Y-%m-%d"));
                let key = format!("slot-{p}-{}-{half_hour}", day.format("%Y%m%d"));
                entries.push(entry(
                    "Slot",
                    &key,
                    json!({
                    "resourceType": "Slot", "identifier": ident(key.clone()),
                    "schedule": reference(&sched), "status": "free",
                    "serviceType": [{"text": display}],
                    "start": s, "end": e}),
                ));
            }
        }
    }
    for i in 0..200usize {
        let key = format!("pat-{i}");
        let family = FAMILIES[(i * 7 + 3) % 20];
        let given = GIVEN[(i * 11 + 5) % 20];
        let year = 1940 + (i * 13) % 80;
        let month = 1 + (i * 5) % 12;
        let day = 1 + (i * 3) % 28;
        let (lang, lang_name) = LANGUAGES[i % LANGUAGES.len()];
        entries.push(entry("Patient", &key, json!({
            "resourceType": "Patient", "identifier": ident(key.clone()), "active": true,
            "name": [{"family": family, "given": [given]}],
            "gender": if i % 2 == 0 { "female" } else { "male" },
            "birthDate": format!("{year:04}-{month:02}-{day:02}"),
            "telecom": [{"system": "email", "value": format!("patient{i}@example.org")},
                        {"system": "phone", "value": format!("+1-555-{:04}", 1000 + i)}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": lang, "display": lang_name}]}}],
            "managingOrganization": reference("org")})));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Loads the demo clinic (slots from tomorrow on) and says what was created.
pub async fn load_demo(fhir: &Fhir) -> anyhow::Result<String> {
    let first_day = Utc::now().date_naive() + Duration::days(1);
    let b = demo_bundle(first_day);
    let out = bundle::process(fhir, "urn:demo", b)
        .await
        .map_err(|e| anyhow::anyhow!("the demo transaction failed: {e}"))?;
    let entries = out["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let created = entries
        .iter()
        .filter(|e| {
            e["response"]["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("201"))
        })
        .count();
    Ok(format!(
        "demo clinic: {} entries, {created} created, {} already present",
        entries.len(),
        entries.len() - created
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_bundle_has_the_promised_shape() {
        let b = demo_bundle(NaiveDate::from_ymd_opt(2030, 1, 7).unwrap());
        let count = |rt: &str| {
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["resource"]["resourceType"] == rt)
                .count()
        };
        assert_eq!(count("Location"), 3);
        assert_eq!(count("Practitioner"), 20);
        assert_eq!(count("PractitionerRole"), 20);
        assert_eq!(count("Patient"), 200);
        assert_eq!(count("Slot"), 20 * 10 * 16);
    }
}
