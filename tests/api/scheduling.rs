use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{Backend, TestApp};

fn appt(
    status: &str,
    start: &str,
    end: &str,
    patient: &str,
    doctor: &str,
    slot: Option<&str>,
) -> Value {
    let mut a = json!({"resourceType": "Appointment", "status": status, "start": start, "end": end,
        "participant": [
            {"actor": {"reference": patient}, "status": "accepted"},
            {"actor": {"reference": doctor}, "status": "accepted"}]});
    if let Some(s) = slot {
        a["slot"] = json!([{"reference": s}]);
    }
    a
}

const T10: &str = "2030-01-01T10:00:00Z";
const T1030: &str = "2030-01-01T10:30:00Z";
const T11: &str = "2030-01-01T11:00:00Z";
const T1015: &str = "2030-01-01T10:15:00Z";

async fn double_booking_is_refused_on_every_path(b: Backend) {
    let app = TestApp::start(b).await;
    let first = app
        .create(appt(
            "booked",
            T10,
            T1030,
            "Patient/a",
            "Practitioner/d",
            Some("Slot/s1"),
        ))
        .await;
    // Same practitioner, overlapping → 409 naming what is taken.
    let r = app
        .post(
            "Appointment",
            &appt("booked", T1015, T11, "Patient/b", "Practitioner/d", None),
        )
        .await;
    assert_eq!(r.outcome(409), "conflict");
    assert!(r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("Practitioner/d"));
    // Back to back is fine; another practitioner at the same time is fine.
    app.create(appt(
        "booked",
        T1030,
        T11,
        "Patient/b",
        "Practitioner/d",
        None,
    ))
    .await;
    app.create(appt(
        "booked",
        T10,
        T1030,
        "Patient/c",
        "Practitioner/e",
        None,
    ))
    .await;
    // The same slot twice, even for another practitioner and time → 409.
    app.post(
        "Appointment",
        &appt(
            "booked",
            "2030-01-02T10:00:00Z",
            "2030-01-02T10:30:00Z",
            "Patient/z",
            "Practitioner/q",
            Some("Slot/s1"),
        ),
    )
    .await
    .outcome(409);
    // The patient cannot be in two places (default policy).
    app.post(
        "Appointment",
        &appt("booked", T1015, T11, "Patient/a", "Practitioner/f", None),
    )
    .await
    .outcome(409);
    // Proposed appointments hold nothing.
    app.create(appt(
        "proposed",
        T10,
        T1030,
        "Patient/x",
        "Practitioner/d",
        None,
    ))
    .await;
    // Through a transaction and a batch: refused the same way; the transaction leaves nothing.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "txp"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": appt("booked", T10, T11, "Patient/y", "Practitioner/d", None),
         "request": {"method": "POST", "url": "Appointment"}}]});
    app.post("", &tx).await.outcome(409);
    assert!(app
        .search_ids("Patient?identifier=urn:t|txp")
        .await
        .is_empty());
    // Cancelling frees the time; the next booking gets it.
    let id = first["id"].as_str().unwrap();
    let mut cancelled = first.clone();
    cancelled["status"] = json!("cancelled");
    assert_eq!(
        app.put(&format!("Appointment/{id}"), &cancelled)
            .await
            .status,
        StatusCode::OK
    );
    app.create(appt(
        "booked",
        T10,
        T1030,
        "Patient/n",
        "Practitioner/d",
        Some("Slot/s1"),
    ))
    .await;
    // Moving an appointment onto taken time by PATCH is refused too.
    let late = app
        .create(appt(
            "booked",
            "2030-01-01T12:00:00Z",
            "2030-01-01T12:30:00Z",
            "Patient/m",
            "Practitioner/d",
            None,
        ))
        .await;
    let r = app
        .send(
            Method::PATCH,
            &format!("Appointment/{}", late["id"].as_str().unwrap()),
            Some(format!(r#"[{{"op":"replace","path":"/start","value":"{T1015}"}},{{"op":"replace","path":"/end","value":"{T1030}"}}]"#).into_bytes()),
            &[("Content-Type", "application/json-patch+json")],
        )
        .await;
    r.outcome(409);
}
both!(double_booking_is_refused_on_every_path);

async fn status_transitions_are_enforced(b: Backend) {
    let app = TestApp::start(b).await;
    let a = app
        .create(appt(
            "booked",
            T10,
            T1030,
            "Patient/a",
            "Practitioner/d",
            None,
        ))
        .await;
    let id = a["id"].as_str().unwrap().to_string();
    let mut body = a.clone();
    body["status"] = json!("proposed");
    let r = app.put(&format!("Appointment/{id}"), &body).await;
    assert_eq!(r.outcome(409), "conflict");
    assert!(r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("from booked to proposed"));
    for next in ["arrived", "fulfilled"] {
        body["status"] = json!(next);
        assert_eq!(
            app.put(&format!("Appointment/{id}"), &body).await.status,
            StatusCode::OK,
            "{next}"
        );
    }
    let r = app
        .send(
            Method::PATCH,
            &format!("Appointment/{id}"),
            Some(br#"[{"op":"replace","path":"/status","value":"booked"}]"#.to_vec()),
            &[("Content-Type", "application/json-patch+json")],
        )
        .await;
    r.outcome(409);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Appointment", "id": id, "status": "cancelled",
                      "participant": [{"actor": {"reference": "Patient/a"}, "status": "accepted"}]},
         "request": {"method": "PUT", "url": format!("Appointment/{id}")}}]});
    app.post("", &tx).await.outcome(409);
}
both!(status_transitions_are_enforced);

/// 200 concurrent clients, 5,000 attempts, 100 free slots: exactly 100 bookings, no overlap in
/// the stored rows, every loser a 409 and no 5xx — through plain POST and through transactions.
async fn booking_race(b: Backend) {
    let app = Arc::new(TestApp::start(b).await);
    let sc = app
        .create(json!({"resourceType": "Schedule", "actor": [{"reference": "Practitioner/doc"}]}))
        .await;
    let sc = sc["id"].as_str().unwrap().to_string();
    let mut slots = Vec::new();
    for i in 0..100 {
        // 5-minute slots from 06:00.
        let at = |m: usize| format!("2030-02-01T{:02}:{:02}:00Z", 6 + m / 60, m % 60);
        let (start, end) = (at(i * 5), at(i * 5 + 5));
        let s = app
            .create(
                json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sc}")},
                           "status": "free", "start": start, "end": end}),
            )
            .await;
        slots.push(s);
    }
    let slots = Arc::new(slots);
    for via_transaction in [false, true] {
        let doctor = if via_transaction {
            "Practitioner/doc2"
        } else {
            "Practitioner/doc"
        };
        let sem = Arc::new(tokio::sync::Semaphore::new(200));
        let mut tasks = Vec::new();
        for attempt in 0..5000usize {
            let (app, slots, sem) = (app.clone(), slots.clone(), sem.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let slot = &slots[(attempt * 37) % 100];
                let slot_ref = format!("Slot/{}", slot["id"].as_str().unwrap());
                let a = appt(
                    "booked",
                    slot["start"].as_str().unwrap(),
                    slot["end"].as_str().unwrap(),
                    &format!("Patient/p{attempt}-{via_transaction}"),
                    doctor,
                    (!via_transaction).then_some(slot_ref.as_str()),
                );
                let r = if via_transaction {
                    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"resource": a, "request": {"method": "POST", "url": "Appointment"}}]});
                    app.post("", &bundle).await
                } else {
                    app.post("Appointment", &a).await
                };
                r.status.as_u16()
            }));
        }
        let mut statuses = Vec::with_capacity(5000);
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        let won = statuses.iter().filter(|s| matches!(**s, 200 | 201)).count();
        let lost = statuses.iter().filter(|s| **s == 409).count();
        let other: Vec<&u16> = statuses
            .iter()
            .filter(|s| !matches!(**s, 200 | 201 | 409))
            .collect();
        assert_eq!(won, 100, "via_transaction={via_transaction}");
        assert_eq!(
            lost, 4900,
            "via_transaction={via_transaction}; others: {other:?}"
        );
    }
    let booked = app
        .get("Appointment?status=booked&_summary=count")
        .await
        .json["total"]
        .as_i64()
        .unwrap();
    assert_eq!(booked, 200);
    let overlaps = app
        .sql_count(
            "SELECT COUNT(*) FROM booking b1 JOIN booking b2 ON b1.hold_key = b2.hold_key \
             AND b1.rid < b2.rid AND b1.lo < b2.hi AND b2.lo < b1.hi",
        )
        .await;
    assert_eq!(overlaps, 0);
    let holds = app.sql_count("SELECT COUNT(*) FROM booking").await;
    // Each winner holds its practitioner and its patient; the POST race also holds the slot.
    assert_eq!(holds, 100 * 3 + 100 * 2);
}
both!(booking_race);
