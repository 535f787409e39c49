use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{Backend, TestApp};

/// A practitioner with a schedule of 30 slots over three days, two patients, three appointments.
struct Fixture {
    pr: String,
    sc: String,
    p1: String,
    p2: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let pr = app
        .create(json!({"resourceType": "Practitioner", "identifier": [{"system": "urn:t", "value": "pr"}],
                       "name": [{"family": "Smith", "given": ["John"]}]}))
        .await;
    let pr = pr["id"].as_str().unwrap().to_string();
    let sc = app
        .create(json!({"resourceType": "Schedule", "active": true,
                       "actor": [{"reference": format!("Practitioner/{pr}")}],
                       "planningHorizon": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-04T00:00:00Z"}}))
        .await;
    let sc = sc["id"].as_str().unwrap().to_string();
    let mut slots = Vec::new();
    for day in 1..=3 {
        for h in 8..18 {
            let s = app
                .create(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sc}")},
                               "status": if h == 12 { "busy" } else { "free" },
                               "start": format!("2030-01-0{day}T{h:02}:00:00Z"),
                               "end": format!("2030-01-0{day}T{h:02}:30:00Z")}))
                .await;
            slots.push(s);
        }
    }
    let p1 = app
        .create(json!({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "p1"}],
                       "name": [{"family": "Quorra", "given": ["Ann"]}], "gender": "female",
                       "birthDate": "1980-05-17", "telecom": [{"system": "email", "value": "q@example.org"}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p2 = app
        .create(json!({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "p2"}],
                       "name": [{"family": "Quill", "given": ["Bob"]}], "gender": "male", "birthDate": "1992-11-02"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (p, s) in [(&p1, &slots[0]), (&p1, &slots[12]), (&p2, &slots[25])] {
        app.create(json!({"resourceType": "Appointment", "status": "booked",
            "start": s["start"], "end": s["end"],
            "slot": [{"reference": format!("Slot/{}", s["id"].as_str().unwrap())}],
            "participant": [
                {"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"},
                {"actor": {"reference": format!("Practitioner/{pr}")}, "status": "accepted"}]}))
            .await;
    }
    Fixture { pr, sc, p1, p2 }
}

fn matches(b: &Value) -> Vec<Value> {
    b["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"].clone())
                .collect()
        })
        .unwrap_or_default()
}

async fn strings_tokens_dates(b: Backend) {
    let app = TestApp::start(b).await;
    let f = fixture(&app).await;
    assert_eq!(
        app.search_ids("Patient?family=quorra").await,
        vec![f.p1.clone()]
    );
    assert_eq!(
        app.search_ids("Patient?family=Quo").await,
        vec![f.p1.clone()]
    );
    assert!(app
        .search_ids("Patient?family:exact=quorra")
        .await
        .is_empty());
    assert_eq!(
        app.search_ids("Patient?family:exact=Quorra").await,
        vec![f.p1.clone()]
    );
    assert_eq!(
        app.search_ids("Patient?family:contains=uil").await,
        vec![f.p2.clone()]
    );
    assert_eq!(app.search_ids("Patient?name=bob").await, vec![f.p2.clone()]);
    assert_eq!(
        app.search_ids("Patient?identifier=urn:t|p2").await,
        vec![f.p2.clone()]
    );
    assert_eq!(
        app.search_ids("Patient?identifier=p2").await,
        vec![f.p2.clone()]
    );
    assert_eq!(
        app.search_ids("Patient?identifier=urn:t|&gender=male")
            .await,
        vec![f.p2.clone()]
    );
    assert_eq!(app.search_ids("Patient?gender=male,female").await.len(), 2);
    assert_eq!(
        app.search_ids("Patient?email=q@example.org").await,
        vec![f.p1.clone()]
    );
    let sc = format!("Schedule/{}", f.sc);
    let free = app
        .search_ids(&format!("Slot?schedule={sc}&status=free&_count=100"))
        .await;
    let not_free = app
        .search_ids(&format!("Slot?schedule={sc}&status:not=free&_count=100"))
        .await;
    // 3 slots at noon are busy, and the 3 that booked appointments fill.
    assert_eq!((free.len(), not_free.len()), (24, 6));
    let day2 = app
        .search_ids(&format!(
            "Slot?schedule={sc}&start=ge2030-01-02&start=lt2030-01-03&_count=100"
        ))
        .await;
    assert_eq!(day2.len(), 10);
    assert_eq!(
        app.search_ids(&format!("Slot?schedule={sc}&start=2030-01-03&_count=100"))
            .await
            .len(),
        10
    );
    assert_eq!(
        app.search_ids(&format!(
            "Slot?schedule={sc}&start=gt2030-01-03T16:00:00Z&_count=100"
        ))
        .await
        .len(),
        1
    );
    assert_eq!(
        app.search_ids("Patient?birthdate=1980").await,
        vec![f.p1.clone()]
    );
    assert!(app
        .search_ids("Patient?birthdate=lt1980-05-17&identifier=p1")
        .await
        .is_empty());
    assert_eq!(
        app.search_ids("Patient?birthdate=le1980-05-17&identifier=p1")
            .await,
        vec![f.p1.clone()]
    );
    assert_eq!(
        app.search_ids("Patient?birthdate=ne1980-05-17&identifier=urn:t|")
            .await,
        vec![f.p2.clone()]
    );
    // Schedule.planningHorizon is a Period: sa/eb compare ranges.
    assert_eq!(app.search_ids("Schedule?date=sa2029-12-31").await.len(), 1);
    assert!(app
        .search_ids("Schedule?date=sa2030-01-02")
        .await
        .is_empty());
    assert_eq!(
        app.search_ids(&format!(
            "Appointment?practitioner=Practitioner/{}&date=ge2030-01-02T00:00:00Z",
            f.pr
        ))
        .await
        .len(),
        2
    );
    assert_eq!(
        app.search_ids(&format!("Patient?_id={},{}", f.p1, f.p2))
            .await
            .len(),
        2
    );
    assert_eq!(
        app.search_ids("Patient?_lastUpdated=gt2001-01-01")
            .await
            .len(),
        2
    );
    assert!(app
        .search_ids("Patient?_lastUpdated=lt2001-01-01")
        .await
        .is_empty());
    assert_eq!(app.search_ids("Slot?schedule:missing=true").await.len(), 0);
    assert_eq!(
        app.search_ids("Patient?telecom:missing=true").await,
        vec![f.p2.clone()]
    );
}
both!(strings_tokens_dates);

async fn references_chains_has(b: Backend) {
    let app = TestApp::start(b).await;
    let f = fixture(&app).await;
    assert_eq!(
        app.search_ids(&format!("Appointment?patient=Patient/{}", f.p1))
            .await
            .len(),
        2
    );
    assert_eq!(
        app.search_ids(&format!("Appointment?patient={}", f.p1))
            .await
            .len(),
        2
    );
    assert_eq!(
        app.search_ids(&format!("Appointment?actor:Practitioner={}", f.pr))
            .await
            .len(),
        3
    );
    assert_eq!(
        app.search_ids(&format!("Appointment?actor=Practitioner/{}", f.pr))
            .await
            .len(),
        3
    );
    assert_eq!(
        app.search_ids("Appointment?practitioner.family=Smith")
            .await
            .len(),
        3
    );
    assert!(app
        .search_ids("Appointment?practitioner.family=Nobody")
        .await
        .is_empty());
    assert_eq!(
        app.search_ids(&format!(
            "Slot?schedule.actor=Practitioner/{}&_count=100",
            f.pr
        ))
        .await
        .len(),
        30
    );
    let mut both = vec![f.p1.clone(), f.p2.clone()];
    both.sort();
    assert_eq!(
        app.search_ids("Patient?_has:Appointment:patient:status=booked")
            .await,
        both
    );
    assert!(app
        .search_ids("Patient?_has:Appointment:patient:status=cancelled")
        .await
        .is_empty());
}
both!(references_chains_has);

async fn include_paging_sort_total(b: Backend) {
    let app = TestApp::start(b).await;
    let f = fixture(&app).await;
    let r = app
        .get(&format!(
            "Appointment?patient=Patient/{}&_include=Appointment:patient",
            f.p1
        ))
        .await;
    let inc: Vec<&Value> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0]["resource"]["id"], f.p1.as_str());
    let r = app
        .get(&format!("Schedule?_id={}&_revinclude=Slot:schedule", f.sc))
        .await;
    let inc = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .count();
    assert_eq!(inc, 30);
    // :iterate — appointments, their slots, and (iterate) the slots' schedule.
    let r = app
        .get(&format!(
            "Appointment?patient=Patient/{}&_include=Appointment:slot&_include:iterate=Slot:schedule",
            f.p1
        ))
        .await;
    let types: Vec<&str> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "Slot").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "Schedule").count(), 1);

    let sc = format!("Schedule/{}", f.sc);
    let mut url = format!("Slot?schedule={sc}&_count=7&_sort=start");
    let (mut seen, mut starts, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        pages += 1;
        assert!(pages < 10);
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        for m in matches(&r.json) {
            seen.push(m["id"].as_str().unwrap().to_string());
            starts.push(m["start"].as_str().unwrap().to_string());
        }
        match r.json["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(n) => url = n["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30);
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
    let r = app
        .get(&format!("Slot?schedule={sc}&_sort=-start&_count=3"))
        .await;
    let top: Vec<String> = matches(&r.json)
        .iter()
        .map(|m| m["start"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        top,
        vec![
            "2030-01-03T17:00:00Z",
            "2030-01-03T16:00:00Z",
            "2030-01-03T15:00:00Z"
        ]
    );
    let r = app
        .get(&format!("Slot?schedule={sc}&_sort=status,-start&_count=1"))
        .await;
    assert_eq!(matches(&r.json)[0]["status"], "busy");
    // Slots 0, 12 and 25 are busy through their booked appointments; slot 25 starts latest.
    assert_eq!(matches(&r.json)[0]["start"], "2030-01-03T13:00:00Z");
    let r = app.get(&format!("Slot?schedule={sc}&_summary=count")).await;
    assert_eq!(r.json["total"], 30);
    assert!(r.json.get("entry").is_none());
    let r = app
        .get(&format!("Slot?schedule={sc}&_total=accurate&_count=5"))
        .await;
    assert_eq!(r.json["total"], 30);
    let r = app
        .get(&format!("Patient?_id={}&_elements=name", f.p1))
        .await;
    let m = &matches(&r.json)[0];
    assert!(m.get("name").is_some() && m.get("birthDate").is_none());
    assert_eq!(m["meta"]["tag"][0]["code"], "SUBSETTED");
    let r = app
        .get(&format!("Slot?schedule={sc}&_summary=true&_count=1"))
        .await;
    let m = &matches(&r.json)[0];
    assert!(m.get("schedule").is_some() && m.get("status").is_some());
    // POST _search with a form body.
    let r = app
        .send(
            Method::POST,
            "Slot/_search",
            Some(format!("schedule={sc}&_count=100").into_bytes()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(matches(&r.json).len(), 30);
}
both!(include_paging_sort_total);

async fn bad_searches(b: Backend) {
    let app = TestApp::start(b).await;
    app.get("Patient?colour=blue").await.outcome(400);
    let r = app
        .send(
            Method::GET,
            "Patient?colour=blue",
            None,
            &[("Prefer", "handling=lenient")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let self_link = r.json["link"][0]["url"].as_str().unwrap();
    assert!(!self_link.contains("colour"), "{self_link}");
    app.get("Patient?birthdate=yesterday").await.outcome(400);
    app.get("Patient?family:nonsense=x").await.outcome(400);
    app.get("Slot?start=xx2030").await.outcome(400);
    app.get("Patient?_count=abc").await.outcome(400);
    app.get("Patient?_sort=colour").await.outcome(400);
    app.get("Patient?_include=Patient:nothing")
        .await
        .outcome(400);
    // Input never reaches SQL text.
    assert!(app
        .search_ids("Patient?family=x'%3B%20DROP%20TABLE%20resources%3B--")
        .await
        .is_empty());
    assert_eq!(app.get("metadata").await.status, StatusCode::OK);
}
both!(bad_searches);

async fn near_finds_locations_within_a_distance(b: Backend) {
    let app = TestApp::start(b).await;
    let mut ids = Vec::new();
    // Springfield, IL; Chicago (about 290 km away); and one without a position.
    for (name, pos) in [
        ("Downtown", Some((39.7817, -89.6501))),
        ("Chicago", Some((41.8781, -87.6298))),
        ("Nowhere", None),
    ] {
        let mut l = json!({"resourceType": "Location", "name": name});
        if let Some((lat, lon)) = pos {
            l["position"] = json!({"latitude": lat, "longitude": lon});
        }
        ids.push(app.create(l).await["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        app.search_ids("Location?near=39.80|-89.64|10|km").await,
        vec![ids[0].clone()]
    );
    let mut both = vec![ids[0].clone(), ids[1].clone()];
    both.sort();
    assert_eq!(
        app.search_ids("Location?near=39.80|-89.64|300|km").await,
        both
    );
    assert_eq!(
        app.search_ids("Location?near=39.80|-89.64|200|mi").await,
        both
    );
    assert_eq!(
        app.search_ids("Location?near=39.80|-89.64|10000|m").await,
        vec![ids[0].clone()]
    );
    assert_eq!(
        app.search_ids("Location?near=41.88|-87.63").await,
        vec![ids[1].clone()]
    );
    app.get("Location?near=91|0|1|km").await.outcome(400);
    app.get("Location?near=40|0|1|parsec").await.outcome(400);
    app.get("Location?_sort=near").await.outcome(400);
}
both!(near_finds_locations_within_a_distance);
