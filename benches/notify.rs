//! Notification load generator (issue 5; a `harness = false` bench target, `benches/notify.sh`
//! drives it). Shares its options, client, Bundles and closed-loop runner with the other load
//! generators (`benches/common`).
//!
//! ```text
//! cargo bench --bench notify -- drain --url http://127.0.0.1:8080/fhir --smtp 127.0.0.1:2525 --n 2000
//! cargo bench --bench notify -- bare  --amqp amqp://guest:guest@127.0.0.1:5672/vh --smtp 127.0.0.1:2525 --n 2000
//! cargo bench --bench notify -- hook  --url http://127.0.0.1:8080/fhir --smtp 127.0.0.1:2525 \
//!     --hook 127.0.0.1:18600 --concurrency 16 --duration 20 --warmup 5
//! ```
//!
//! Every mode runs an SMTP sink on `--smtp` (loopback; accepts every mail, keeps the first
//! arrival time of each distinct `Message-ID`); the server under test is started with
//! `--smtp-url smtp://<that address>` before the generator binds it (nothing is mailed before
//! the generator creates appointments).
//!
//! - `drain`: creates `--patients` Patients whose `notification-preferences` ask for email
//!   (time zone, language), `--practitioners` Practitioners, then, from `t0`, `--n` booked
//!   Appointments (3 days ahead and on, 5 minutes apart: nothing overlaps) as transaction
//!   Bundles of `--bundle` entries, `--parallel` in flight. Each owes one confirmation email
//!   at once (the 24 h reminder is not due). Measured: from `t0` until the `n`-th distinct
//!   Message-ID reached the sink (messages/s), and from the last create's answer until then
//!   (the drain tail).
//! - `bare`: the reference pipeline without the server, in the same broker: publishes `--n`
//!   persistent messages to a durable queue with publisher confirms (`--inflight` confirms
//!   outstanding at a time), while a consumer (prefetch `--prefetch`, as many handled at
//!   once) sends each as one email with lettre (a new SMTP connection per mail, as the server
//!   does) and acknowledges it after the sink accepted it. Measured the same way.
//! - `hook`: a rest-hook receiver on `--hook` (answers 200, keeps the first arrival time of
//!   each notified Appointment id), a Subscription to the appointment-booked topic (no filter,
//!   id-only payload) waited on until `active`, then `--concurrency` clients in closed loops
//!   `POST Appointment` (booked, same shape as `drain`) for `--warmup` + `--duration` s; with
//!   `--rate R` (bookings/s) the clients keep to that pace (booking `i` starts no earlier than
//!   `i / R` s after the start), so the pipeline is measured below saturation too.
//!   Latency = arrival at the receiver − the moment the client had the 201, for the
//!   appointments answered inside the window; the generator waits up to `--settle` s after the
//!   run for the last notifications, then deletes the Subscription.
//!
//! Prints one JSON line per run.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use common::{
    client, closed_loop, entry, post_bundles, r2, summary, urn, Class, Opts, Outcome,
    OutcomeFuture, Res, Rng, Worker,
};

fn main() {
    common::run_main("notify", &usage(), |mode, opts, rt| match mode {
        "drain" => Some(rt.block_on(drain(opts))),
        "bare" => Some(rt.block_on(bare(opts))),
        "hook" => Some(rt.block_on(hook(opts))),
        _ => None,
    });
}

fn usage() -> String {
    "usage: notify drain --url URL --smtp ADDR [--n 2000] [--patients 200] [--practitioners 8] \
     [--bundle 100] [--parallel 2] [--timeout 600] [--label NAME]\n       \
     notify bare --amqp URL --smtp ADDR [--n 2000] [--prefetch 16] [--inflight 64] \
     [--timeout 600] [--label NAME]\n       \
     notify hook --url URL --smtp ADDR --hook ADDR [--concurrency 16] [--duration 20] \
     [--warmup 5] [--grace 10] [--settle 60] [--rate 0] [--patients 200] [--practitioners 8] \
     [--label NAME]"
        .to_string()
}

const PREFS: &str = "https://fhir-scheduler.org/fhir/StructureDefinition/notification-preferences";
const TOPIC: &str = "https://fhir-scheduler.org/fhir/SubscriptionTopic/appointment-booked";
const PAYLOAD_CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";

/// CPU seconds this process used so far (user + system; Linux, 100 ticks a second).
fn own_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

// ------------------------------------------------------------------ SMTP sink

/// Accepts every mail; keeps the first arrival of each distinct Message-ID.
#[derive(Clone, Default)]
struct SmtpSink {
    first: Arc<Mutex<HashMap<String, Instant>>>,
    mails: Arc<AtomicUsize>,
    distinct: Arc<AtomicUsize>,
}

impl SmtpSink {
    async fn start(addr: &str) -> Res<Self> {
        let sink = SmtpSink::default();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("SMTP sink on {addr}: {e}"))?;
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.session(conn).await });
            }
        });
        Ok(sink)
    }

    async fn session(&self, conn: tokio::net::TcpStream) {
        let _ = conn.set_nodelay(true);
        let (r, mut w) = conn.into_split();
        let mut lines = BufReader::new(r).lines();
        let _ = w.write_all(b"220 sink ESMTP\r\n").await;
        while let Ok(Some(line)) = lines.next_line().await {
            let cmd = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
            let answer: &[u8] = match cmd.as_str() {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "DATA" => {
                    let _ = w.write_all(b"354 go on\r\n").await;
                    let mut id = None;
                    let mut headers = true;
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l == "." {
                            break;
                        }
                        if headers {
                            if l.is_empty() {
                                headers = false;
                            } else if l.len() > 11 && l[..11].eq_ignore_ascii_case("message-id:") {
                                id = Some(l[11..].trim().to_string());
                            }
                        }
                    }
                    self.got(id);
                    b"250 queued\r\n"
                }
                "QUIT" => {
                    let _ = w.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => b"250 ok\r\n",
            };
            let _ = w.write_all(answer).await;
        }
    }

    fn got(&self, id: Option<String>) {
        let now = Instant::now();
        self.mails.fetch_add(1, Ordering::SeqCst);
        let Some(id) = id else { return };
        let mut first = self.first.lock().unwrap();
        if let std::collections::hash_map::Entry::Vacant(v) = first.entry(id) {
            v.insert(now);
            self.distinct.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn distinct(&self) -> usize {
        self.distinct.load(Ordering::SeqCst)
    }

    /// Waits until `n` distinct Message-IDs arrived (or `deadline`); the arrival of the n-th.
    async fn wait_for(&self, n: usize, deadline: Instant) -> Option<Instant> {
        while self.distinct() < n {
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut times: Vec<Instant> = self.first.lock().unwrap().values().copied().collect();
        times.sort_unstable();
        times.get(n - 1).copied()
    }

    fn first_arrival(&self) -> Option<Instant> {
        self.first.lock().unwrap().values().min().copied()
    }
}

// ------------------------------------------------------------------ dataset

fn patient(rng: &mut Rng, i: usize) -> Value {
    const TZ: [&str; 4] = ["America/Chicago", "Europe/Paris", "America/New_York", "UTC"];
    const LANG: [&str; 2] = ["en", "es"];
    json!({"resourceType": "Patient",
        "name": [{"given": ["Ana"], "family": format!("Bench{i}")}],
        "telecom": [{"system": "email", "value": format!("patient{i}.{}@example.org", rng.next() % 100_000)}],
        "extension": [{"url": PREFS, "extension": [
            {"url": "channel", "valueCode": "email"},
            {"url": "timezone", "valueCode": TZ[i % TZ.len()]},
            {"url": "language", "valueCode": LANG[i % LANG.len()]}]}]})
}

fn practitioner(i: usize) -> Value {
    json!({"resourceType": "Practitioner", "active": true,
        "name": [{"given": ["Sam"], "family": format!("Bench{i}")}]})
}

/// Patients and practitioners for one run (new ones each run: nothing overlaps earlier runs).
struct People {
    patients: Vec<String>,
    practitioners: Vec<String>,
    /// Appointments start at `base` + 5 min × their number.
    base: chrono::DateTime<chrono::Utc>,
}

async fn people(c: &reqwest::Client, url: &str, o: &Opts, seed: u64) -> Res<People> {
    let np = o.num("patients", 200)? as usize;
    let nd = o.num("practitioners", 8)? as usize;
    let mut rng = Rng::new(seed);
    let mut entries = Vec::new();
    for i in 0..nd {
        entries.push(entry("Practitioner", &urn(&mut rng), practitioner(i)));
    }
    for i in 0..np {
        let p = patient(&mut rng, i);
        entries.push(entry("Patient", &urn(&mut rng), p));
    }
    let ids: Vec<String> = post_bundles(c, url, vec![entries], 1, "people")
        .await?
        .into_iter()
        .flatten()
        .collect();
    // 3 days ahead, on the hour.
    let now = chrono::Utc::now() + chrono::Duration::days(3);
    let base = now - chrono::Duration::seconds(now.timestamp() % 3600);
    Ok(People {
        practitioners: ids[..nd].to_vec(),
        patients: ids[nd..].to_vec(),
        base,
    })
}

impl People {
    /// Booked Appointment number `i` (5 minutes long, its own 5 minutes).
    fn appointment(&self, i: usize) -> Value {
        let start = self.base + chrono::Duration::minutes(5 * i as i64);
        let end = start + chrono::Duration::minutes(5);
        let f = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        json!({"resourceType": "Appointment", "status": "booked",
            "start": f(start), "end": f(end),
            "participant": [
                {"actor": {"reference": format!("Patient/{}", self.patients[i % self.patients.len()])}, "status": "accepted"},
                {"actor": {"reference": format!("Practitioner/{}", self.practitioners[i % self.practitioners.len()])}, "status": "accepted"}]})
    }
}

// ------------------------------------------------------------------ drain

async fn drain(o: &Opts) -> Res<()> {
    let url = o.str("url")?;
    let n = o.num("n", 2000)? as usize;
    let bundle = o.num("bundle", 100)?.max(1) as usize;
    let parallel = o.num("parallel", 2)? as usize;
    let timeout = Duration::from_secs(o.num("timeout", 600)?);
    let sink = SmtpSink::start(&o.str("smtp")?).await?;
    let c = client(parallel.max(4))?;
    let people = people(&c, &url, o, 5).await?;
    let mut rng = Rng::new(55);
    let bundles: Vec<Vec<Value>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(bundle)
        .map(|ch| {
            ch.iter()
                .map(|i| entry("Appointment", &urn(&mut rng), people.appointment(*i)))
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    let ids = post_bundles(&c, &url, bundles, parallel, "appointments").await?;
    let created = t0.elapsed();
    let created_n: usize = ids.iter().map(Vec::len).sum();
    let last = sink.wait_for(n, t0 + created + timeout).await;
    // A moment for repeats to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let distinct = sink.distinct();
    let mails = sink.mails.load(Ordering::SeqCst);
    let first = sink
        .first_arrival()
        .map(|t| secs(t.saturating_duration_since(t0)));
    let (drain_s, rate, tail) = match last {
        Some(t) => {
            let d = t.saturating_duration_since(t0);
            (
                Some(secs(d)),
                Some(r2(n as f64 / d.as_secs_f64())),
                Some(secs(d.saturating_sub(created))),
            )
        }
        None => (None, None, None),
    };
    let out = json!({
        "scenario": "drain", "label": o.str_or("label", "server"), "n": n,
        "created": created_n, "create_s": secs(created),
        "creates_per_s": r2(created_n as f64 / created.as_secs_f64()),
        "first_mail_s": first, "drain_s": drain_s, "msgs_per_s": rate, "tail_s": tail,
        "distinct": distinct, "mails": mails, "repeats": mails.saturating_sub(distinct),
        "missing": n.saturating_sub(distinct),
        "bundle": bundle, "parallel": parallel, "generator_cpu_s": own_cpu_s(),
    });
    println!("{out}");
    Ok(())
}

// ------------------------------------------------------------------ bare reference

fn bare_mail(i: usize) -> Res<Message> {
    let body = format!(
        "Hola Ana,\n\nSu cita está reservada para el 2030-03-01 a las 09:00 (America/Chicago).\n\
         Referencia {i}.\n"
    );
    let ics = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nMETHOD:REQUEST\r\n\
         BEGIN:VEVENT\r\nUID:bare-{i}@bench\r\nDTSTAMP:20300101T000000Z\r\n\
         DTSTART:20300301T150000Z\r\nDTEND:20300301T153000Z\r\nSUMMARY:Cita\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    Message::builder()
        .from(
            "fhir-scheduler@localhost"
                .parse::<Mailbox>()
                .map_err(|e| e.to_string())?,
        )
        .to(format!("patient{i}@example.org")
            .parse::<Mailbox>()
            .map_err(|e| e.to_string())?)
        .subject("Su cita está reservada")
        .message_id(Some(format!("<bare-{i}@bench>")))
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(body))
                .singlepart(
                    Attachment::new("appointment.ics".into()).body(
                        ics,
                        ContentType::parse("text/calendar; charset=utf-8; method=REQUEST")
                            .map_err(|e| e.to_string())?,
                    ),
                ),
        )
        .map_err(|e| e.to_string())
}

async fn bare(o: &Opts) -> Res<()> {
    let amqp = o.str("amqp")?;
    let n = o.num("n", 2000)? as usize;
    let prefetch = o.num("prefetch", 16)?.clamp(1, 1000) as u16;
    let inflight = o.num("inflight", 64)?.max(1) as usize;
    let timeout = Duration::from_secs(o.num("timeout", 600)?);
    let smtp = o.str("smtp")?;
    let sink = SmtpSink::start(&smtp).await?;
    let smtp_url = format!("smtp://{smtp}");
    let queue = "notify-bench.bare";
    let e = |e: lapin::Error| e.to_string();
    let conn = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .map_err(e)?;
    let publisher = conn.create_channel().await.map_err(e)?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    publisher
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .map_err(e)?;
    publisher
        .queue_purge(queue.into(), Default::default())
        .await
        .map_err(e)?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(e)?;
    let consuming = conn.create_channel().await.map_err(e)?;
    consuming
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(e)?;
    let consumer = consuming
        .basic_consume(
            queue.into(),
            "bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    let failures = Arc::new(AtomicUsize::new(0));
    let f2 = failures.clone();
    let consume = tokio::spawn(async move {
        consumer
            .for_each_concurrent(usize::from(prefetch), |d| {
                let smtp_url = smtp_url.clone();
                let failures = f2.clone();
                async move {
                    let Ok(d) = d else { return };
                    let i: usize = std::str::from_utf8(&d.data)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let sent = match (
                        bare_mail(i),
                        AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp_url),
                    ) {
                        (Ok(mail), Ok(t)) => t
                            .timeout(Some(Duration::from_secs(30)))
                            .build()
                            .send(mail)
                            .await
                            .is_ok(),
                        _ => false,
                    };
                    if !sent {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = d.ack(BasicAckOptions::default()).await;
                }
            })
            .await
    });
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let mut confirms = Vec::new();
        for j in i..(i + inflight).min(n) {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(j.to_string().into());
            let c = publisher
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    j.to_string().as_bytes(),
                    props,
                )
                .await
                .map_err(e)?;
            confirms.push(c);
        }
        i = (i + inflight).min(n);
        for c in confirms {
            match c.await.map_err(e)? {
                Confirmation::Ack(_) => {}
                other => return Err(format!("publish not confirmed: {other:?}")),
            }
        }
    }
    let published = t0.elapsed();
    let last = sink.wait_for(n, t0 + published + timeout).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    consume.abort();
    let _ = publisher
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    let distinct = sink.distinct();
    let mails = sink.mails.load(Ordering::SeqCst);
    let (drain_s, rate, tail) = match last {
        Some(t) => {
            let d = t.saturating_duration_since(t0);
            (
                Some(secs(d)),
                Some(r2(n as f64 / d.as_secs_f64())),
                Some(secs(d.saturating_sub(published))),
            )
        }
        None => (None, None, None),
    };
    let out = json!({
        "scenario": "drain", "label": o.str_or("label", "bare"), "n": n,
        "created": n, "create_s": secs(published),
        "creates_per_s": r2(n as f64 / published.as_secs_f64()),
        "first_mail_s": sink.first_arrival().map(|t| secs(t.saturating_duration_since(t0))),
        "drain_s": drain_s, "msgs_per_s": rate, "tail_s": tail,
        "distinct": distinct, "mails": mails, "repeats": mails.saturating_sub(distinct),
        "missing": n.saturating_sub(distinct), "send_failures": failures.load(Ordering::SeqCst),
        "prefetch": prefetch, "inflight": inflight, "generator_cpu_s": own_cpu_s(),
    });
    println!("{out}");
    Ok(())
}

// ------------------------------------------------------------------ rest-hook latency

/// First arrival per notified Appointment id, and notifications by type.
#[derive(Clone, Default)]
struct Hook {
    first: Arc<Mutex<HashMap<String, Instant>>>,
    kinds: Arc<Mutex<HashMap<String, usize>>>,
    repeats: Arc<AtomicUsize>,
}

async fn hook_post(
    axum::extract::State(h): axum::extract::State<Hook>,
    body: String,
) -> axum::http::StatusCode {
    let now = Instant::now();
    let Ok(b) = serde_json::from_str::<Value>(&body) else {
        return axum::http::StatusCode::OK;
    };
    let entries = b["entry"].as_array().cloned().unwrap_or_default();
    let kind = entries
        .first()
        .and_then(|e| e["resource"]["parameter"].as_array())
        .and_then(|ps| ps.iter().find(|p| p["name"] == "type"))
        .and_then(|p| p["valueCode"].as_str())
        .unwrap_or("?")
        .to_string();
    *h.kinds.lock().unwrap().entry(kind).or_default() += 1;
    let mut first = h.first.lock().unwrap();
    for e in entries.iter().skip(1) {
        let r = e["request"]["url"]
            .as_str()
            .or(e["fullUrl"].as_str())
            .unwrap_or_default();
        let Some(id) = r.rsplit_once("Appointment/").map(|(_, id)| id) else {
            continue;
        };
        let id = id.split('/').next().unwrap_or(id).to_string();
        match first.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                h.repeats.fetch_add(1, Ordering::SeqCst);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
            }
        }
    }
    axum::http::StatusCode::OK
}

struct Booker {
    c: reqwest::Client,
    url: String,
    people: Arc<People>,
    next: Arc<AtomicU64>,
    booked: Arc<Mutex<Vec<(String, Instant)>>>,
    /// With `--rate`: booking `i` starts no earlier than `start + i / rate`.
    pace: Option<(Instant, f64)>,
}

impl Booker {
    async fn book(&mut self) -> Outcome {
        let i = self.next.fetch_add(1, Ordering::SeqCst) as usize;
        if let Some((start, rate)) = self.pace {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        }
        let body = self.people.appointment(i).to_string();
        let r = self
            .c
            .post(format!("{}/Appointment", self.url))
            .header("Content-Type", "application/fhir+json")
            .header("Accept", "application/fhir+json")
            .body(body)
            .send()
            .await;
        let resp = match r {
            Ok(r) => r,
            Err(e) => return Outcome::error(0, format!("transport: {e}")),
        };
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::error(0, format!("body: {e}")),
        };
        // The 201 is in hand once the whole answer is read.
        let at = Instant::now();
        match status.as_u16() {
            200 | 201 => {
                let id = location
                    .as_deref()
                    .and_then(|l| l.split("Appointment/").nth(1))
                    .and_then(|rest| rest.split('/').next())
                    .map(String::from)
                    .or_else(|| {
                        serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(String::from))
                    });
                match id {
                    Some(id) => {
                        self.booked.lock().unwrap().push((id, at));
                        Outcome::of(Class::Ok, 0)
                    }
                    None => Outcome::error(0, "201 without an id".into()),
                }
            }
            409 => Outcome::of(Class::Conflict, 0),
            429 => Outcome::of(Class::Throttled, 0),
            s => Outcome::error(0, format!("HTTP {s}: {}", common::head(&bytes, 300))),
        }
    }
}

impl Worker for Booker {
    fn one(&mut self) -> OutcomeFuture<'_> {
        Box::pin(self.book())
    }
}

async fn hook(o: &Opts) -> Res<()> {
    let url = o.str("url")?;
    let conc = o.num("concurrency", 16)?.max(1) as usize;
    let duration = Duration::from_secs(o.num("duration", 20)?);
    let warmup = Duration::from_secs(o.num("warmup", 5)?);
    let grace = Duration::from_secs(o.num("grace", 10)?);
    let settle = Duration::from_secs(o.num("settle", 60)?);
    let sink = SmtpSink::start(&o.str("smtp")?).await?;
    let hook_addr = o.str("hook")?;
    let h = Hook::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook_post))
        .with_state(h.clone());
    let listener = tokio::net::TcpListener::bind(&hook_addr)
        .await
        .map_err(|e| format!("hook receiver on {hook_addr}: {e}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = client(conc + 4)?;
    let people = Arc::new(people(&c, &url, o, 7).await?);

    // The subscription: every booking, id-only; active once the handshake went through.
    let sub = json!({"resourceType": "Subscription", "status": "requested",
        "reason": "notify benchmark", "criteria": TOPIC,
        "channel": {"type": "rest-hook", "endpoint": format!("http://{hook_addr}/hook"),
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "id-only"}]}}});
    let (status, body) = common::send(
        c.post(format!("{url}/Subscription"))
            .header("Content-Type", "application/fhir+json")
            .body(sub.to_string()),
    )
    .await?;
    if !status.is_success() {
        return Err(format!(
            "Subscription: HTTP {status}: {}",
            common::head(&body, 500)
        ));
    }
    let sub_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(String::from))
        .ok_or("Subscription: no id")?;
    let t_sub = Instant::now();
    loop {
        let (_, body) = common::send(c.get(format!("{url}/Subscription/{sub_id}"))).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        if v["status"] == "active" {
            break;
        }
        if t_sub.elapsed() > Duration::from_secs(60) {
            return Err(format!("the Subscription stayed {}", v["status"]));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let activated = t_sub.elapsed();

    let next = Arc::new(AtomicU64::new(0));
    let booked = Arc::new(Mutex::new(Vec::new()));
    let rate = o.num("rate", 0)?;
    let pace = (rate > 0).then(|| (Instant::now(), rate as f64));
    let workers: Vec<Booker> = (0..conc)
        .map(|_| Booker {
            c: c.clone(),
            url: url.clone(),
            people: people.clone(),
            next: next.clone(),
            booked: booked.clone(),
            pace,
        })
        .collect();
    let start = Instant::now();
    let run = closed_loop(workers, warmup, duration, grace).await?;
    let (warm_end, end) = (start + warmup, start + warmup + duration);
    let booked = booked.lock().unwrap().clone();
    // Wait for the last notifications.
    let deadline = Instant::now() + settle;
    loop {
        let n = {
            let first = h.first.lock().unwrap();
            booked
                .iter()
                .filter(|(id, _)| first.contains_key(id))
                .count()
        };
        if n == booked.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = end.elapsed();
    // The Subscription goes: a later run on this server would otherwise get its notifications
    // too (same receiver address) and every event twice.
    let (status, body) = common::send(c.delete(format!("{url}/Subscription/{sub_id}"))).await?;
    if !status.is_success() {
        eprintln!(
            "notify: DELETE Subscription/{sub_id}: HTTP {status}: {}",
            common::head(&body, 300)
        );
    }
    let first = h.first.lock().unwrap().clone();
    let mut lat = Vec::new();
    let (mut measured, mut missed, mut early) = (0usize, 0usize, 0usize);
    for (id, at) in &booked {
        if *at < warm_end || *at > end {
            continue;
        }
        measured += 1;
        match first.get(id) {
            Some(arr) => {
                if arr < at {
                    early += 1;
                }
                lat.push(arr.saturating_duration_since(*at).as_micros() as u64);
            }
            None => missed += 1,
        }
    }
    // Latency of the first and the last tenth of the window's bookings (booking order): a
    // backlog that grows shows as a later tenth slower than the first.
    let tenth = (lat.len() / 10).max(1).min(lat.len());
    let mut early_tenth = lat[..tenth].to_vec();
    let mut late_tenth = lat[lat.len() - tenth..].to_vec();
    early_tenth.sort_unstable();
    late_tenth.sort_unstable();
    lat.sort_unstable();
    let all_missed = booked
        .iter()
        .filter(|(id, _)| !first.contains_key(id))
        .count();
    let ok = |s: &common::Sample| s.class == Class::Ok;
    let out = json!({
        "scenario": "hook", "label": o.str_or("label", "server"), "concurrency": conc,
        "bookings": run.count(|s| s.in_window && ok(s)), "bookings_per_s": r2(run.rate(ok)),
        "booking_latency": summary(&run.latencies(|s| s.in_window && ok(s))),
        "errors": run.count(|s| s.class == Class::Error),
        "conflicts": run.count(|s| s.class == Class::Conflict),
        "throttled": run.count(|s| s.class == Class::Throttled),
        "unfinished": run.count(|s| s.class == Class::Unfinished),
        "error_sample": run.error_sample,
        "measured": measured, "delivered": measured - missed, "missed": missed,
        "before_201": early,
        "delivery": summary(&lat),
        "delivery_first_tenth_p50_ms": r2(common::pct(&early_tenth, 50.0)),
        "delivery_last_tenth_p50_ms": r2(common::pct(&late_tenth, 50.0)),
        "rate": rate,
        "booked_total": booked.len(), "missed_total": all_missed,
        "repeats": h.repeats.load(Ordering::SeqCst),
        "notifications": h.kinds.lock().unwrap().clone(),
        "mails": sink.mails.load(Ordering::SeqCst), "mails_distinct": sink.distinct(),
        "subscription_active_s": secs(activated), "waited_after_s": secs(waited),
        "warmup_s": warmup.as_secs(), "duration_s": duration.as_secs(),
        "generator_cpu_s": own_cpu_s(),
    });
    println!("{out}");
    Ok(())
}
