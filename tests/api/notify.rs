//! Topic-based Subscriptions over rest-hook: a real receiver on loopback, the server's own
//! worker, handshake, notifications in order, retries through an endpoint that is down, and the
//! `$status` / `$events` operations.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{Backend, TestApp};

const TOPIC: &str = "https://fhir-scheduler.org/fhir/SubscriptionTopic/appointment-booked";
const FILTER: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
const CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";

/// What the receiver got: the `X-Secret` header and the body.
type Received = (Option<String>, Value);

#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) got: Arc<Mutex<Vec<Received>>>,
    pub(crate) answer: Arc<AtomicU16>,
}

impl Receiver {
    pub(crate) async fn start() -> (Self, String) {
        let r = Receiver::default();
        r.answer.store(200, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    /// Notifications answered 2xx so far (the ones the endpoint accepted).
    fn accepted(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn of_type(&self, kind: &str) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .filter(|b| param(&b["entry"][0]["resource"], "type") == kind)
            .collect()
    }

    pub(crate) async fn wait_for(&self, kind: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.of_type(kind);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} {kind}: got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let code = r.answer.load(Ordering::SeqCst);
    if code == 200 {
        let secret = headers
            .get("x-secret")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        r.got
            .lock()
            .unwrap()
            .push((secret, serde_json::from_str(&body).unwrap()));
    }
    StatusCode::from_u16(code).unwrap()
}

/// A value of the SubscriptionStatus Parameters, as text.
fn param(p: &Value, name: &str) -> String {
    p["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == name)
        .map(|x| {
            ["valueCode", "valueString", "valueCanonical"]
                .iter()
                .find_map(|k| x[*k].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

pub(crate) fn event_numbers(b: &Value) -> Vec<i64> {
    b["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["name"] == "notification-event")
        .map(|x| {
            x["part"][0]["valueString"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

pub(crate) fn subscription(endpoint: &str, filter: &str, content: &str) -> Value {
    json!({"resourceType": "Subscription", "status": "requested", "reason": "test",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": FILTER, "valueString": filter}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint, "header": ["X-Secret: s3cret"],
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": CONTENT, "valueCode": content}]}}})
}

pub(crate) fn booked(patient: &str, hour: u32) -> Value {
    json!({"resourceType": "Appointment", "status": "booked",
        "start": format!("2030-03-01T{hour:02}:00:00Z"), "end": format!("2030-03-01T{hour:02}:30:00Z"),
        "participant": [{"actor": {"reference": patient}, "status": "accepted"},
                        {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"}]})
}

pub(crate) async fn wait_status(app: &TestApp, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = app.get(&format!("Subscription/{id}")).await.json["status"].clone();
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscription stayed {s}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn handshake_then_matching_events_in_full(backend: Backend) {
    let (rx, url) = Receiver::start().await;
    let app = TestApp::start(backend).await;
    let sub = app
        .create(subscription(
            &url,
            "Appointment?patient=Patient/a",
            "full-resource",
        ))
        .await;
    assert_eq!(sub["status"], "requested", "the server governs the status");
    let id = sub["id"].as_str().unwrap().to_string();
    let hs = rx.wait_for("handshake", 1).await;
    assert_eq!(param(&hs[0]["entry"][0]["resource"], "status"), "requested");
    assert_eq!(rx.got.lock().unwrap()[0].0.as_deref(), Some("s3cret"));
    wait_status(&app, &id, "active").await;

    let mine = app.create(booked("Patient/a", 9)).await;
    app.create(booked("Patient/b", 10)).await; // filtered out
    let got = rx.wait_for("event-notification", 1).await;
    let b = &got[0];
    assert_eq!(b["type"], "history");
    let status = &b["entry"][0]["resource"];
    assert_eq!(status["resourceType"], "Parameters");
    assert_eq!(param(status, "events-since-subscription-start"), "1");
    assert_eq!(param(status, "topic"), TOPIC);
    assert_eq!(event_numbers(b), [1]);
    let mine_id = mine["id"].as_str().unwrap();
    assert_eq!(b["entry"][1]["resource"]["id"], mine_id);
    assert_eq!(
        status["parameter"][5]["part"][2]["valueReference"]["reference"],
        format!("Appointment/{mine_id}/_history/1")
    );

    // Cancelling is another topic: nothing more arrives for this subscription.
    let mut c = mine.clone();
    c["status"] = json!("cancelled");
    assert_eq!(
        app.put(&format!("Appointment/{mine_id}"), &c).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.of_type("event-notification").len(), 1);

    let st = app.get(&format!("Subscription/{id}/$status")).await;
    assert_eq!(st.status, 200, "{}", st.json);
    let p = &st.json["entry"][0]["resource"];
    assert_eq!(param(p, "type"), "query-status");
    assert_eq!(param(p, "status"), "active");
    assert_eq!(param(p, "events-since-subscription-start"), "1");
    let ev = app
        .get(&format!(
            "Subscription/{id}/$events?eventsSinceNumber=1&content=id-only"
        ))
        .await;
    assert_eq!(ev.status, 200, "{}", ev.json);
    assert_eq!(
        param(&ev.json["entry"][0]["resource"], "type"),
        "query-event"
    );
    assert_eq!(event_numbers(&ev.json), [1]);
    assert!(ev.json["entry"][1].get("resource").is_none());
    // Not for patients.
    let patient = app.bearer("patient", Some("Patient/a"), "patient/*.rs");
    let r = app
        .send(
            reqwest::Method::GET,
            &format!("Subscription/{id}/$status"),
            None,
            &[("Authorization", &patient)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
}
both!(handshake_then_matching_events_in_full);

async fn a_down_endpoint_gets_every_event_once_in_order(backend: Backend) {
    let (rx, url) = Receiver::start().await;
    rx.answer.store(503, Ordering::SeqCst);
    let app = TestApp::start(backend).await;
    let sub = app
        .create(subscription(&url, "patient=Patient/a", "id-only"))
        .await;
    let id = sub["id"].as_str().unwrap().to_string();
    wait_status(&app, &id, "error").await;
    for h in 8..11 {
        app.create(booked("Patient/a", h)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(rx.accepted().is_empty());
    rx.answer.store(200, Ordering::SeqCst);
    rx.wait_for("handshake", 1).await;
    wait_status(&app, &id, "active").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let numbers = loop {
        let n: Vec<i64> = rx
            .of_type("event-notification")
            .iter()
            .flat_map(event_numbers)
            .collect();
        if n.len() >= 3 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(numbers, [1, 2, 3], "each event once, in order");
    // Down again while an event is due: retried with backoff until it is accepted.
    rx.answer.store(503, Ordering::SeqCst);
    app.create(booked("Patient/a", 12)).await;
    wait_status(&app, &id, "error").await;
    let st = app.get(&format!("Subscription/{id}/$status")).await;
    assert!(param(&st.json["entry"][0]["resource"], "error").is_empty());
    assert!(st.json["entry"][0]["resource"]["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "error"));
    rx.answer.store(200, Ordering::SeqCst);
    wait_status(&app, &id, "active").await;
    rx.wait_for("event-notification", 2).await;
    let numbers: Vec<i64> = rx
        .of_type("event-notification")
        .iter()
        .flat_map(event_numbers)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4], "each event once, in order");
    let st = app.get(&format!("Subscription/{id}/$status")).await;
    assert_eq!(
        param(
            &st.json["entry"][0]["resource"],
            "events-since-subscription-start"
        ),
        "4"
    );
}
both!(a_down_endpoint_gets_every_event_once_in_order);

async fn unsupported_subscriptions_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let good = subscription("http://127.0.0.1:9/hook", "patient=Patient/a", "id-only");
    let mut unknown_topic = good.clone();
    unknown_topic["criteria"] = json!("http://example.org/SubscriptionTopic/nope");
    let mut bad_filter = good.clone();
    bad_filter["_criteria"]["extension"][0]["valueString"] = json!("Appointment?status=booked");
    let mut channel = good.clone();
    channel["channel"]["type"] = json!("message");
    let mut content = good.clone();
    content["channel"]["_payload"]["extension"][0]["valueCode"] = json!("everything");
    for (what, body) in [
        ("topic", unknown_topic),
        ("filter", bad_filter),
        ("channel", channel),
        ("content", content),
    ] {
        let r = app.post("Subscription", &body).await;
        assert!(
            r.status.is_client_error(),
            "{what}: {} {}",
            r.status,
            r.json
        );
        assert_eq!(r.json["resourceType"], "OperationOutcome", "{what}");
    }
    let meta = app.get("metadata").await.json;
    let sub = meta["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Subscription")
        .unwrap()
        .clone();
    let topics: Vec<&str> = sub["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["valueCanonical"].as_str().unwrap())
        .collect();
    assert!(topics.contains(&TOPIC), "{topics:?}");
}
both!(unsupported_subscriptions_are_refused);

/// With `heartbeatPeriod`, a quiet channel gets heartbeats (status active, no events, the
/// counter unchanged).
async fn heartbeats_on_a_quiet_channel(backend: Backend) {
    let (rx, url) = Receiver::start().await;
    let app = TestApp::start(backend).await;
    let mut s = subscription(&url, "patient=Patient/a", "id-only");
    s["channel"]["extension"] = json!([{
        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
        "valueUnsignedInt": 1}]);
    app.create(s).await;
    let beats = rx.wait_for("heartbeat", 2).await;
    let p = &beats[1]["entry"][0]["resource"];
    assert_eq!(param(p, "status"), "active");
    assert_eq!(param(p, "events-since-subscription-start"), "0");
    assert_eq!(beats[1]["entry"].as_array().unwrap().len(), 1);
}
both!(heartbeats_on_a_quiet_channel);

/// An email channel: the handshake and each notification Bundle mailed to the `mailto:`.
async fn email_channel_mails_the_bundles(backend: Backend) {
    let (smtp, smtp_url) = crate::messages::SmtpSink::start().await;
    let app = TestApp::start_config(backend, |c| c.smtp_url = Some(smtp_url.clone())).await;
    let mut s = subscription("mailto:ehr@example.org", "patient=Patient/a", "id-only");
    s["channel"]["type"] = json!("email");
    let sub = app.create(s).await;
    wait_status(&app, sub["id"].as_str().unwrap(), "active").await;
    app.create(booked("Patient/a", 9)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.mails.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "two mails: handshake and event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mails = smtp.mails.lock().unwrap().clone();
    assert!(mails[0].contains("To: ehr@example.org"), "{}", mails[0]);
    assert!(mails[0].contains("application/fhir+json"));
    assert!(mails[1].contains("event-notification"), "{}", mails[1]);
}
both!(email_channel_mails_the_bundles);

/// Handled outbox rows older than the cut are forgotten; unhandled ones never.
async fn the_outbox_forgets_only_handled_rows(backend: Backend) {
    // No worker: it would handle the rows meanwhile.
    let app = TestApp::start_config(backend, |c| c.notify_worker = false).await;
    let store = fhir_scheduler::store::SqlStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    for (dispatched, planned, occurred) in [(true, true, 1), (true, false, 1), (true, true, 9)] {
        sqlx::query(
            "INSERT INTO outbox (topic, focus, keys, occurred, dispatched, planned) \
             VALUES ('appointment-booked', 'Appointment/x/_history/1', '{}', $1, $2, $3)",
        )
        .bind(occurred as i64)
        .bind(dispatched)
        .bind(planned)
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert_eq!(store.outbox_prune(5, 100).await.unwrap(), 1);
    assert_eq!(app.sql_count("SELECT COUNT(*) FROM outbox").await, 2);
}
both!(the_outbox_forgets_only_handled_rows);

/// The websocket channel: a binding token from `$get-ws-binding-token`, `bind-with-token` on
/// the socket it names, then the handshake, the event that happened before binding, new events
/// in order and heartbeats. Tokens are for callers who may read the subscription, for websocket
/// subscriptions only, and a wrong one binds nothing.
async fn websocket_channel_binds_with_a_token(backend: Backend) {
    use futures::{SinkExt, StreamExt};
    use reqwest::Method;
    use tokio_tungstenite::tungstenite::Message;
    let app = TestApp::start(backend).await;
    let mut s = subscription("", "patient=Patient/a", "id-only");
    s["channel"]["type"] = json!("websocket");
    s["channel"].as_object_mut().unwrap().remove("endpoint");
    s["channel"]["extension"] = json!([{"url":
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
        "valueUnsignedInt": 1}]);
    let sub = app.create(s).await;
    let id = sub["id"].as_str().unwrap().to_string();
    app.create(booked("Patient/a", 8)).await; // before any client is bound
    let r = app
        .get(&format!("Subscription/{id}/$get-ws-binding-token"))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let out = |name: &str, key: &str| {
        r.json["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p[key].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (token, url) = (
        out("token", "valueString"),
        out("websocket-url", "valueUrl"),
    );
    assert_eq!(
        out("subscription", "valueString"),
        format!("Subscription/{id}")
    );
    assert!(!out("expiration", "valueDateTime").is_empty());
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws/subscriptions"),
        "{url}"
    );

    // A wrong token binds nothing: an OperationOutcome comes back.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text("bind-with-token: nope"))
        .await
        .unwrap();
    let answer = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(answer.contains("OperationOutcome"), "{answer}");

    ws.send(Message::text(format!("bind-with-token: {token}")))
        .await
        .unwrap();
    let mut next = async || -> Value {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a notification in time")
            .unwrap()
            .unwrap();
        serde_json::from_str(&frame.into_text().unwrap()).unwrap()
    };
    let kind = |b: &Value| param(&b["entry"][0]["resource"], "type");
    assert_eq!(kind(&next().await), "handshake");
    let mut numbers = Vec::new();
    let mut heartbeats = 0;
    let mut booked_more = false;
    while numbers.len() < 3 || heartbeats == 0 {
        let b = next().await;
        match kind(&b).as_str() {
            "event-notification" => numbers.extend(event_numbers(&b)),
            "heartbeat" => heartbeats += 1,
            other => panic!("unexpected {other}"),
        }
        if !booked_more {
            booked_more = true;
            app.create(booked("Patient/a", 9)).await;
            app.create(booked("Patient/b", 10)).await; // filtered out
            app.create(booked("Patient/a", 11)).await;
        }
    }
    assert_eq!(numbers, [1, 2, 3], "each event once, in order");
    wait_status(&app, &id, "active").await;

    // Only callers who may read the subscription get a token; only for websocket ones.
    let patient = app.bearer("patient", Some("Patient/a"), "patient/*.rs");
    let r = app
        .send(
            Method::GET,
            &format!("Subscription/{id}/$get-ws-binding-token"),
            None,
            &[("Authorization", &patient)],
        )
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.status);
    let hook = app
        .create(subscription(
            "http://127.0.0.1:9/hook",
            "patient=Patient/a",
            "id-only",
        ))
        .await;
    let r = app
        .get(&format!(
            "Subscription/$get-ws-binding-token?id={}",
            hook["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 400, "{}", r.json);
}
both!(websocket_channel_binds_with_a_token);
