//! Notification work through the local RabbitMQ (`TEST_AMQP_URL`, default guest@127.0.0.1):
//! messages and subscription streams published by the relay and done by consumers, retries
//! through the delay queues, the dead-letter queue, and the faults of issue 5 — a worker killed
//! with -9 and RabbitMQ stopped for 30 s (`rabbitmqctl stop_app`) — after which every message
//! has arrived once. Each test uses a virtual host of its own (made and removed with
//! `rabbitmqctl`); the tests take a lock, since one of them stops the broker.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::both;
use crate::helpers::{self, Backend, TestApp};
use crate::messages::{appointment, at, prefs_patient, SmtpSink};
use crate::notify::{booked, event_numbers, subscription, wait_status, Receiver};

/// One broker test at a time (in-process runs; nextest's `rabbitmq` group does it across
/// processes).
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rabbitmqctl(args: &[&str]) {
    let ok = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl (the tests need the local RabbitMQ's control tool)")
        .success();
    assert!(ok, "rabbitmqctl {args:?}");
}

/// A virtual host of the local RabbitMQ for one test, removed with everything in it at the end.
struct Broker {
    vhost: String,
    url: String,
}

impl Broker {
    fn new() -> Self {
        let base = std::env::var("TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let vhost = format!("test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["-q", "add_vhost", &vhost]);
        rabbitmqctl(&[
            "-q",
            "set_permissions",
            "-p",
            &vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        let url = format!("{}/{vhost}", &base[..base.rfind('/').unwrap()]);
        Broker { vhost, url }
    }

    /// Messages waiting in queue `fhir-scheduler.notify.<name>`.
    async fn depth(&self, name: &str) -> u32 {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .expect("RabbitMQ on TEST_AMQP_URL (scripts/test.sh starts it)");
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                format!("fhir-scheduler.notify.{name}").into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        let _ = conn.close(0, "".into()).await;
        q.message_count()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Also when the test failed.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.vhost])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// RabbitMQ stopped (`stop_app`) until dropped (also when the test fails).
struct Outage;

impl Outage {
    fn start() -> Self {
        rabbitmqctl(&["stop_app"]);
        Outage
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .stdout(std::process::Stdio::null())
            .status();
    }
}

async fn eventually(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Confirmation emails and a rest-hook stream, both through the broker: each once, the
/// stream in order, the queues there and empty afterwards.
async fn messages_and_streams_go_through_rabbitmq(backend: Backend) {
    let _one = BROKER.lock().await;
    let broker = Broker::new();
    let (smtp, smtp_url) = SmtpSink::start().await;
    let (rx, hook) = Receiver::start().await;
    let app = TestApp::start_config(backend, |c| {
        c.smtp_url = Some(smtp_url.clone());
        c.amqp_url = Some(broker.url.clone());
    })
    .await;
    let sub = app
        .create(subscription(&hook, "patient=Patient/a", "id-only"))
        .await;
    wait_status(&app, sub["id"].as_str().unwrap(), "active").await;
    let p = app.create(prefs_patient("email", &[48.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    let n = 6;
    for i in 0..n {
        let start = 3 * 86400 + i * 3600;
        app.create(appointment(&pref, &at(start), &at(start + 1800)))
            .await;
        app.create(booked("Patient/a", 8 + i as u32)).await;
    }
    eventually("every confirmation", 30, async || {
        smtp.message_ids().len() >= n as usize
    })
    .await;
    rx.wait_for("event-notification", 1).await;
    eventually("every event", 30, async || {
        rx.of_type("event-notification")
            .iter()
            .flat_map(event_numbers)
            .count()
            >= n as usize
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = smtp.message_ids();
    assert_eq!(ids.len(), n as usize, "each once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n as usize);
    let numbers: Vec<i64> = rx
        .of_type("event-notification")
        .iter()
        .flat_map(event_numbers)
        .collect();
    assert_eq!(numbers, (1..=n).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(rx.of_type("handshake").len(), 1);
    for q in ["email", "sms", "rest-hook", "dead"] {
        assert_eq!(broker.depth(q).await, 0, "{q} drained");
    }
    let m = app.metrics().await;
    assert!(m.contains("notify_broker_connected 1"), "{m}");
    let published: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("notify_jobs_published_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(published > n as u64, "jobs published: {published}");
}
both!(messages_and_streams_go_through_rabbitmq);

/// SMTP answering 451, 451, 554: retried through the delay queues (2 s, 4 s, 8 s), sent once.
/// A message refused past the retry period goes to the dead-letter queue and is recorded failed.
async fn retries_wait_in_delay_queues_and_dead_letters_are_kept(backend: Backend) {
    let _one = BROKER.lock().await;
    let broker = Broker::new();
    let (smtp, smtp_url) = SmtpSink::start().await;
    smtp.refuse_4xx.store(2, Ordering::SeqCst);
    smtp.refuse_5xx.store(1, Ordering::SeqCst);
    let app = TestApp::start_config(backend, |c| {
        c.smtp_url = Some(smtp_url.clone());
        c.amqp_url = Some(broker.url.clone());
        c.notify_retry_seconds = 5;
    })
    .await;
    let p = app.create(prefs_patient("email", &[48.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    let a = app
        .create(appointment(&pref, &at(3 * 86400), &at(3 * 86400 + 1800)))
        .await;
    let aid = a["id"].as_str().unwrap().to_string();
    let sent = format!(
        "SELECT COUNT(*) FROM message WHERE appointment = 'Appointment/{aid}' AND status = 'sent'"
    );
    // 451 at 0 s, 451 at 2 s, 554 at 6 s: past the 5 s retry period, so given up.
    eventually("the first message given up", 40, async || {
        app.sql_count("SELECT COUNT(*) FROM message WHERE status = 'failed'")
            .await
            == 1
    })
    .await;
    assert_eq!(app.sql_count(&sent).await, 0);
    eventually("the dead letter", 10, async || {
        broker.depth("dead").await == 1
    })
    .await;
    assert!(smtp.message_ids().is_empty());
    // The next one: refused twice (4xx), then accepted, through the delay queues.
    smtp.refuse_4xx.store(2, Ordering::SeqCst);
    let b = app
        .create(appointment(&pref, &at(4 * 86400), &at(4 * 86400 + 1800)))
        .await;
    let bid = b["id"].as_str().unwrap().to_string();
    eventually("the second message", 30, async || {
        !smtp.message_ids().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.message_ids().len(), 1, "once");
    let attempts = app
        .sql_count(&format!(
            "SELECT attempts FROM message WHERE appointment = 'Appointment/{bid}' \
             AND kind = 'confirmation'"
        ))
        .await;
    assert_eq!(attempts, 3);
    app.assert_metrics(&[
        "notify_dead_letters_total 1",
        "notify_attempts_total{channel=\"email\",outcome=\"given_up\"} 1",
        "notify_attempts_total{channel=\"email\",outcome=\"delivered\"} 1",
    ])
    .await;
}
both!(retries_wait_in_delay_queues_and_dead_letters_are_kept);

/// Two worker processes beside a server that runs none. Bookings go on; one worker is killed
/// with -9 mid-run; RabbitMQ is stopped for 30 s while more bookings come in; then started
/// again. Every confirmation arrives (distinct Message-IDs = messages), every message is on
/// record as sent, and at most the ones the killed worker had in flight arrived twice.
async fn nothing_lost_through_a_kill_and_a_broker_outage(backend: Backend) {
    let _one = BROKER.lock().await;
    let broker = Broker::new();
    let (smtp, smtp_url) = SmtpSink::start().await;
    let app = TestApp::start_config(backend, |c| c.notify_worker = false).await;
    let worker = || {
        helpers::worker_process(
            &app.database_url,
            &[
                "--smtp-url",
                &smtp_url,
                "--notify-lease-seconds",
                "3",
                "--amqp-url",
                &broker.url,
            ],
        )
    };
    let mut first = worker();
    let mut second = worker();
    let p = app.create(prefs_patient("email", &[48.0])).await;
    let pref = format!("Patient/{}", p["id"].as_str().unwrap());
    let book = |i: i64| {
        let start = 3 * 86400 + i * 3600;
        app.create(appointment(&pref, &at(start), &at(start + 1800)))
    };
    let n = 30;
    for i in 0..10 {
        book(i).await;
    }
    eventually("the workers send", 30, async || {
        smtp.message_ids().len() >= 3
    })
    .await;
    first.kill(); // SIGKILL
    for i in 10..20 {
        book(i).await;
    }
    let outage = Outage::start();
    let stopped = Instant::now();
    for i in 20..n {
        book(i).await; // the API does not need the broker: the outbox is in the database
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    drop(outage); // start_app
    eventually("every confirmation after the outage", 120, async || {
        let mut ids = smtp.message_ids();
        ids.sort();
        ids.dedup();
        ids.len() == n as usize
    })
    .await;
    eventually("every message recorded as sent", 60, async || {
        app.sql_count("SELECT COUNT(*) FROM message WHERE status = 'sent'")
            .await
            == n
    })
    .await;
    second.kill();
    let total = smtp.message_ids().len();
    // A repeat is a mail the killed worker had sent but not recorded: at most the 16 it sends
    // at once, each with its message's Message-ID (counted once above).
    assert!(total <= n as usize + 16, "{total} mails for {n} messages");
}
both!(nothing_lost_through_a_kill_and_a_broker_outage);

/// A rest-hook endpoint down (503) for 2 minutes while bookings go on, with the work going
/// through RabbitMQ: the subscription goes to `error`, its stream is retried with backoff, and
/// once the endpoint is back every event arrives once, in order, and the subscription is
/// `active` again. PostgreSQL only: the retry timing is the stream's, the same on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_hook_down_for_two_minutes_loses_nothing() {
    let _one = BROKER.lock().await;
    let broker = Broker::new();
    let (rx, hook) = Receiver::start().await;
    let app = TestApp::start_config(Backend::Postgres, |c| {
        c.amqp_url = Some(broker.url.clone());
    })
    .await;
    let sub = app
        .create(subscription(&hook, "patient=Patient/a", "id-only"))
        .await;
    let id = sub["id"].as_str().unwrap().to_string();
    wait_status(&app, &id, "active").await;
    rx.answer.store(503, Ordering::SeqCst);
    let down = Instant::now();
    let n = 5;
    for i in 0..n {
        app.create(booked("Patient/a", 8 + i)).await;
        if i == 0 {
            wait_status(&app, &id, "error").await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(down.elapsed())).await;
    assert!(rx.of_type("event-notification").is_empty());
    rx.answer.store(200, Ordering::SeqCst);
    eventually("every event after the outage", 150, async || {
        rx.of_type("event-notification")
            .iter()
            .flat_map(event_numbers)
            .count()
            >= n as usize
    })
    .await;
    wait_status(&app, &id, "active").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let numbers: Vec<i64> = rx
        .of_type("event-notification")
        .iter()
        .flat_map(event_numbers)
        .collect();
    assert_eq!(
        numbers,
        (1..=n as i64).collect::<Vec<_>>(),
        "once each, in order"
    );
}
