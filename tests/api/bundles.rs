use reqwest::StatusCode;
use serde_json::json;

use crate::both;
use crate::helpers::{patient, Backend, TestApp};

async fn transaction_rewrites_and_is_atomic(b: Backend) {
    let app = TestApp::start(b).await;
    let pr = app.create(json!({"resourceType": "Practitioner", "identifier": [{"system": "urn:t", "value": "doc"}]})).await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "resource": patient("Tx"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:1c3151bd-1cbf-4d64-b04d-cd9187a4c6e1",
         "resource": {"resourceType": "Appointment", "status": "proposed", "participant": [
            {"actor": {"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}, "status": "needs-action"},
            {"actor": {"reference": "Practitioner?identifier=urn:t|doc"}, "status": "needs-action"}]},
         "request": {"method": "POST", "url": "Appointment"}},
        {"resource": patient("Tx2"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:test|Tx2"}}
    ]});
    let r = app.post("", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["type"], "transaction-response");
    let e = r.json["entry"].as_array().unwrap();
    assert!(e
        .iter()
        .all(|x| x["response"]["status"].as_str().unwrap().starts_with("201")));
    let pid = e[0]["resource"]["id"].as_str().unwrap();
    let appt = &e[1]["resource"];
    assert_eq!(
        appt["participant"][0]["actor"]["reference"],
        format!("Patient/{pid}")
    );
    assert_eq!(
        appt["participant"][1]["actor"]["reference"],
        format!("Practitioner/{}", pr["id"].as_str().unwrap())
    );
    // Again: the conditional create now matches (200), nothing new.
    let r = app.post("", &bundle).await;
    assert!(r.json["entry"][2]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("200"));
    assert_eq!(
        app.search_ids("Patient?identifier=urn:test|Tx2")
            .await
            .len(),
        1
    );

    // All or nothing: an invalid entry rolls back the valid one.
    let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Atomic"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Appointment", "status": "nonsense"}, "request": {"method": "POST", "url": "Appointment"}}]});
    let r = app.post("", &bad).await;
    assert!(r.status.is_client_error());
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    assert!(app
        .search_ids("Patient?identifier=urn:test|Atomic")
        .await
        .is_empty());
    // A failure at write time (If-Match mismatch) also rolls back everything before it.
    let victim = app.create(patient("Victim")).await;
    let vid = victim["id"].as_str().unwrap();
    let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Atomic2"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": format!("Patient/{vid}")}},
        {"resource": patient("Victim"), "request": {"method": "PUT", "url": format!("Patient/{vid}"), "ifMatch": "W/\"7\""}}]});
    let r = app.post("", &bad).await;
    assert_eq!(r.status.as_u16(), 412, "{}", r.json);
    assert!(app
        .search_ids("Patient?identifier=urn:test|Atomic2")
        .await
        .is_empty());
    assert_eq!(
        app.get(&format!("Patient/{vid}")).await.status,
        StatusCode::OK
    );
}
both!(transaction_rewrites_and_is_atomic);

async fn batch_reports_each_entry(b: Backend) {
    let app = TestApp::start(b).await;
    let p = app.create(patient("B")).await;
    let pid = p["id"].as_str().unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("B1"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": format!("Patient/{pid}")}},
        {"resource": {"resourceType": "Appointment", "status": "nonsense"}, "request": {"method": "POST", "url": "Appointment"}},
        {"request": {"method": "GET", "url": "Patient?family=B1"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "DELETE", "url": format!("Patient/{pid}")}}
    ]});
    let r = app.post("", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["type"], "batch-response");
    let st: Vec<String> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap()[..3].to_string())
        .collect();
    assert_eq!(st, vec!["201", "200", "400", "200", "404", "204"]);
    assert_eq!(
        r.json["entry"][2]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(r.json["entry"][3]["resource"]["type"], "searchset");
    let bad = json!({"resourceType": "Bundle", "type": "collection"});
    app.post("", &bad).await.outcome(400);
}
both!(batch_reports_each_entry);
