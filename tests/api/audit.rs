//! The audit log: records go through the `Auditor` into the audit store (AuditEvents searchable
//! over HTTP) and the hash chain; `audit verify` (the function and the CLI) finds edited, removed and
//! reordered records.

use std::sync::Arc;

use fhir_scheduler::audit::{self, AuditConfig, Auditor, Record, RestInteraction};
use fhir_scheduler::fhir::access;
use fhir_scheduler::fhir::Fhir;
use fhir_scheduler::store::{SqlStore, Store};
use serde_json::Value;
use sqlx::Row;

use crate::both;
use crate::helpers::{Backend, TestApp};

struct Audited {
    app: TestApp,
    store: Arc<SqlStore>,
    fhir: Arc<Fhir>,
    auditor: Auditor,
}

/// A server, and an auditor of our own on its database (small buffer and batches, so that the
/// buffer fills and several transactions are needed).
async fn start(backend: Backend) -> Audited {
    let app = TestApp::start(backend).await;
    let store = Arc::new(SqlStore::connect(&app.database_url, 2).await.unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    let fhir = Arc::new(Fhir::new(dyn_store).unwrap());
    let auditor = Auditor::new(
        fhir.clone(),
        AuditConfig {
            capacity: 4,
            batch: 3,
            ..AuditConfig::default()
        },
    );
    Audited {
        app,
        store,
        fhir,
        auditor,
    }
}

/// Records 10 reads (patients p0…p9, from 192.0.2.1), a failed login (from 203.0.113.9) and a
/// search (from 198.51.100.5); flushes. (The server audits the test's own HTTP requests into the
/// same chain, from 127.0.0.1.)
async fn record_some(a: &Audited) {
    for i in 0..10 {
        let rec = Record::rest(RestInteraction::Read, 200)
            .who("Practitioner/pr1")
            .role("practitioner")
            .client("scheduler-app")
            .source_addr("192.0.2.1:40000")
            .entity(format!("Patient/p{i}"))
            .patient(format!("Patient/p{i}"));
        a.auditor.record(rec).await.unwrap();
    }
    a.auditor
        .record(
            Record::login(false)
                .who("user:mallory")
                .source_addr("203.0.113.9")
                .outcome(audit::Outcome::MinorFailure, "wrong password"),
        )
        .await
        .unwrap();
    a.auditor
        .record(
            Record::rest(RestInteraction::SearchType, 200)
                .who("user:admin")
                .role("admin")
                .source_addr("198.51.100.5")
                .query("Appointment?patient=Patient/p1&status=booked")
                .entity("Appointment/a1"),
        )
        .await
        .unwrap();
    a.auditor.flush().await.unwrap();
}

async fn exec(store: &SqlStore, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

async fn id_at(store: &SqlStore, seq: i64) -> String {
    sqlx::query("SELECT resource_id FROM audit_chain WHERE seq = $1")
        .bind(seq)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0)
}

/// Lets the test remove or change chain rows, as someone with database access could.
async fn drop_triggers(store: &SqlStore, backend: Backend) {
    for t in ["audit_chain_no_update", "audit_chain_no_delete"] {
        match backend {
            Backend::Sqlite => exec(store, &format!("DROP TRIGGER {t}")).await,
            Backend::Postgres => exec(store, &format!("DROP TRIGGER {t} ON audit_chain")).await,
        }
    }
}

/// Runs `fhir-scheduler audit verify` on the database: exit code and stdout.
fn cli_verify(a: &Audited) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhir-scheduler"))
        .args(["audit", "verify", "--database-url", &a.app.database_url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn audit_events_are_stored_searchable_and_chained(backend: Backend) {
    let a = start(backend).await;
    record_some(&a).await;
    assert_eq!(
        a.app.sql_count("SELECT COUNT(*) FROM audit_chain").await,
        12
    );
    assert_eq!(
        a.app.sql_count("SELECT COUNT(*) FROM audit_event").await,
        12
    );

    // FHIR search over them, through the server (as admin).
    let app = &a.app;
    let found = |q: &'static str| async move { app.search_ids(q).await.len() };
    assert_eq!(found("AuditEvent?patient=Patient/p3").await, 1);
    assert_eq!(found("AuditEvent?entity=Patient/p4").await, 1);
    assert_eq!(found("AuditEvent?address=192.0.2.1").await, 10);
    assert_eq!(
        found("AuditEvent?address=192.0.2.1&agent=Practitioner/pr1&subtype=read&action=R").await,
        10
    );
    assert_eq!(
        found("AuditEvent?address=192.0.2.1&date=ge2020-01-01&_count=50").await,
        10
    );
    assert_eq!(
        found("AuditEvent?address=203.0.113.9&outcome=4&subtype=110122").await,
        1
    );
    assert_eq!(
        found("AuditEvent?address=198.51.100.5&agent-role=admin&action=E").await,
        1
    );
    let r = a.app.get("AuditEvent?address=203.0.113.9").await;
    let ev = &r.json["entry"][0]["resource"];
    assert_eq!(ev["outcomeDesc"], "wrong password");
    assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], "mallory");
    // The server put those searches on record too.
    a.app.audit.flush().await.unwrap();
    assert!(found("AuditEvent?address=127.0.0.1&subtype=search-type").await >= 7);

    // The chain is whole: the function and the CLI agree.
    a.app.audit.flush().await.unwrap();
    let n = a.app.sql_count("SELECT COUNT(*) FROM audit_chain").await;
    assert!(n > 12);
    let v = audit::verify(&a.store).await.unwrap();
    assert_eq!((v.records, v.broken), (n as u64, None));
    let (code, out) = cli_verify(&a);
    assert_eq!((code, out.trim()), (0, format!("ok {n} records").as_str()));

    // More records continue the chain.
    record_some(&a).await;
    let n = a.app.sql_count("SELECT COUNT(*) FROM audit_chain").await;
    let v = audit::verify(&a.store).await.unwrap();
    assert_eq!((v.records, v.broken), (n as u64, None));

    // Append-only: the database refuses to change or remove a link.
    for sql in [
        "UPDATE audit_chain SET hash = 'x' WHERE seq = 1",
        "DELETE FROM audit_chain WHERE seq = 1",
    ] {
        assert!(
            sqlx::query(sql).execute(a.store.pool()).await.is_err(),
            "{sql}"
        );
    }
}
both!(audit_events_are_stored_searchable_and_chained);

/// FHIR search, read, vread and history of AuditEvents, answered from the audit store: every
/// parameter type it keeps, modifiers, sort, paging, totals, includes both ways, chains, and
/// clear refusals of what it cannot answer.
async fn audit_search_reads_its_own_store(backend: Backend) {
    let a = start(backend).await;
    let mut p3 = crate::helpers::patient("Audited");
    p3["id"] = "p3".into();
    assert!(a.app.put("Patient/p3", &p3).await.status.is_success());
    record_some(&a).await;
    let app = &a.app;
    let n = |q: &'static str| async move { app.search_ids(q).await.len() };
    let at = "address=192.0.2.1";

    // Tokens: code, system|code, |code, :not, :missing.
    let rest = "http://hl7.org/fhir/restful-interaction";
    assert_eq!(
        n("AuditEvent?address=192.0.2.1&subtype=http://hl7.org/fhir/restful-interaction|read")
            .await,
        10,
        "{rest}"
    );
    assert_eq!(
        n("AuditEvent?address=192.0.2.1&subtype=http://example.org|read").await,
        0
    );
    assert_eq!(n("AuditEvent?address=192.0.2.1&subtype=|read").await, 0);
    assert_eq!(
        n("AuditEvent?address=192.0.2.1&subtype=http://hl7.org/fhir/restful-interaction|").await,
        10
    );
    assert_eq!(n("AuditEvent?address=192.0.2.1&action:not=R").await, 0);
    assert_eq!(n("AuditEvent?address=192.0.2.1&outcome:not=4").await, 10);
    assert_eq!(n("AuditEvent?address=192.0.2.1&outcome=0,4").await, 10);
    assert_eq!(
        n("AuditEvent?address=203.0.113.9&agent:missing=true").await,
        1
    );
    assert_eq!(
        n("AuditEvent?address=203.0.113.9&agent:missing=false").await,
        0
    );
    assert_eq!(
        n("AuditEvent?address=192.0.2.1&altid:missing=true").await,
        10
    );
    assert_eq!(n("AuditEvent?altid=mallory").await, 1);
    // Strings: starts-with (accent- and case-blind), :exact.
    assert_eq!(n("AuditEvent?address=192.0.2").await, 10);
    assert_eq!(n("AuditEvent?address:exact=192.0.2.1").await, 10);
    assert_eq!(n("AuditEvent?address:exact=192.0.2").await, 0);
    // References: Type/id, bare id, :Type; several values OR.
    assert_eq!(n("AuditEvent?entity=p4").await, 1);
    assert_eq!(n("AuditEvent?entity:Patient=p4").await, 1);
    assert_eq!(n("AuditEvent?entity:Appointment=p4").await, 0);
    assert_eq!(
        n("AuditEvent?entity=Patient/p4,Patient/p5,Appointment/a1").await,
        3
    );
    assert_eq!(
        n("AuditEvent?agent=Practitioner/pr1&patient=Patient/p2").await,
        1
    );
    // Dates and _lastUpdated, _id.
    assert_eq!(n("AuditEvent?address=192.0.2.1&date=lt2020-01-01").await, 0);
    assert_eq!(
        n("AuditEvent?address=192.0.2.1&date=gt2020-01-01&date=lt2100").await,
        10
    );
    assert_eq!(
        n("AuditEvent?address=192.0.2.1&_lastUpdated=ge2020-01-01").await,
        10
    );
    let p4 = app.search_ids("AuditEvent?entity=Patient/p4").await;
    let q = format!("AuditEvent?_id={}", p4[0]);
    assert_eq!(app.search_ids(&q).await, p4);

    // Sort, paging, totals.
    let r = app
        .get("AuditEvent?address=192.0.2.1&_sort=-date&_count=4&_total=accurate")
        .await;
    assert_eq!(r.json["total"], 10, "{}", r.json);
    let first: Vec<String> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["recorded"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first.len(), 4);
    assert!(first.windows(2).all(|w| w[0] >= w[1]), "{first:?}");
    let next = r.json["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("a next page")["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r2 = app.get(&next).await;
    let second: Vec<String> = r2.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["recorded"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(second.len(), 4);
    assert!(first.last() >= second.first(), "{first:?} {second:?}");
    let r = app.get("AuditEvent?address=192.0.2.1&_summary=count").await;
    assert_eq!(r.json["total"], 10, "{}", r.json);
    let r = app
        .get("AuditEvent?address=192.0.2.1&_sort=date&_elements=action")
        .await;
    let e0 = &r.json["entry"][0]["resource"];
    assert_eq!(e0["action"], "R");
    assert!(
        e0.get("entity").is_none() && e0.get("agent").is_some(),
        "{e0}"
    );

    // _include from the AuditEvents, _revinclude of them, a chain through their references.
    let r = app
        .get("AuditEvent?patient=Patient/p3&_include=AuditEvent:patient")
        .await;
    let kinds: Vec<(String, String)> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["search"]["mode"].as_str().unwrap().to_string(),
                e["resource"]["resourceType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("include".into(), "Patient".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("match".into(), "AuditEvent".into())),
        "{kinds:?}"
    );
    let read_p3 = app
        .search_ids("AuditEvent?patient=Patient/p3&address=192.0.2.1")
        .await;
    assert_eq!(read_p3.len(), 1);
    let r = app
        .get("Patient?_id=p3&_revinclude=AuditEvent:patient")
        .await;
    let included: Vec<&str> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(included.contains(&read_p3[0].as_str()), "{}", r.json);
    let chained = app
        .search_ids("AuditEvent?patient.family=audited&address=192.0.2.1")
        .await;
    assert_eq!(chained, read_p3);
    assert_eq!(n("AuditEvent?patient.family=nobody").await, 0);

    // Read, vread, history.
    let id = &read_p3[0];
    let r = app.get(&format!("AuditEvent/{id}")).await;
    assert_eq!(
        (r.status.as_u16(), r.header("etag")),
        (200, "W/\"1\"".to_string())
    );
    assert_eq!(
        app.get(&format!("AuditEvent/{id}/_history/1"))
            .await
            .status
            .as_u16(),
        200
    );
    app.get(&format!("AuditEvent/{id}/_history/2"))
        .await
        .outcome(404);
    let h = app.get(&format!("AuditEvent/{id}/_history")).await;
    assert_eq!(h.json["total"], 1, "{}", h.json);
    let h = app.get("AuditEvent/_history?_count=5").await;
    assert_eq!(h.json["type"], "history");
    assert_eq!(h.json["entry"].as_array().unwrap().len(), 5);
    assert!(
        h.json["total"].as_i64().unwrap() >= 12,
        "{}",
        h.json["total"]
    );
    let sys = app.get("_history?_count=1000").await;
    assert!(sys.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["resource"]["resourceType"] != "AuditEvent"));

    // What the audit store cannot answer is refused, naming the parameter.
    for q in [
        "AuditEvent?address:contains=2.0",
        "AuditEvent?type:text=rest",
        "AuditEvent?_sort=address",
        "AuditEvent?_revinclude=Appointment:supporting-info",
        "Patient?_has:AuditEvent:patient:action=R",
    ] {
        let r = app.get(q).await;
        assert_eq!(r.outcome(400), "not-supported", "{q}: {}", r.json);
    }
    let r = app
        .send(
            reqwest::Method::GET,
            "AuditEvent?address=192.0.2.1&_sort=address",
            None,
            &[("Prefer", "handling=lenient")],
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.json);
    let _ = at;
}
both!(audit_search_reads_its_own_store);

/// The audit writer stores a valid AuditEvent body and, in the audit store, exactly the search
/// values the index extraction finds in that body; nothing of it goes to the resource tables,
/// and the engine refuses to store an AuditEvent there.
async fn audit_store_holds_the_index_of_the_body(backend: Backend) {
    use fhir_scheduler::fhir::index;
    use fhir_scheduler::fhir::search::audit as audit_search;

    let a = start(backend).await;
    record_some(&a).await;
    for seq in [1, 11, 12] {
        let id = id_at(&a.store, seq).await;
        let audited = a.store.read("AuditEvent", &id).await.unwrap().unwrap();
        assert_eq!((audited.version, audited.deleted), (1, false));
        let json: Value = serde_json::from_str(&audited.body).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .take(3)
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["resourceType", "id", "meta"]);
        let mut body = json.clone();
        let obj = body.as_object_mut().unwrap();
        obj.remove("id");
        obj.remove("meta");
        a.fhir.validate("AuditEvent", &body).unwrap();

        let want = audit_search::index(&index::extract(&a.fhir.registry, &json));
        let row = sqlx::query("SELECT rid, terms, date_lo, date_hi FROM audit_event WHERE id = $1")
            .bind(&id)
            .fetch_one(a.store.pool())
            .await
            .unwrap();
        let rid: i64 = row.get(0);
        let set = |t: &str| -> std::collections::BTreeSet<String> {
            t.split('\u{1f}')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        };
        let stored: String = row.get(1);
        assert!(stored.starts_with('\u{1f}') && stored.ends_with('\u{1f}'));
        assert_eq!(set(&stored), set(&want.terms));
        let (lo, hi) = want.date.expect("recorded is indexed");
        assert_eq!((row.get::<i64, _>(2), row.get::<i64, _>(3)), (lo, hi));
        assert!(want.terms.contains("\u{1f}action:"), "{:?}", want.terms);
        let refs = sqlx::query(
            "SELECT param, target_type, target_id FROM audit_ref WHERE rid = $1 \
             ORDER BY param, target_type, target_id",
        )
        .bind(rid)
        .fetch_all(a.store.pool())
        .await
        .unwrap();
        let got: Vec<(String, String, String)> = refs
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let mut want_refs: Vec<(String, String, String)> = want
            .refs
            .iter()
            .map(|r| (r.param.clone(), r.target_type.clone(), r.target_id.clone()))
            .collect();
        want_refs.sort();
        assert_eq!(got, want_refs, "seq {seq}");
    }
    // The reads name their patient: entity and patient references.
    let id = id_at(&a.store, 1).await;
    let rid: i64 = sqlx::query("SELECT rid FROM audit_event WHERE id = $1")
        .bind(&id)
        .fetch_one(a.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        a.app
            .sql_count(&format!("SELECT COUNT(*) FROM audit_ref WHERE rid = {rid}"))
            .await,
        3,
        "entity, patient and the agent Practitioner/pr1"
    );
    for sql in [
        "SELECT COUNT(*) FROM resources WHERE res_type = 'AuditEvent'",
        "SELECT COUNT(*) FROM resource_history WHERE res_type = 'AuditEvent'",
        "SELECT COUNT(*) FROM idx_token WHERE res_type = 'AuditEvent'",
        "SELECT COUNT(*) FROM idx_reference WHERE res_type = 'AuditEvent'",
    ] {
        assert_eq!(a.app.sql_count(sql).await, 0, "{sql}");
    }
    let audited = a.store.read("AuditEvent", &id).await.unwrap().unwrap();
    let mut body: Value = serde_json::from_str(&audited.body).unwrap();
    body.as_object_mut().unwrap().remove("id");
    assert!(
        access::as_system(a.fhir.create("AuditEvent", body, None))
            .await
            .is_err(),
        "an AuditEvent never goes to the resource tables"
    );
}
both!(audit_store_holds_the_index_of_the_body);

async fn verify_names_an_edited_body(backend: Backend) {
    let a = start(backend).await;
    record_some(&a).await;
    let id = id_at(&a.store, 6).await;
    exec(
        &a.store,
        &format!(
            "UPDATE audit_event SET body = REPLACE(body, '\"action\":\"R\"', '\"action\":\"C\"') \
             WHERE id = '{id}'"
        ),
    )
    .await;
    let v = audit::verify(&a.store).await.unwrap();
    let b = v.broken.expect("the edit is found");
    assert_eq!(b.seq, 6, "{b}");
    assert!(b.problem.contains("edited"), "{b}");
    assert_eq!(v.records, 5);
    let (code, out) = cli_verify(&a);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 6"), "{out}");
}
both!(verify_names_an_edited_body);

async fn verify_names_a_removed_record(backend: Backend) {
    let a = start(backend).await;
    record_some(&a).await;
    // The AuditEvent row removed: its link names it.
    let id = id_at(&a.store, 4).await;
    exec(
        &a.store,
        &format!("DELETE FROM audit_event WHERE id = '{id}'"),
    )
    .await;
    let b = audit::verify(&a.store).await.unwrap().broken.unwrap();
    assert_eq!(b.seq, 4, "{b}");
    assert!(b.problem.contains("removed"), "{b}");

    // A link removed (with its record or without): the gap is named.
    let a = start(backend).await;
    record_some(&a).await;
    drop_triggers(&a.store, backend).await;
    exec(&a.store, "DELETE FROM audit_chain WHERE seq = 7").await;
    let b = audit::verify(&a.store).await.unwrap().broken.unwrap();
    assert_eq!(b.seq, 7, "{b}");
    assert!(b.problem.contains("missing"), "{b}");
    let (code, out) = cli_verify(&a);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 7"), "{out}");

    // The newest link removed: its AuditEvent is outside the chain.
    let a = start(backend).await;
    record_some(&a).await;
    drop_triggers(&a.store, backend).await;
    let last = a.app.sql_count("SELECT MAX(seq) FROM audit_chain").await;
    exec(
        &a.store,
        &format!("DELETE FROM audit_chain WHERE seq = {last}"),
    )
    .await;
    let b = audit::verify(&a.store).await.unwrap().broken.unwrap();
    assert_eq!(b.seq, last, "{b}");
    assert!(b.problem.contains("not in the chain"), "{b}");
}
both!(verify_names_a_removed_record);

async fn verify_names_reordered_records(backend: Backend) {
    let a = start(backend).await;
    record_some(&a).await;
    drop_triggers(&a.store, backend).await;
    // Links 3 and 8 swap places (renumbered through a free seq).
    exec(&a.store, "UPDATE audit_chain SET seq = 1000 WHERE seq = 3").await;
    exec(&a.store, "UPDATE audit_chain SET seq = 3 WHERE seq = 8").await;
    exec(&a.store, "UPDATE audit_chain SET seq = 8 WHERE seq = 1000").await;
    let b = audit::verify(&a.store).await.unwrap().broken.unwrap();
    assert_eq!(b.seq, 3, "{b}");

    // Two bodies swapped between records.
    let a = start(backend).await;
    record_some(&a).await;
    let (x, y) = (id_at(&a.store, 2).await, id_at(&a.store, 9).await);
    exec(
        &a.store,
        &format!("UPDATE audit_event SET id = 'swap' WHERE id = '{x}'"),
    )
    .await;
    exec(
        &a.store,
        &format!("UPDATE audit_event SET id = '{x}' WHERE id = '{y}'"),
    )
    .await;
    exec(
        &a.store,
        &format!("UPDATE audit_event SET id = '{y}' WHERE id = 'swap'"),
    )
    .await;
    let b = audit::verify(&a.store).await.unwrap().broken.unwrap();
    assert_eq!(b.seq, 2, "{b}");
}
both!(verify_names_reordered_records);

/// Many recorders at once, several batches stored side by side (on PostgreSQL): every record is
/// stored once, the chain is whole, and a flush answers only after all of it.
async fn concurrent_batches_keep_one_whole_chain(backend: Backend) {
    let app = TestApp::start(backend).await;
    let store = Arc::new(SqlStore::connect(&app.database_url, 8).await.unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    let fhir = Arc::new(Fhir::new(dyn_store).unwrap());
    let auditor = Auditor::new(
        fhir,
        AuditConfig {
            capacity: 64,
            batch: 16,
            writers: 4,
            ..AuditConfig::default()
        },
    );
    let before = app.sql_count("SELECT COUNT(*) FROM audit_event").await;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let auditor = auditor.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let rec = Record::rest(RestInteraction::Read, 200)
                    .who(format!("Practitioner/t{t}"))
                    .entity(format!("Patient/p{t}-{i}"));
                auditor.record(rec).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    auditor.flush().await.unwrap();
    let after = app.sql_count("SELECT COUNT(*) FROM audit_event").await;
    // The server audits nothing meanwhile (the test sent it no request).
    assert_eq!(after - before, 1000);
    let v = audit::verify(&store).await.unwrap();
    assert_eq!(v.broken, None);
    assert_eq!(v.records as i64, after);
    assert_eq!(
        app.sql_count(
            "SELECT COUNT(*) FROM audit_event r WHERE NOT EXISTS \
             (SELECT 1 FROM audit_chain c WHERE c.resource_id = r.id)"
        )
        .await,
        0
    );
}
both!(concurrent_batches_keep_one_whole_chain);
