//! The audit log: records go through the `Auditor` into AuditEvent resources (searchable over
//! HTTP) and the hash chain; `audit verify` (the function and the CLI) finds edited, removed and
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
        a.app
            .sql_count("SELECT COUNT(*) FROM resources WHERE res_type = 'AuditEvent'")
            .await,
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

/// The audit writer stores what a normal create of the same AuditEvent stores: the body (but
/// for id and meta) and the same search index rows.
async fn audit_writes_match_a_normal_create(backend: Backend) {
    let a = start(backend).await;
    record_some(&a).await;
    let id = id_at(&a.store, 12).await;
    let audited = a.store.read("AuditEvent", &id).await.unwrap().unwrap();
    let mut body: Value = serde_json::from_str(&audited.body).unwrap();
    let obj = body.as_object_mut().unwrap();
    obj.remove("id");
    obj.remove("meta");
    a.fhir.validate("AuditEvent", &body).unwrap();
    let created = access::as_system(a.fhir.create("AuditEvent", body.clone(), None))
        .await
        .unwrap()
        .stored;
    let mut created_body: Value = serde_json::from_str(&created.body).unwrap();
    let obj = created_body.as_object_mut().unwrap();
    obj.remove("id");
    obj.remove("meta");
    assert_eq!(created_body, body);
    let audited_json: Value = serde_json::from_str(&audited.body).unwrap();
    let audited_keys: Vec<&str> = audited_json
        .as_object()
        .unwrap()
        .keys()
        .take(3)
        .map(String::as_str)
        .collect();
    assert_eq!(audited_keys, ["resourceType", "id", "meta"]);
    for table in [
        "idx_token",
        "idx_string",
        "idx_date",
        "idx_reference",
        "idx_uri",
    ] {
        let count = |rid: i64| format!("SELECT COUNT(*) FROM {table} WHERE rid = {rid}");
        let ours = a.app.sql_count(&count(audited.rid)).await;
        let theirs = a.app.sql_count(&count(created.rid)).await;
        assert_eq!(ours, theirs, "{table}");
    }
    assert!(
        a.app
            .sql_count(&format!(
                "SELECT COUNT(*) FROM idx_token WHERE rid = {}",
                audited.rid
            ))
            .await
            > 0
    );
    assert_eq!(
        a.app
            .sql_count(&format!(
                "SELECT COUNT(*) FROM resource_history WHERE res_type = 'AuditEvent' AND id = '{id}'"
            ))
            .await,
        1
    );
}
both!(audit_writes_match_a_normal_create);

async fn verify_names_an_edited_body(backend: Backend) {
    let a = start(backend).await;
    record_some(&a).await;
    let id = id_at(&a.store, 6).await;
    exec(
        &a.store,
        &format!(
            "UPDATE resources SET body = REPLACE(body, '\"action\":\"R\"', '\"action\":\"C\"') \
             WHERE res_type = 'AuditEvent' AND id = '{id}'"
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
        &format!("DELETE FROM resources WHERE res_type = 'AuditEvent' AND id = '{id}'"),
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
        &format!("UPDATE resources SET id = 'swap' WHERE res_type = 'AuditEvent' AND id = '{x}'"),
    )
    .await;
    exec(
        &a.store,
        &format!("UPDATE resources SET id = '{x}' WHERE res_type = 'AuditEvent' AND id = '{y}'"),
    )
    .await;
    exec(
        &a.store,
        &format!("UPDATE resources SET id = '{y}' WHERE res_type = 'AuditEvent' AND id = 'swap'"),
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
    let before = app
        .sql_count("SELECT COUNT(*) FROM resources WHERE res_type = 'AuditEvent'")
        .await;
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
    let after = app
        .sql_count("SELECT COUNT(*) FROM resources WHERE res_type = 'AuditEvent'")
        .await;
    // The server audits nothing meanwhile (the test sent it no request).
    assert_eq!(after - before, 1000);
    let v = audit::verify(&store).await.unwrap();
    assert_eq!(v.broken, None);
    assert_eq!(v.records as i64, after);
    assert_eq!(
        app.sql_count(
            "SELECT COUNT(*) FROM resources r WHERE r.res_type = 'AuditEvent' AND NOT EXISTS \
             (SELECT 1 FROM audit_chain c WHERE c.resource_id = r.id)"
        )
        .await,
        0
    );
}
both!(concurrent_batches_keep_one_whole_chain);
