use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::helpers::{patient, Backend, TestApp};

async fn create_read_update_vread_delete(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app.post("Patient", &patient("Zyx")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["meta"]["versionId"], "1");
    assert_eq!(r.header("etag"), "W/\"1\"");
    assert!(r
        .header("location")
        .ends_with(&format!("/Patient/{id}/_history/1")));
    assert!(!r.header("last-modified").is_empty());

    let r = app.get(&format!("Patient/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .header("content-type")
        .starts_with("application/fhir+json"));
    assert_eq!(r.json["name"][0]["family"], "Zyx");

    let mut body = r.json.clone();
    body["birthDate"] = json!("1981-01-01");
    let r = app
        .send(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(body.to_string().into()),
            &[("If-Match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["meta"]["versionId"], "2");
    let r = app
        .send(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(body.to_string().into()),
            &[("If-Match", "W/\"1\"")],
        )
        .await;
    r.outcome(412);

    assert_eq!(
        app.get(&format!("Patient/{id}/_history/1")).await.json["birthDate"],
        "1980-05-17"
    );
    assert_eq!(
        app.get(&format!("Patient/{id}/_history/2")).await.json["birthDate"],
        "1981-01-01"
    );
    app.get(&format!("Patient/{id}/_history/9"))
        .await
        .outcome(404);

    let r = app
        .send(
            Method::PATCH,
            &format!("Patient/{id}"),
            Some(br#"[{"op":"replace","path":"/gender","value":"other"}]"#.to_vec()),
            &[("Content-Type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["gender"], "other");
    assert_eq!(r.json["meta"]["versionId"], "3");

    // A patch that makes the resource invalid is refused and changes nothing.
    let r = app
        .send(
            Method::PATCH,
            &format!("Patient/{id}"),
            Some(br#"[{"op":"replace","path":"/gender","value":"nonsense"}]"#.to_vec()),
            &[("Content-Type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.json);
    assert_eq!(
        app.get(&format!("Patient/{id}")).await.json["meta"]["versionId"],
        "3"
    );

    let r = app.delete(&format!("Patient/{id}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("Patient/{id}")).await.outcome(410),
        "deleted"
    );
    // Deletes are versioned: history shows it, newest first.
    let h = app.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(h.json["type"], "history");
    let e = h.json["entry"].as_array().unwrap();
    assert_eq!(e.len(), 4);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none());
    assert_eq!(e[1]["resource"]["meta"]["versionId"], "3");
    // Deleted resources leave search.
    assert!(app.search_ids("Patient?family=Zyx").await.is_empty());
    // Update after delete brings it back as a new version.
    let r = app.put(&format!("Patient/{id}"), &patient("Zyx")).await;
    assert!(matches!(r.status.as_u16(), 200 | 201), "{}", r.json);
    assert_eq!(r.json["meta"]["versionId"], "5");
}
both!(create_read_update_vread_delete);

async fn update_as_create_and_ids(b: Backend) {
    let app = TestApp::start(b).await;
    let mut p = patient("Client");
    p["id"] = json!("my-id.1");
    let r = app.put("Patient/my-id.1", &p).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(app.get("Patient/my-id.1").await.status, StatusCode::OK);
    p["id"] = json!("other");
    app.put("Patient/my-id.1", &p).await.outcome(400);
    let bad = json!({"resourceType": "Patient"});
    app.put("Patient/bad%20id", &bad).await.outcome(400);
    app.get("Patient/nope").await.outcome(404);
    app.get("NotAType/1").await.outcome(404);
}
both!(update_as_create_and_ids);

async fn conditional_create_update_delete(b: Backend) {
    let app = TestApp::start(b).await;
    let hdr = [("If-None-Exist", "identifier=urn:test|cc")];
    let mut p = patient("cc");
    let r = app
        .send(Method::POST, "Patient", Some(p.to_string().into()), &hdr)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .send(Method::POST, "Patient", Some(p.to_string().into()), &hdr)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.search_ids("Patient?identifier=urn:test|cc").await.len(),
        1
    );

    p["identifier"][0]["value"] = json!("cu");
    let r = app.put("Patient?identifier=urn:test|cu", &p).await;
    assert_eq!(r.status, StatusCode::CREATED);
    p["gender"] = json!("male");
    let r = app.put("Patient?identifier=urn:test|cu", &p).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["meta"]["versionId"], "2");

    // Two matches: conditional update and delete refuse (412).
    app.create(patient("dup")).await;
    app.create(patient("dup")).await;
    app.put("Patient?identifier=urn:test|dup", &patient("dup"))
        .await
        .outcome(412);
    app.delete("Patient?identifier=urn:test|dup")
        .await
        .outcome(412);
    let r = app.delete("Patient?identifier=urn:test|cu").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(app
        .search_ids("Patient?identifier=urn:test|cu")
        .await
        .is_empty());
}
both!(conditional_create_update_delete);

async fn prefer_and_formats(b: Backend) {
    let app = TestApp::start(b).await;
    let body = patient("Pref").to_string();
    let r = app
        .send(
            Method::POST,
            "Patient",
            Some(body.clone().into()),
            &[("Prefer", "return=minimal")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json.is_null());
    assert!(!r.header("location").is_empty());
    let r = app
        .send(
            Method::POST,
            "Patient",
            Some(body.clone().into()),
            &[("Prefer", "return=OperationOutcome")],
        )
        .await;
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    let r = app
        .send(
            Method::POST,
            "Patient",
            Some(body.clone().into()),
            &[("Content-Type", "application/xml")],
        )
        .await;
    r.outcome(415);
    let r = app
        .send(
            Method::GET,
            "metadata",
            None,
            &[("Accept", "application/fhir+xml")],
        )
        .await;
    r.outcome(406);
    app.get("metadata?_format=xml").await.outcome(406);
    let r = app.get("metadata?_format=json&_pretty=true").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["fhirVersion"], "4.0.1");
}
both!(prefer_and_formats);

async fn if_match_race_has_one_winner(b: Backend) {
    let app = std::sync::Arc::new(TestApp::start(b).await);
    let p = app.create(patient("Race")).await;
    let id = p["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let mut body = p.clone();
        body["gender"] = json!(if i % 2 == 0 { "male" } else { "other" });
        let path = format!("Patient/{id}");
        tasks.push(tokio::spawn(async move {
            app.send(
                Method::PUT,
                &path,
                Some(body.to_string().into()),
                &[("If-Match", "W/\"1\"")],
            )
            .await
            .status
            .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 409, 412].contains(s)),
        "{statuses:?}"
    );
    let h = app.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(h.json["entry"].as_array().unwrap().len(), 2);
}
both!(if_match_race_has_one_winner);

async fn history_type_and_system(b: Backend) {
    let app = TestApp::start(b).await;
    for i in 0..3 {
        app.create(patient(&format!("H{i}"))).await;
    }
    app.create(json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]}))
        .await;
    let r = app.get("Patient/_history?_count=2").await;
    assert_eq!(r.json["total"], 3);
    assert_eq!(r.json["entry"].as_array().unwrap().len(), 2);
    let next = r.json["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r2 = app.get(&next).await;
    assert_eq!(r2.json["entry"].as_array().unwrap().len(), 1);
    let r = app.get("_history").await;
    assert_eq!(r.json["total"], 4);
    let r = app.get("_history?_since=2999-01-01").await;
    assert_eq!(r.json["total"], 0);
    app.get("_history?_since=yesterday").await.outcome(400);
}
both!(history_type_and_system);

async fn metadata_lists_types_and_params(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app.get("metadata").await;
    let res = r.json["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(res.len(), fhir_scheduler::fhir::RESOURCE_TYPES.len());
    assert!(res.iter().any(|x| x["type"] == "Subscription"));
    let appt = res.iter().find(|x| x["type"] == "Appointment").unwrap();
    let names: Vec<&str> = appt["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in [
        "date",
        "patient",
        "practitioner",
        "status",
        "actor",
        "_id",
        "_lastUpdated",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let docs = app
        .client
        .get(app.base.replace("/fhir", "/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let doc: serde_json::Value = docs.json().await.unwrap();
    assert!(doc["paths"]["/fhir/Slot"]["get"].is_object());
    assert!(doc["paths"]["/health"]["get"].is_object());
    let ui = app
        .client
        .get(app.base.replace("/fhir", "/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
}
both!(metadata_lists_types_and_params);

/// A transaction's start cancelled at any point (a request whose client went away, a consumer
/// stopped with its broker: their futures are dropped mid-await) leaves no connection inside
/// a transaction: a plain write through the pool right after is committed. (Before, SQLite's
/// writer connection kept the write lock — "database is locked" here after 10 s — and
/// PostgreSQL logged "there is already a transaction in progress" at the next BEGIN.)
async fn a_cancelled_begin_leaves_no_transaction_open(b: Backend) {
    let app = TestApp::start(b).await;
    let store = fhir_scheduler::store::SqlStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    // A transaction start cancelled at one point of its first round trip, then a plain write
    // through the pool, again and again.
    let n = 300i64;
    for i in 0..n {
        let begin = fhir_scheduler::store::Store::begin(&store);
        let wait = std::time::Duration::from_micros(i as u64 % 200);
        let _ = tokio::time::timeout(wait, begin).await;
        sqlx::query(
            "INSERT INTO outbox (topic, focus, keys, occurred) VALUES ('probe', 'f', '{}', $1)",
        )
        .bind(i)
        .execute(store.pool())
        .await
        .unwrap();
    }
    // Seen from another connection: every one committed.
    assert_eq!(
        app.sql_count("SELECT COUNT(*) FROM outbox WHERE topic = 'probe'")
            .await,
        n
    );
}
both!(a_cancelled_begin_leaves_no_transaction_open);

/// PostgreSQL's single reads run on leased connections, handed back without sqlx's ping: a
/// read that ran to the end leaves its connection for the next one (the same backend answers
/// again), and one cancelled mid-statement closes its connection rather than hand back one
/// with an answer still on its way (the next read gets another backend, and a right answer).
#[tokio::test]
async fn a_cancelled_read_never_hands_back_its_connection() {
    use fhir_scheduler::store::{SqlQuery, SqlStore, Store};
    let app = TestApp::start(Backend::Postgres).await;
    let store = SqlStore::connect(&app.database_url, 1).await.unwrap();
    let query = |sql: &str| SqlQuery {
        sql: sql.to_string(),
        ..SqlQuery::default()
    };
    let pid = || {
        query("SELECT CAST(pg_backend_pid() AS BIGINT) AS rid, 'x' AS res_type, 'x' AS id, 'pid' AS body")
    };
    let first = store.find(&pid()).await.unwrap()[0].rid;
    assert_eq!(store.find(&pid()).await.unwrap()[0].rid, first, "reused");
    // Cancelled while PostgreSQL sleeps on it.
    let slow = query(
        "SELECT CAST(pg_backend_pid() AS BIGINT) AS rid, 'x' AS res_type, 'x' AS id, \
         CAST(pg_sleep(1) AS TEXT) AS body",
    );
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(200), store.find(&slow));
    assert!(cancelled.await.is_err(), "still running when cancelled");
    let rows = store.find(&pid()).await.unwrap();
    assert_eq!(
        rows[0].body, "pid",
        "the answer to this read, not the slow one's"
    );
    assert_ne!(rows[0].rid, first, "a new connection");
    // With one lease at most, the cancelled one's permit was given back too.
    let again = store.find(&pid()).await.unwrap()[0].rid;
    assert_eq!(again, rows[0].rid);
}
