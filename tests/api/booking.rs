use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{Backend, TestApp};

/// A schedule for Practitioner/doc with `n` free 30-minute slots on 2030-03-01 from 09:00.
async fn slots(app: &TestApp, n: usize) -> Vec<Value> {
    let sc = app
        .create(json!({"resourceType": "Schedule", "actor": [{"reference": "Practitioner/doc"}]}))
        .await;
    let mut out = Vec::new();
    for i in 0..n {
        let at = |m: usize| format!("2030-03-01T{:02}:{:02}:00Z", 9 + m / 60, m % 60);
        out.push(
            app.create(json!({"resourceType": "Slot",
                "schedule": {"reference": format!("Schedule/{}", sc["id"].as_str().unwrap())},
                "status": "free", "start": at(i * 30), "end": at(i * 30 + 30)}))
                .await,
        );
    }
    out
}

fn proposed(slot: &Value, patient: &str) -> Value {
    json!({"resourceType": "Appointment", "status": "proposed",
        "start": slot["start"], "end": slot["end"],
        "slot": [{"reference": format!("Slot/{}", slot["id"].as_str().unwrap())}],
        "participant": [
            {"actor": {"reference": patient}, "status": "needs-action"},
            {"actor": {"reference": "Practitioner/doc"}, "status": "needs-action"}]})
}

fn params(p: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": p})
}

fn appointment_of(r: &Value) -> Value {
    assert_eq!(r["resourceType"], "Bundle", "{r}");
    r["entry"][0]["resource"].clone()
}

/// Puts `slot` back with `status` (a slot marked by hand, no appointment involved).
async fn mark_slot(app: &TestApp, slot: &Value, status: &str) -> crate::helpers::Resp {
    let mut v = slot.clone();
    v["status"] = json!(status);
    v.as_object_mut().unwrap().remove("meta");
    app.put(&format!("Slot/{}", slot["id"].as_str().unwrap()), &v)
        .await
}

async fn slot_status(app: &TestApp, slot: &Value) -> String {
    app.get(&format!("Slot/{}", slot["id"].as_str().unwrap()))
        .await
        .json["status"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn hold_then_book_then_cancel(b: Backend) {
    let app = TestApp::start(b).await;
    let s = slots(&app, 2).await;
    let r = app
        .post(
            "Appointment/$hold",
            &params(vec![
                json!({"name": "appt-resource", "resource": proposed(&s[0], "Patient/p1")}),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert!(!r.header("expires").is_empty());
    let held = appointment_of(&r.json);
    assert_eq!(held["status"], "pending");
    assert_eq!(slot_status(&app, &s[0]).await, "busy-tentative");
    // Nobody else can hold or book the held slot.
    app.post(
        "Appointment/$hold",
        &params(vec![
            json!({"name": "appt-resource", "resource": proposed(&s[0], "Patient/p2")}),
        ]),
    )
    .await
    .outcome(409);
    // Book the held appointment by id (instance form).
    let id = held["id"].as_str().unwrap();
    let r = app
        .post(&format!("Appointment/{id}/$book"), &params(vec![]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let booked = appointment_of(&r.json);
    assert_eq!(booked["status"], "booked");
    assert!(booked["participant"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "accepted"));
    assert_eq!(slot_status(&app, &s[0]).await, "busy");
    // Booking it again is refused: it is no longer proposed or held.
    app.post(&format!("Appointment/{id}/$book"), &params(vec![]))
        .await
        .outcome(409);
    // $cancel with a reason frees the slot.
    let r = app
        .post(
            &format!("Appointment/{id}/$cancel"),
            &params(vec![
                json!({"name": "reason", "valueString": "Patient is ill"}),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["status"], "cancelled");
    assert_eq!(r.json["cancelationReason"]["text"], "Patient is ill");
    assert_eq!(slot_status(&app, &s[0]).await, "free");
    // Status history carries each status with its time.
    let hist: Vec<&str> = r.json["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"].as_str().unwrap().ends_with("/status-history"))
        .map(|e| e["extension"][0]["valueCode"].as_str().unwrap())
        .collect();
    assert_eq!(hist, vec!["pending", "booked", "cancelled"]);
    // Direct $book of a new appointment (the Argonaut "appointment as body" form).
    let r = app
        .post("Appointment/$book", &proposed(&s[1], "Patient/p3"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(slot_status(&app, &s[1]).await, "busy");
    // GET is not allowed for state-changing operations; unknown operations are refused.
    app.get("Appointment/$book").await.outcome(405);
    app.post("Appointment/$nonsense", &params(vec![]))
        .await
        .outcome(400);
}
both!(hold_then_book_then_cancel);

async fn holds_expire(b: Backend) {
    let app = TestApp::start_config(b, |c| c.hold_ttl_seconds = 1).await;
    let s = slots(&app, 1).await;
    let r = app
        .post(
            "Appointment/$hold",
            &params(vec![
                json!({"name": "appt-resource", "resource": proposed(&s[0], "Patient/p1")}),
            ]),
        )
        .await;
    let first = appointment_of(&r.json);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Booking the held appointment after expiry is refused …
    app.post(
        &format!("Appointment/{}/$book", first["id"].as_str().unwrap()),
        &params(vec![]),
    )
    .await
    .outcome(409);
    // … and anyone may now take the slot: the lapsed hold is cancelled first.
    let r = app
        .post("Appointment/$book", &proposed(&s[0], "Patient/p2"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let old = app
        .get(&format!("Appointment/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(old.json["status"], "cancelled");
    assert_eq!(old.json["cancelationReason"]["text"], "Hold expired");
}
both!(holds_expire);

async fn reschedule_is_atomic(b: Backend) {
    let app = TestApp::start(b).await;
    let s = slots(&app, 3).await;
    let a = appointment_of(
        &app.post("Appointment/$book", &proposed(&s[0], "Patient/p1"))
            .await
            .json,
    );
    let aid = a["id"].as_str().unwrap().to_string();
    app.post("Appointment/$book", &proposed(&s[2], "Patient/other"))
        .await;
    // Rescheduling onto a taken slot fails at the book step: the cancel is rolled back.
    let r = app
        .post(
            "Appointment/$book",
            &params(vec![
                json!({"name": "appt-resource", "resource": proposed(&s[2], "Patient/p1")}),
                json!({"name": "cancelled-appt-id", "valueString": format!("Appointment/{aid}")}),
            ]),
        )
        .await;
    r.outcome(409);
    assert_eq!(
        app.get(&format!("Appointment/{aid}")).await.json["status"],
        "booked"
    );
    assert_eq!(slot_status(&app, &s[0]).await, "busy");
    // Onto a free slot: both happen.
    let r = app
        .post(
            "Appointment/$book",
            &params(vec![
                json!({"name": "appt-resource", "resource": proposed(&s[1], "Patient/p1")}),
                json!({"name": "cancelled-appt-id", "valueString": aid.clone()}),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(
        app.get(&format!("Appointment/{aid}")).await.json["status"],
        "cancelled"
    );
    assert_eq!(slot_status(&app, &s[0]).await, "free");
    assert_eq!(slot_status(&app, &s[1]).await, "busy");
}
both!(reschedule_is_atomic);

/// With one worker and room for one waiter, a burst gets 429 + Retry-After at once — never a
/// 5xx — and the metrics count it.
async fn overload_answers_429(b: Backend) {
    let app = Arc::new(
        TestApp::start_config(b, |c| {
            c.booking_workers = 1;
            c.booking_queue_depth = 1;
        })
        .await,
    );
    let s = slots(&app, 16).await;
    let mut tasks = Vec::new();
    for (i, slot) in s.iter().enumerate() {
        let app = app.clone();
        let body = proposed(slot, &format!("Patient/p{i}"));
        tasks.push(tokio::spawn(async move {
            let r = app.post("Appointment/$book", &body).await;
            (r.status.as_u16(), r.header("retry-after"), r.json)
        }));
    }
    let mut rejected = 0;
    for t in tasks {
        let (status, retry, json) = t.await.unwrap();
        assert!(matches!(status, 201 | 429), "{status} {json}");
        if status == 429 {
            rejected += 1;
            assert_eq!(retry, "1");
            assert_eq!(json["issue"][0]["code"], "throttled");
        }
    }
    assert!(
        rejected > 0,
        "a burst of 16 against a queue of 1 must shed load"
    );
    let m = app
        .client
        .get(app.base.replace("/fhir", "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(&format!(
            "booking_requests_total{{operation=\"book\",outcome=\"rejected\"}} {rejected}"
        )),
        "{m}"
    );
    assert!(m.contains("booking_queue_wait_seconds"));
}
both!(overload_answers_429);

async fn respond_async_gives_202_and_a_status_url(b: Backend) {
    let app = TestApp::start(b).await;
    let s = slots(&app, 1).await;
    let r = app
        .send(
            Method::POST,
            "Appointment/$book",
            Some(proposed(&s[0], "Patient/p1").to_string().into_bytes()),
            &[("Prefer", "respond-async")],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let url = r.header("content-location");
    let mut done = None;
    for _ in 0..50 {
        let r = app.get(&url).await;
        if r.status != StatusCode::ACCEPTED {
            done = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = done.expect("the async booking finished");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(appointment_of(&r.json)["status"], "booked");
    app.get(&format!("{}/_async/unknown", app.base))
        .await
        .outcome(404);
}
both!(respond_async_gives_202_and_a_status_url);

async fn operations_are_declared(b: Backend) {
    let app = TestApp::start(b).await;
    let cs = app.get("metadata").await.json;
    let appt = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Appointment")
        .unwrap()
        .clone();
    let names: Vec<&str> = appt["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for n in ["hold", "book", "cancel"] {
        assert!(names.contains(&n), "{names:?}");
    }
}
both!(operations_are_declared);

async fn find_proposes_fitting_free_slots(b: Backend) {
    let app = TestApp::start(b).await;
    let ext = |n: &str| format!("https://fhir-scheduler.org/fhir/StructureDefinition/{n}");
    let org = app
        .create(json!({"resourceType": "Organization", "name": "Clinic"}))
        .await;
    let org = format!("Organization/{}", org["id"].as_str().unwrap());
    let loc = app
        .create(json!({"resourceType": "Location", "name": "Downtown",
                       "position": {"latitude": 39.78, "longitude": -89.65},
                       "extension": [{"url": ext("accommodation"), "valueCodeableConcept": {"coding": [
                           {"system": "https://fhir-scheduler.org/fhir/CodeSystem/accommodation", "code": "wheelchair-access"}]}}]}))
        .await;
    let loc = format!("Location/{}", loc["id"].as_str().unwrap());
    let mut docs = Vec::new();
    for (family, lang) in [("Garcia", "es"), ("Smith", "en")] {
        let pr = app
            .create(json!({"resourceType": "Practitioner", "name": [{"family": family}],
                           "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": lang}]}]}))
            .await;
        let pr = format!("Practitioner/{}", pr["id"].as_str().unwrap());
        let mut role = json!({"resourceType": "PractitionerRole", "practitioner": {"reference": pr},
                              "organization": {"reference": org}});
        if lang == "es" {
            role["location"] = json!([{"reference": loc}]);
            role["extension"] = json!([{"url": ext("accepted-insurance"), "valueCodeableConcept": {"coding": [{"system": "urn:plans", "code": "acme"}]}}]);
        }
        app.create(role).await;
        let sc = app
            .create(json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": pr}],
                           "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}]}))
            .await;
        let sc = sc["id"].as_str().unwrap().to_string();
        for h in 9..13 {
            app.create(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sc}")},
                "status": if h == 10 { "busy" } else { "free" },
                "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
                "start": format!("2030-04-01T{h:02}:00:00Z"), "end": format!("2030-04-01T{h:02}:30:00Z")}))
                .await;
        }
        docs.push(pr);
    }
    // The patient already has an appointment at 11:00 elsewhere.
    app.create(json!({"resourceType": "Appointment", "status": "booked",
        "start": "2030-04-01T11:00:00Z", "end": "2030-04-01T11:30:00Z",
        "participant": [{"actor": {"reference": "Patient/pt"}, "status": "accepted"},
                        {"actor": {"reference": "Practitioner/elsewhere"}, "status": "accepted"}]}))
        .await;
    let find = |q: &str| {
        let q = q.to_string();
        let app = &app;
        async move {
            let r = app
                .get(&format!(
                    "Appointment/$find?start=2030-04-01T00:00:00Z&end=2030-04-02T00:00:00Z{q}"
                ))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.json);
            r.json["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e["resource"].clone())
                .collect::<Vec<_>>()
        }
    };
    let all = find("").await;
    assert_eq!(all.len(), 6, "two doctors × three free slots");
    let starts: Vec<&str> = all.iter().map(|a| a["start"].as_str().unwrap()).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
    assert!(all
        .iter()
        .all(|a| a["status"] == "proposed" && a["slot"][0]["reference"].is_string()));
    assert_eq!(find("&language=es").await.len(), 3);
    assert_eq!(find(&format!("&practitioner={}", docs[1])).await.len(), 3);
    assert_eq!(
        find(&format!("&practitioner={},{}", docs[0], docs[1]))
            .await
            .len(),
        6
    );
    assert_eq!(find(&format!("&organization={org}")).await.len(), 6);
    assert_eq!(find(&format!("&location={loc}")).await.len(), 3);
    // The location's expansion is kept, but a change of the directory is seen at once: the
    // English doctor's role now also names the location.
    let roles = app
        .get(&format!("PractitionerRole?practitioner={}", docs[1]))
        .await
        .json;
    let mut role = roles["entry"][0]["resource"].clone();
    role["location"] = json!([{"reference": loc}]);
    let id = role["id"].as_str().unwrap().to_string();
    app.put(&format!("PractitionerRole/{id}"), &role).await;
    assert_eq!(find(&format!("&location={loc}")).await.len(), 6);
    role.as_object_mut().unwrap().remove("location");
    role.as_object_mut().unwrap().remove("meta");
    app.put(&format!("PractitionerRole/{id}"), &role).await;
    assert_eq!(find(&format!("&location={loc}")).await.len(), 3);
    assert_eq!(find("&near=39.79|-89.66|5|km").await.len(), 3);
    assert_eq!(find("&near=10|10|5|km").await.len(), 0);
    assert_eq!(find("&insurance=urn:plans|acme").await.len(), 3);
    assert_eq!(find("&accommodation=wheelchair-access").await.len(), 3);
    // Kinds AND: Spanish-speaking and the English doctor → nothing.
    assert_eq!(
        find(&format!("&language=es&practitioner={}", docs[1]))
            .await
            .len(),
        0
    );
    assert_eq!(
        find("&specialty=http://snomed.info/sct|394814009")
            .await
            .len(),
        6
    );
    assert_eq!(find("&specialty=http://snomed.info/sct|000").await.len(), 0);
    // The patient's own 11:00 appointment removes both 11:00 slots; they are named on proposals.
    let mine = find("&patient=Patient/pt").await;
    assert_eq!(mine.len(), 4);
    assert!(mine
        .iter()
        .all(|a| a["participant"][0]["actor"]["reference"] == "Patient/pt"));
    assert_eq!(find("&_count=2").await.len(), 2);
    // A proposal can be booked as is.
    let mut p = mine[0].clone();
    p["participant"][0]["status"] = json!("needs-action");
    let r = app.post("Appointment/$book", &p).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(
        find("&patient=Patient/pt").await.len(),
        2,
        "booked slot and the patient's new clash are gone"
    );
    let left = find("").await;
    assert_eq!(left.len(), 5, "the booked slot is no longer free");
    // Each proposal names its schedule's practitioner (the schedules are read in one query).
    for a in &left {
        let actors: Vec<&str> = a["participant"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["actor"]["reference"].as_str())
            .collect();
        assert!(actors.iter().any(|r| docs.iter().any(|d| d == r)), "{a}");
    }
    app.get("Appointment/$find?end=2030-04-02")
        .await
        .outcome(400);
    app.get("Appointment/$find?start=2030-04-02&end=2030-04-01")
        .await
        .outcome(400);
}
both!(find_proposes_fitting_free_slots);

/// `$find` walks the open-slot index (free Slots with their start, schedule and specialty in
/// one row), kept with every Slot write: it proposes exactly the slots the Slot search over
/// `free-start` finds, through creates, status changes both ways, a new specialty, a moved
/// schedule and a delete, for every specialty form it serves.
async fn find_open_slot_index_follows_every_slot_write(b: Backend) {
    let app = TestApp::start(b).await;
    let snomed = "http://snomed.info/sct";
    let mut schedules = Vec::new();
    for who in ["x", "y"] {
        let sc = app
            .create(json!({"resourceType": "Schedule", "active": true,
                           "actor": [{"reference": format!("Practitioner/{who}")}]}))
            .await;
        schedules.push(sc["id"].as_str().unwrap().to_string());
    }
    let spec = |codings: Value| json!([{"coding": codings}]);
    let kinds = [
        spec(json!([{"system": snomed, "code": "1"}])),
        spec(json!([{"system": snomed, "code": "1"}, {"system": snomed, "code": "2"}])),
        spec(json!([{"code": "2"}])),
        spec(
            json!([{"system": "urn:other", "code": "1"}, {"system": snomed, "code": "1", "display": "One"}]),
        ),
        Value::Null,
    ];
    let mut slots = Vec::new();
    for i in 0..20usize {
        let mut slot = json!({"resourceType": "Slot",
            "schedule": {"reference": format!("Schedule/{}", schedules[i % 2])},
            "status": if i % 7 == 3 { "busy" } else { "free" },
            "start": format!("2030-05-01T{:02}:00:00Z", 8 + i / 2),
            "end": format!("2030-05-01T{:02}:30:00Z", 8 + i / 2)});
        if !kinds[i % 5].is_null() {
            slot["specialty"] = kinds[i % 5].clone();
        }
        slots.push(app.create(slot).await);
    }
    let queries = [
        "",
        "&specialty=1",
        "&specialty=http://snomed.info/sct|1",
        "&specialty=http://snomed.info/sct|2",
        "&specialty=|2",
        "&specialty=urn:other|1,http://snomed.info/sct|2",
        "&specialty=http://snomed.info/sct|",
        "&specialty=9",
    ];
    let check = |stage: &'static str| {
        let app = &app;
        let schedules = &schedules;
        async move {
            for q in queries {
                for sched in [None, Some(&schedules[1])] {
                    let (fq, sq) = match sched {
                        None => (q.to_string(), q.to_string()),
                        Some(s) => (
                            format!("{q}&practitioner=Practitioner/y"),
                            format!("{q}&schedule=Schedule/{s}"),
                        ),
                    };
                    let r = app
                        .get(&format!("Appointment/$find?start=2030-05-01T09:00:00Z&end=2030-05-01T16:00:00Z&_count=50{fq}"))
                        .await;
                    assert_eq!(r.status, StatusCode::OK, "{stage} {fq}: {}", r.json);
                    let found: Vec<String> = r.json["entry"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|e| {
                            e["resource"]["slot"][0]["reference"]
                                .as_str()
                                .unwrap()
                                .trim_start_matches("Slot/")
                                .to_string()
                        })
                        .collect();
                    let mut sorted = found.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(sorted.len(), found.len(), "{stage} {fq}: each slot once");
                    let expected = app
                        .search_ids(&format!("Slot?free-start=ge2030-05-01T09:00:00Z&free-start=lt2030-05-01T16:00:00Z&_count=50{sq}"))
                        .await;
                    assert_eq!(sorted, expected, "{stage} {fq}");
                }
            }
        }
    };
    check("created").await;
    assert!(app.sql_count("SELECT COUNT(*) FROM open_slot").await > 0);
    // Busy → free, free → busy, a new specialty, another schedule, a delete.
    let mut edit = |i: usize, f: &dyn Fn(&mut Value)| {
        let mut s = slots[i].clone();
        f(&mut s);
        s.as_object_mut().unwrap().remove("meta");
        slots[i] = s.clone();
        s
    };
    let put = |s: Value| {
        let app = &app;
        async move {
            let id = s["id"].as_str().unwrap().to_string();
            let r = app.put(&format!("Slot/{id}"), &s).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        }
    };
    put(edit(3, &|s| s["status"] = json!("free"))).await;
    put(edit(4, &|s| s["status"] = json!("busy-unavailable"))).await;
    put(edit(5, &|s| {
        s["specialty"] = spec(json!([{"system": snomed, "code": "2"}]))
    }))
    .await;
    let other = format!("Schedule/{}", schedules[0]);
    put(edit(7, &|s| {
        s["schedule"] = json!({"reference": other.clone()})
    }))
    .await;
    let gone = slots[8]["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.delete(&format!("Slot/{gone}")).await.status,
        StatusCode::NO_CONTENT
    );
    check("edited").await;
    // Booking a proposal takes its slot out of the index; cancelling puts it back.
    let r = app
        .get("Appointment/$find?start=2030-05-01T09:00:00Z&end=2030-05-01T16:00:00Z&specialty=http://snomed.info/sct|1&_count=1")
        .await;
    let mut appt = r.json["entry"][0]["resource"].clone();
    appt["participant"] = json!([{"actor": {"reference": "Patient/p1"}, "status": "needs-action"}]);
    let booked = app.post("Appointment/$book", &appt).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{}", booked.json);
    check("booked").await;
    let id = appointment_of(&booked.json)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            &format!("Appointment/{id}/$cancel"),
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    check("cancelled").await;
}
both!(find_open_slot_index_follows_every_slot_write);

/// A practitioner with more schedules than `$find` sends with the walk (64): the server tests
/// the schedule of each walked key itself, a page at a time, and after a few pages (here 1,100
/// free slots of someone else first) finishes with one statement carrying the list. Either
/// way it proposes what the Slot search finds, in start order.
async fn find_with_many_schedules_walks_keys_then_the_list(b: Backend) {
    let app = TestApp::start(b).await;
    let mut entries = Vec::new();
    let sched = |n: usize, who: &str| {
        json!({"fullUrl": format!("urn:uuid:00000000-0000-0000-0000-{n:012}"),
               "resource": {"resourceType": "Schedule", "active": true,
                            "actor": [{"reference": format!("Practitioner/{who}")}]},
               "request": {"method": "POST", "url": "Schedule"}})
    };
    for n in 0..68 {
        entries.push(sched(n, if n < 2 { "y" } else { "x" }));
    }
    let slot = |n: usize, start: String, end: String| {
        json!({"resource": {"resourceType": "Slot", "status": "free", "start": start, "end": end,
                            "schedule": {"reference": format!("urn:uuid:00000000-0000-0000-0000-{n:012}")}},
               "request": {"method": "POST", "url": "Slot"}})
    };
    // 1,100 slots of y first (minute by minute from 00:00), then one slot of each of three
    // of x's schedules in the evening, and one of x's at 00:30, inside the first page.
    for m in 0..1100usize {
        let (h, mi) = (m / 60, m % 60);
        entries.push(slot(
            m % 2,
            format!("2030-07-01T{h:02}:{mi:02}:00Z"),
            format!("2030-07-01T{h:02}:{mi:02}:30Z"),
        ));
    }
    for (n, h) in [(10, 20), (40, 21), (67, 22)] {
        entries.push(slot(
            n,
            format!("2030-07-01T{h}:00:00Z"),
            format!("2030-07-01T{h}:30:00Z"),
        ));
    }
    entries.push(slot(
        5,
        "2030-07-01T00:30:10Z".into(),
        "2030-07-01T00:30:40Z".into(),
    ));
    let r = app
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let xs: Vec<String> = r.json["entry"].as_array().unwrap()[2..68]
        .iter()
        .map(|e| {
            e["response"]["location"]
                .as_str()
                .unwrap()
                .split('/')
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert!(xs.iter().all(|s| s.starts_with("Schedule/")), "{xs:?}");
    let expected = app
        .search_ids(&format!(
            "Slot?free-start=ge2030-07-01T00:00:00Z&free-start=lt2030-07-02T00:00:00Z&schedule={}",
            xs.join(",")
        ))
        .await;
    assert_eq!(expected.len(), 4);
    for count in [1, 2, 4, 10] {
        let r = app
            .get(&format!("Appointment/$find?start=2030-07-01T00:00:00Z&end=2030-07-02T00:00:00Z&practitioner=Practitioner/x&_count={count}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        let found: Vec<(String, String)> = r.json["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let a = &e["resource"];
                (
                    a["start"].as_str().unwrap().to_string(),
                    a["slot"][0]["reference"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("Slot/")
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(found.len(), count.min(4), "_count={count}: {found:?}");
        let starts: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            starts,
            [
                "2030-07-01T00:30:10Z",
                "2030-07-01T20:00:00Z",
                "2030-07-01T21:00:00Z",
                "2030-07-01T22:00:00Z"
            ][..count.min(4)],
        );
        assert!(found.iter().all(|f| expected.contains(&f.1)), "{found:?}");
    }
}
both!(find_with_many_schedules_walks_keys_then_the_list);

/// `Schedule.active` is optional: the actor filters of `$find` leave out only a schedule marked
/// `active: false`.
async fn find_leaves_out_only_inactive_schedules(b: Backend) {
    let app = TestApp::start(b).await;
    let mut slots = Vec::new();
    for (h, active) in [(9, Some(true)), (10, None), (11, Some(false))] {
        let mut sc =
            json!({"resourceType": "Schedule", "actor": [{"reference": "Practitioner/z"}]});
        if let Some(a) = active {
            sc["active"] = json!(a);
        }
        let sc = app.create(sc).await;
        let slot = app
            .create(json!({"resourceType": "Slot", "status": "free",
                "schedule": {"reference": format!("Schedule/{}", sc["id"].as_str().unwrap())},
                "start": format!("2030-08-01T{h:02}:00:00Z"), "end": format!("2030-08-01T{h:02}:30:00Z")}))
            .await;
        slots.push(format!("Slot/{}", slot["id"].as_str().unwrap()));
    }
    let r = app
        .get("Appointment/$find?start=2030-08-01T00:00:00Z&end=2030-08-02T00:00:00Z&practitioner=Practitioner/z")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(crate::helpers::proposed_slots(&r.json), slots[..2]);
}
both!(find_leaves_out_only_inactive_schedules);

async fn virtual_visits_get_a_join_link(b: Backend) {
    let app = TestApp::start(b).await;
    let s = slots(&app, 2).await;
    let mut a = proposed(&s[0], "Patient/v");
    a["extension"] = json!([{"url": "https://fhir-scheduler.org/fhir/StructureDefinition/visit-mode", "valueCode": "virtual"}]);
    let booked = appointment_of(&app.post("Appointment/$book", &a).await.json);
    let link = booked["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("/virtual-join-link"))
        .unwrap()["valueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(link.starts_with("https://visit.test/join/"), "{link}");
    let in_person = appointment_of(
        &app.post("Appointment/$book", &proposed(&s[1], "Patient/w"))
            .await
            .json,
    );
    assert!(in_person["extension"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !e["url"].as_str().unwrap().ends_with("/virtual-join-link")));
}
both!(virtual_visits_get_a_join_link);

/// A role available Mon–Fri 09:00–12:00 (UTC) in 30-minute slots with a 10:00–10:30 break:
/// `$generate-slots` makes 5 slots a weekday, twice gives nothing new, a booked slot survives a
/// template edit, and a new holiday shows the booking in `$conflicts`.
async fn generate_slots_from_availability(b: Backend) {
    let app = TestApp::start(b).await;
    let ext = |n: &str| format!("https://fhir-scheduler.org/fhir/StructureDefinition/{n}");
    let pr = app
        .create(json!({"resourceType": "Practitioner", "name": [{"family": "Gen"}]}))
        .await;
    let pr = format!("Practitioner/{}", pr["id"].as_str().unwrap());
    let mut role = json!({"resourceType": "PractitionerRole", "active": true, "practitioner": {"reference": pr},
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
        "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                           "availableStartTime": "09:00:00", "availableEndTime": "12:00:00"}],
        "extension": [
            {"url": ext("slot-duration"), "extension": [{"url": "duration", "valueDuration": {"value": 30, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}}]},
            {"url": ext("break"), "extension": [{"url": "start", "valueTime": "10:00:00"}, {"url": "end", "valueTime": "10:30:00"}]}]});
    let role_id = app.create(role.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sc = app
        .create(json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": pr}]}))
        .await;
    let sc = sc["id"].as_str().unwrap().to_string();
    // 2030-06-03 is a Monday; the window is Mon–Sun.
    let gen = |q: &'static str| {
        let app = &app;
        let sc = sc.clone();
        async move {
            let r = app
                .post(
                    &format!("Schedule/{sc}/$generate-slots?{q}"),
                    &json!({"resourceType": "Parameters"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.json);
            r.json["parameter"][0]["valueInteger"].as_i64().unwrap()
        }
    };
    assert_eq!(gen("start=2030-06-03&end=2030-06-10").await, 25);
    assert_eq!(
        gen("start=2030-06-03&end=2030-06-10").await,
        0,
        "idempotent"
    );
    let slots = app
        .search_ids(&format!("Slot?schedule=Schedule/{sc}&_count=100"))
        .await;
    assert_eq!(slots.len(), 25);
    // The role's specialty is on every generated slot, so $find by specialty finds them.
    let r = app
        .get("Appointment/$find?start=2030-06-03&end=2030-06-04&specialty=http://snomed.info/sct|394814009")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        r.json["entry"].as_array().map_or(0, Vec::len),
        5,
        "{}",
        r.json
    );
    // Book Monday 09:00.
    let first = app
        .get(&format!("Slot?schedule=Schedule/{sc}&_sort=start&_count=1"))
        .await
        .json["entry"][0]["resource"]
        .clone();
    assert!(first["start"]
        .as_str()
        .unwrap()
        .starts_with("2030-06-03T09:00:00"));
    let appt = json!({"resourceType": "Appointment", "status": "proposed", "start": first["start"], "end": first["end"],
        "slot": [{"reference": format!("Slot/{}", first["id"].as_str().unwrap())}],
        "participant": [{"actor": {"reference": "Patient/g"}, "status": "needs-action"},
                        {"actor": {"reference": pr}, "status": "needs-action"}]});
    let booked = appointment_of(&app.post("Appointment/$book", &appt).await.json);
    // Edit the template: mornings now end at 11:00, and Monday is a holiday.
    role["availableTime"][0]["availableEndTime"] = json!("11:00:00");
    role["notAvailable"] = json!([{"description": "Holiday", "during": {"start": "2030-06-03T00:00:00Z", "end": "2030-06-03T23:59:59Z"}}]);
    role["id"] = json!(role_id);
    assert_eq!(
        app.put(&format!("PractitionerRole/{role_id}"), &role)
            .await
            .status,
        StatusCode::OK
    );
    gen("start=2030-06-03&end=2030-06-10").await;
    let left = app
        .search_ids(&format!("Slot?schedule=Schedule/{sc}&_count=100"))
        .await;
    // Tue–Fri keep 09:00, 09:30, 10:30 (3 × 4); Monday keeps only the booked slot.
    assert_eq!(left.len(), 13, "{left:?}");
    assert_eq!(
        app.get(&format!("Slot/{}", first["id"].as_str().unwrap()))
            .await
            .json["status"],
        "busy"
    );
    let c = app.get(&format!("Schedule/{sc}/$conflicts")).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.json);
    assert_eq!(c.json["entry"][0]["resource"]["id"], booked["id"]);
    app.post(
        &format!("Schedule/{sc}/$generate-slots?start=2030-06-10"),
        &json!({"resourceType": "Parameters"}),
    )
    .await
    .outcome(400);
}
both!(generate_slots_from_availability);

/// The background filler's pass: every active schedule gets slots from now to N days ahead.
async fn filler_keeps_schedules_filled(b: Backend) {
    let app = TestApp::start(b).await;
    let pr = app
        .create(json!({"resourceType": "Practitioner", "name": [{"family": "Fill"}]}))
        .await;
    let pr = format!("Practitioner/{}", pr["id"].as_str().unwrap());
    app.create(json!({"resourceType": "PractitionerRole", "active": true, "practitioner": {"reference": pr},
        "availableTime": [{"availableStartTime": "09:00:00", "availableEndTime": "10:00:00"}]}))
        .await;
    let sc = app
        .create(json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": pr}]}))
        .await;
    let inactive = app
        .create(json!({"resourceType": "Schedule", "active": false, "actor": [{"reference": pr}]}))
        .await;
    let store = fhir_scheduler::store::SqlStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    let fhir = fhir_scheduler::fhir::Fhir::new(std::sync::Arc::new(store)).unwrap();
    use fhir_scheduler::fhir::access::as_system;
    let created = as_system(fhir_scheduler::booking::slots::fill_all(&fhir, 7))
        .await
        .unwrap();
    // One hour a day at the default 15 minutes: 4 a day over 7 days (today's may have passed).
    assert!((24..=28).contains(&created), "{created}");
    assert_eq!(
        as_system(fhir_scheduler::booking::slots::fill_all(&fhir, 7))
            .await
            .unwrap(),
        0
    );
    let n = app
        .search_ids(&format!(
            "Slot?schedule=Schedule/{}&_count=100",
            sc["id"].as_str().unwrap()
        ))
        .await
        .len();
    assert_eq!(n, created);
    assert!(app
        .search_ids(&format!(
            "Slot?schedule=Schedule/{}",
            inactive["id"].as_str().unwrap()
        ))
        .await
        .is_empty());
}
both!(filler_keeps_schedules_filled);

/// A deadlock's victim is a transient failure: the booking operations run their transaction
/// again, and an error that still reaches a client is a 503 with `Retry-After`, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_transient() {
    use fhir_scheduler::store::StoreError;
    use sqlx::Connection;
    let url = crate::helpers::fresh_postgres().await;
    let mut a = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut b = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .execute(&mut a)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1, 0), (2, 0)")
        .execute(&mut a)
        .await
        .unwrap();
    let mut ta = a.begin().await.unwrap();
    let mut tb = b.begin().await.unwrap();
    let set = "UPDATE t SET v = v + 1 WHERE id = $1";
    sqlx::query(set).bind(1).execute(&mut *ta).await.unwrap();
    sqlx::query(set).bind(2).execute(&mut *tb).await.unwrap();
    // Each now waits for the row the other holds: PostgreSQL aborts one of them.
    let (ra, rb) = tokio::join!(
        sqlx::query(set).bind(2).execute(&mut *ta),
        sqlx::query(set).bind(1).execute(&mut *tb)
    );
    let failed = match (ra, rb) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => StoreError::from(e),
        other => panic!("one of the two is the deadlock's victim: {other:?}"),
    };
    assert!(failed.is_transient(), "{failed}");
    let (status, issues) = fhir_scheduler::fhir::error::status_and_issues(
        &fhir_scheduler::fhir::FhirError::Store(failed),
    );
    assert_eq!(status, 503);
    assert_eq!(issues[0].code.code(), "transient");
    assert!(!StoreError::Conflict.is_transient());
}

/// A slot already `busy` is refused (409, naming it) before anything is written — whether an
/// appointment booked it or it was marked busy without one; nothing of the refused booking
/// stays behind.
async fn a_busy_slot_is_refused_before_anything_is_written(b: Backend) {
    let app = TestApp::start(b).await;
    let s = slots(&app, 2).await;
    let r = app
        .post("Appointment/$book", &proposed(&s[0], "Patient/p1"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let slot0 = format!("Slot/{}", s[0]["id"].as_str().unwrap());
    let r = app
        .post("Appointment/$book", &proposed(&s[0], "Patient/p2"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert!(r.json.to_string().contains(&slot0), "{}", r.json);
    // Marked busy by hand (blocked time), no appointment holds it.
    mark_slot(&app, &s[1], "busy").await;
    let r = app
        .post("Appointment/$book", &proposed(&s[1], "Patient/p3"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert_eq!(
        app.sql_count("SELECT COUNT(*) FROM resources WHERE res_type = 'Appointment'")
            .await,
        1
    );
}
both!(a_busy_slot_is_refused_before_anything_is_written);

/// A slot marked busy by hand (blocked time, a calendar) or taken out of use holds no
/// appointment for the overlap check to meet: an appointment newly taking it is refused (409,
/// naming it) on every write path, while an appointment that already held its slot is still
/// updated.
async fn a_slot_busy_without_an_appointment_refuses_every_write_path(b: Backend) {
    let app = TestApp::start(b).await;
    let s = slots(&app, 3).await;
    let id = |slot: &Value| slot["id"].as_str().unwrap().to_string();
    for (slot, status) in [(&s[0], "busy"), (&s[1], "busy-unavailable")] {
        let r = mark_slot(&app, slot, status).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    }
    let booked = |slot: &Value| {
        let mut a = proposed(slot, "Patient/p1");
        a["status"] = json!("booked");
        a
    };
    let named = |r: &Value, slot: &Value| r.to_string().contains(&format!("Slot/{}", id(slot)));
    // POST, update-as-create, a transaction, $book.
    let r = app.post("Appointment", &booked(&s[0])).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert!(named(&r.json, &s[0]), "{}", r.json);
    let mut put = booked(&s[1]);
    put["id"] = json!("by-put");
    let r = app.put("Appointment/by-put", &put).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": booked(&s[0]), "request": {"method": "POST", "url": "Appointment"}}]});
    let r = app.post("", &tx).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    let r = app
        .post("Appointment/$book", &proposed(&s[1], "Patient/p2"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert!(named(&r.json, &s[1]), "{}", r.json);
    assert_eq!(slot_status(&app, &s[0]).await, "busy");
    assert_eq!(slot_status(&app, &s[1]).await, "busy-unavailable");
    // A free slot is booked; the appointment, now on a busy slot of its own, moves on.
    let r = app.post("Appointment", &booked(&s[2])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let mut arrived = r.json.clone();
    arrived["status"] = json!("arrived");
    arrived.as_object_mut().unwrap().remove("meta");
    let r = app
        .put(
            &format!("Appointment/{}", arrived["id"].as_str().unwrap()),
            &arrived,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        app.sql_count("SELECT COUNT(*) FROM resources WHERE res_type = 'Appointment'")
            .await,
        1
    );
}
both!(a_slot_busy_without_an_appointment_refuses_every_write_path);
