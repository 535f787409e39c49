//! Patient messages end to end: a real SMTP server and an SMS provider on loopback (started by
//! the test), the server's worker planning from booking events and sending what is due.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::both;
use crate::helpers::{Backend, TestApp};

/// A minimal SMTP server: accepts everything, except that the first `refuse_4xx` MAIL commands
/// get 451 and the next `refuse_5xx` get 554.
#[derive(Clone, Default)]
pub(crate) struct SmtpSink {
    pub(crate) mails: Arc<Mutex<Vec<String>>>,
    pub(crate) refuse_4xx: Arc<AtomicUsize>,
    pub(crate) refuse_5xx: Arc<AtomicUsize>,
}

impl SmtpSink {
    pub(crate) async fn start() -> (Self, String) {
        let sink = SmtpSink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.session(conn).await });
            }
        });
        (sink, url)
    }

    async fn session(&self, conn: tokio::net::TcpStream) {
        let (r, mut w) = conn.into_split();
        let mut lines = BufReader::new(r).lines();
        let _ = w.write_all(b"220 sink ESMTP\r\n").await;
        while let Ok(Some(line)) = lines.next_line().await {
            let cmd = line.to_ascii_uppercase();
            let answer: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                b"250 sink\r\n"
            } else if cmd.starts_with("MAIL") {
                if take(&self.refuse_4xx) {
                    b"451 4.3.0 try again later\r\n"
                } else if take(&self.refuse_5xx) {
                    b"554 5.3.0 refused\r\n"
                } else {
                    b"250 ok\r\n"
                }
            } else if cmd.starts_with("DATA") {
                let _ = w.write_all(b"354 go on\r\n").await;
                let mut mail = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    mail.push_str(&l);
                    mail.push('\n');
                }
                self.mails.lock().unwrap().push(mail);
                b"250 queued\r\n"
            } else if cmd.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n").await;
                return;
            } else {
                b"250 ok\r\n"
            };
            let _ = w.write_all(answer).await;
        }
    }

    pub(crate) fn message_ids(&self) -> Vec<String> {
        self.mails
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                    .map(|l| l[11..].trim().to_string())
            })
            .collect()
    }
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[derive(Clone, Default)]
struct SmsSink {
    got: Arc<Mutex<Vec<(String, String)>>>, // (idempotency key, body)
}

async fn sms_sink() -> (SmsSink, String) {
    let sink = SmsSink::default();
    let s = sink.clone();
    let app = axum::Router::new().route(
        "/sms",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                s.got.lock().unwrap().push((key, body));
                axum::http::StatusCode::CREATED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (sink, url)
}

pub(crate) fn prefs_patient(channel: &str, leads_h: &[f64]) -> Value {
    let mut parts = vec![
        json!({"url": "channel", "valueCode": channel}),
        json!({"url": "timezone", "valueCode": "America/Chicago"}),
        json!({"url": "language", "valueCode": "es"}),
    ];
    for h in leads_h {
        parts.push(
            json!({"url": "lead", "valueDuration": {"value": h, "unit": "h",
            "system": "http://unitsofmeasure.org", "code": "h"}}),
        );
    }
    json!({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Lopez"}],
        "telecom": [{"system": "email", "value": "ana@example.org"},
                    {"system": "sms", "value": "+15550100"}],
        "extension": [{"url": "https://fhir-scheduler.org/fhir/StructureDefinition/notification-preferences",
                       "extension": parts}]})
}

pub(crate) fn at(secs_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs_from_now))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn appointment(patient: &str, start: &str, end: &str) -> Value {
    json!({"resourceType": "Appointment", "status": "booked", "start": start, "end": end,
        "participant": [{"actor": {"reference": patient}, "status": "accepted"},
                        {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"}]})
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn confirmation_reschedule_cancel_and_reminder(backend: Backend) {
    let (smtp, smtp_url) = SmtpSink::start().await;
    let (sms, sms_url) = sms_sink().await;
    let app = TestApp::start_config(backend, |c| {
        c.smtp_url = Some(smtp_url.clone());
        c.sms_url = Some(sms_url.clone());
    })
    .await;
    let p = app.create(prefs_patient("both", &[48.0, 2.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    // Booked three days ahead: a confirmation on both channels at once, two reminders each.
    let a = app
        .create(appointment(&pref, &at(3 * 86400), &at(3 * 86400 + 1800)))
        .await;
    let aid = a["id"].as_str().unwrap().to_string();
    until("the confirmation email", || smtp.message_ids().len() == 1).await;
    until("the confirmation SMS", || {
        sms.got.lock().unwrap().len() == 1
    })
    .await;
    let mail = smtp.mails.lock().unwrap()[0].clone();
    // Spanish (the patient's language; the subject is MIME-encoded), with the .ics attached.
    assert!(mail.contains("Hola Ana"), "{mail}");
    assert!(
        mail.contains("text/calendar") && mail.contains("appointment.ics"),
        "{mail}"
    );
    let text: String = form_urlencoded::parse(sms.got.lock().unwrap()[0].1.as_bytes())
        .filter(|(k, _)| k == "Body")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert!(text.starts_with("Su cita está reservada"), "{text}");

    // Rescheduled: a change notice; the first reminders withdrawn, new ones planned.
    let mut moved = app.get(&format!("Appointment/{aid}")).await.json;
    moved["start"] = json!(at(4 * 86400));
    moved["end"] = json!(at(4 * 86400 + 1800));
    assert_eq!(
        app.put(&format!("Appointment/{aid}"), &moved).await.status,
        200
    );
    until("the change notice", || smtp.message_ids().len() == 2).await;
    // Cancelled: a cancel notice; nothing pending remains.
    let mut gone = app.get(&format!("Appointment/{aid}")).await.json;
    gone["status"] = json!("cancelled");
    assert_eq!(
        app.put(&format!("Appointment/{aid}"), &gone).await.status,
        200
    );
    until("the cancel notice", || smtp.message_ids().len() == 3).await;
    until("three SMS", || sms.got.lock().unwrap().len() == 3).await;
    let kinds = |status: &str| {
        let sql = format!(
            "SELECT COUNT(*) FROM message WHERE appointment = 'Appointment/{aid}' AND status = '{status}'"
        );
        sql
    };
    // The sinks have them; their sending is recorded just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.sql_count(&kinds("pending")).await != 0 {
        assert!(Instant::now() < deadline, "nothing pending remains");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.sql_count(&kinds("withdrawn")).await,
        8,
        "2 reminders × 2 channels × 2"
    );
    assert_eq!(app.sql_count(&kinds("sent")).await, 6);

    // A reminder 2 h ahead of a visit 2 h and 3 s away goes out within seconds.
    let b = app.create(appointment(&pref, &at(7203), &at(9000))).await;
    let bid = b["id"].as_str().unwrap().to_string();
    until("confirmation and reminder of the second visit", || {
        smtp.message_ids().len() == 5
    })
    .await;
    let reminder_sent = format!(
        "SELECT COUNT(*) FROM message WHERE appointment = 'Appointment/{bid}' AND kind = 'reminder' AND status = 'sent'"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.sql_count(&reminder_sent).await < 2 {
        assert!(Instant::now() < deadline, "reminders sent on both channels");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every message once: no Message-ID or idempotency key twice.
    let mut ids = smtp.message_ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    let mut keys: Vec<String> = sms
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|g| g.0.clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), sms.got.lock().unwrap().len());
    // Each sent message is on record as a Communication about the patient.
    let comms = app
        .search_ids(&format!("Communication?subject={pref}&_count=100"))
        .await;
    assert_eq!(comms.len(), 10, "5 emails + 5 SMS");
    // The patient reads their own messages' record; another patient sees none of them.
    let mine = app.bearer("patient", Some(&pref), "patient/*.rs");
    let r = app
        .send(
            reqwest::Method::GET,
            "Communication?_count=100",
            None,
            &[("Authorization", &mine)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["entry"].as_array().map_or(0, Vec::len), 10);
    let other = app.bearer("patient", Some("Patient/someone-else"), "patient/*.rs");
    let r = app
        .send(
            reqwest::Method::GET,
            &format!("Communication/{}", comms[0]),
            None,
            &[("Authorization", &other)],
        )
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.status);
}
both!(confirmation_reschedule_cancel_and_reminder);

async fn smtp_refusals_are_retried_and_nothing_is_sent_twice(backend: Backend) {
    let (smtp, smtp_url) = SmtpSink::start().await;
    smtp.refuse_4xx.store(2, Ordering::SeqCst);
    smtp.refuse_5xx.store(1, Ordering::SeqCst);
    let app = TestApp::start_config(backend, |c| c.smtp_url = Some(smtp_url.clone())).await;
    let p = app.create(prefs_patient("email", &[48.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    let a = app
        .create(appointment(&pref, &at(3 * 86400), &at(3 * 86400 + 1800)))
        .await;
    let aid = a["id"].as_str().unwrap();
    // 451, 451, 554, then accepted: retried with backoff (2 s, 4 s, 8 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    while smtp.message_ids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the confirmation got through in the end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.message_ids().len(), 1, "once");
    let attempts = app
        .sql_count(&format!(
            "SELECT attempts FROM message WHERE appointment = 'Appointment/{aid}' AND kind = 'confirmation'"
        ))
        .await;
    assert_eq!(attempts, 4);
    app.assert_metrics(&[
        "notify_attempts_total{channel=\"email\",outcome=\"retry\"} 3",
        "notify_attempts_total{channel=\"email\",outcome=\"delivered\"} 1",
        "notify_backlog_messages 0",
    ])
    .await;
}
both!(smtp_refusals_are_retried_and_nothing_is_sent_twice);

/// Two worker processes beside a server that runs none; one is killed (-9) mid-run. Every
/// confirmation arrives, each id once — the ones the killed worker had in flight (up to 16 sent
/// at once) could arrive twice, with the same Message-ID (the idempotency key), which the
/// count allows for.
async fn separate_workers_survive_a_kill(backend: Backend) {
    let (smtp, smtp_url) = SmtpSink::start().await;
    let app = TestApp::start_config(backend, |c| c.notify_worker = false).await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let worker = |extra: &[&str]| {
        let mut args = vec!["--smtp-url", &smtp_url, "--notify-lease-seconds", "3"];
        args.extend(extra);
        crate::helpers::worker_process(&app.database_url, &args)
    };
    let mut first = worker(&[]);
    let mut second = worker(&["--metrics-addr", &metrics_addr]);
    let p = app.create(prefs_patient("email", &[48.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    let n = 20;
    for i in 0..n {
        let start = 3 * 86400 + i * 3600;
        app.create(appointment(&pref, &at(start), &at(start + 1800)))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.message_ids().len() < 3 {
        assert!(Instant::now() < deadline, "the workers send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill(); // SIGKILL
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ids = smtp.message_ids();
        ids.sort();
        ids.dedup();
        if ids.len() == n as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every confirmation arrives: {}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A message the killed worker sent but had not recorded is sent again by the other once
    // its lease lapses (same Message-ID); then every message is on record as sent.
    while app
        .sql_count("SELECT COUNT(*) FROM message WHERE status = 'sent'")
        .await
        < n
    {
        assert!(Instant::now() < deadline, "every message recorded as sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The surviving worker's own counters, at its --metrics-addr.
    let m = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("notify_attempts_total{channel=\"email\",outcome=\"delivered\"}"),
        "{m}"
    );
    second.kill();
    let total = smtp.message_ids().len();
    // A repeat is a mail the killed worker had sent but not recorded: at most the 16 it sends
    // at once, each with its message's Message-ID (counted once above).
    assert!(total <= n as usize + 16, "{total} mails for {n} messages");
}
both!(separate_workers_survive_a_kill);

/// The server process killed (-9) after a booking and started again after the reminder fell
/// due: the reminder goes out once, from the restarted server; the confirmation is not repeated.
async fn a_reminder_survives_a_server_restart(backend: Backend) {
    let (smtp, smtp_url) = SmtpSink::start().await;
    let dir = std::env::temp_dir().join(format!("fhir-restart-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
        Backend::Postgres => crate::helpers::fresh_postgres().await,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let common = [
        "--database-url",
        &database_url,
        "--base-url",
        &base,
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    let serve = || {
        crate::helpers::Process(
            std::process::Command::new(env!("CARGO_BIN_EXE_fhir-scheduler"))
                .arg("serve")
                .args(common)
                .args([
                    "--addr",
                    &format!("127.0.0.1:{port}"),
                    "--smtp-url",
                    &smtp_url,
                ])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("the server starts"),
        )
    };
    let mut server = serve();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhir-scheduler"))
        .args(["admin", "token", "--role", "admin"])
        .args(common)
        .output()
        .expect("admin token");
    let token = String::from_utf8(out.stdout).unwrap();
    let bearer = format!("Bearer {}", token.lines().last().unwrap().trim());
    let client = reqwest::Client::new();
    let create = |body: Value| {
        let (client, bearer, base) = (client.clone(), bearer.clone(), base.clone());
        async move {
            let rt = body["resourceType"].as_str().unwrap().to_string();
            // The server may still be starting.
            for _ in 0..100 {
                if let Ok(r) = client
                    .post(format!("{base}/{rt}"))
                    .header("Authorization", &bearer)
                    .header("Content-Type", "application/fhir+json")
                    .body(body.to_string())
                    .send()
                    .await
                {
                    assert_eq!(r.status(), 201);
                    return r.json::<Value>().await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the server did not answer");
        }
    };
    // A reminder 1 h before a visit 1 h + 12 s away: due 12 s from now.
    let p = create(prefs_patient("email", &[1.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    create(appointment(&pref, &at(3600 + 12), &at(3600 + 12 + 1800))).await;
    until("the confirmation", || smtp.message_ids().len() == 1).await;
    server.kill(); // SIGKILL, before the reminder is due
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(smtp.message_ids().len(), 1, "nothing sent while down");
    let _server = serve();
    until("the reminder", || smtp.message_ids().len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids = smtp.message_ids();
    assert_eq!(ids.len(), 2, "the confirmation once, the reminder once");
    ids.dedup();
    assert_eq!(ids.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
both!(a_reminder_survives_a_server_restart);

/// A reminder that would fall at 03:00 in the patient's time zone (Asia/Tokyo, quiet hours
/// 21:00–08:00) is planned for 08:00 there, when the quiet hours end.
async fn a_reminder_waits_for_the_end_of_quiet_hours(backend: Backend) {
    let app = TestApp::start(backend).await;
    let p = app
        .create(json!({"resourceType": "Patient", "name": [{"family": "Sato"}],
        "telecom": [{"system": "email", "value": "sato@example.org"}],
        "extension": [{"url": "https://fhir-scheduler.org/fhir/StructureDefinition/notification-preferences",
            "extension": [
                {"url": "channel", "valueCode": "email"},
                {"url": "timezone", "valueCode": "Asia/Tokyo"},
                {"url": "quiet-start", "valueTime": "21:00:00"},
                {"url": "quiet-end", "valueTime": "08:00:00"},
                {"url": "lead", "valueDuration": {"value": 6, "unit": "h",
                    "system": "http://unitsofmeasure.org", "code": "h"}}]}]}))
        .await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    // 09:00 in Tokyo; 6 h before is 03:00 there.
    let a = app
        .create(appointment(
            &pref,
            "2031-03-10T00:00:00Z",
            "2031-03-10T00:30:00Z",
        ))
        .await;
    let aid = a["id"].as_str().unwrap();
    let due = format!(
        "SELECT due FROM message WHERE appointment = 'Appointment/{aid}' AND kind = 'reminder'"
    );
    let planned = format!(
        "SELECT COUNT(*) FROM message WHERE appointment = 'Appointment/{aid}' AND kind = 'reminder'"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.sql_count(&planned).await == 0 {
        assert!(Instant::now() < deadline, "the reminder is planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let eight_tokyo = chrono::DateTime::parse_from_rfc3339("2031-03-10T08:00:00+09:00")
        .unwrap()
        .timestamp_micros();
    assert_eq!(app.sql_count(&due).await, eight_tokyo);
}
both!(a_reminder_waits_for_the_end_of_quiet_hours);

/// Messages of one appointment and channel are handed out in the order they fall due, one at
/// a time: while the first is due or being sent (by this worker, another one, or RabbitMQ's
/// consumers, which could send two side by side), the next waits; one in retry backoff holds
/// nothing back.
async fn an_appointments_messages_are_handed_out_in_order(backend: Backend) {
    let app = TestApp::start_config(backend, |c| c.notify_worker = false).await;
    let sql = fhir_scheduler::store::SqlStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    for (id, appt, channel, due) in [
        ("a1-email-1", "Appointment/a1", "email", 100),
        ("a1-email-2", "Appointment/a1", "email", 200),
        ("a1-email-3", "Appointment/a1", "email", 300),
        ("a1-sms-1", "Appointment/a1", "sms", 150),
        ("a2-email-1", "Appointment/a2", "email", 120),
    ] {
        sqlx::query(
            "INSERT INTO message (id, appointment, patient, kind, channel, due, status, \
             attempts, next_attempt, focus) VALUES ($1, $2, 'Patient/p', 'changed', $3, $4, \
             'pending', 0, $4, 'Appointment/x/_history/1')",
        )
        .bind(id)
        .bind(appt)
        .bind(channel)
        .bind(due as i64)
        .execute(&pool)
        .await
        .unwrap();
    }
    let due = |now: i64| {
        let sql = &sql;
        async move {
            let mut ids: Vec<String> = sql
                .messages_due(now, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(due(1000).await, ["a1-email-1", "a1-sms-1", "a2-email-1"]);
    // Being sent (claimed, or published to RabbitMQ): the next of its appointment and channel
    // still waits.
    assert!(sql
        .message_claim("a1-email-1", 1000, 60_000_000)
        .await
        .unwrap());
    assert_eq!(due(1000).await, ["a1-sms-1", "a2-email-1"]);
    sql.message_sent("a1-email-1", 1001).await.unwrap();
    assert_eq!(due(1002).await, ["a1-email-2", "a1-sms-1", "a2-email-1"]);
    // Failed, to be retried later: the next one goes.
    sqlx::query("UPDATE message SET next_attempt = 5000 WHERE id = 'a1-email-2'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(due(1003).await, ["a1-email-3", "a1-sms-1", "a2-email-1"]);
    pool.close().await;
}
both!(an_appointments_messages_are_handed_out_in_order);

/// PostgreSQL: a worker in its own process wakes when the server commits outbox rows
/// (`NOTIFY`), not at its next poll — here an hour away, so only the wake-up can send the
/// confirmations in time.
mod a_separate_worker_wakes_on_commit {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let (smtp, smtp_url) = SmtpSink::start().await;
        let app = TestApp::start_config(Backend::Postgres, |c| c.notify_worker = false).await;
        let mut worker = crate::helpers::worker_process(
            &app.database_url,
            &["--smtp-url", &smtp_url, "--notify-poll-ms", "3600000"],
        );
        let p = app.create(prefs_patient("email", &[48.0])).await;
        let pref = format!("Patient/{}", p["id"].as_str().unwrap());
        // The worker's first pass (at its start) may come before or after this booking; the
        // second booking comes once the worker has certainly started and passed.
        app.create(appointment(&pref, &at(3 * 86400), &at(3 * 86400 + 1800)))
            .await;
        until("the first confirmation", || !smtp.message_ids().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.create(appointment(&pref, &at(4 * 86400), &at(4 * 86400 + 1800)))
            .await;
        until(
            "the second confirmation, sent on the commit's NOTIFY",
            || smtp.message_ids().len() >= 2,
        )
        .await;
        worker.kill();
    }
}
