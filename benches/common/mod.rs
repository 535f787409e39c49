//! Shared by the load generators `benches/load.rs` and `benches/booking.rs` (each a
//! `harness = false` bench target): command-line options, the HTTP client, a seeded RNG,
//! transaction Bundles posted in parallel, and the closed-loop runner with its percentiles.
//!
//! The runner keeps `concurrency` workers, each a closed loop (send, read the whole body,
//! repeat) over a shared pool of keep-alive HTTP/1.1 connections; no request starts after the
//! `duration` window that follows `warmup`. Every request completing after the warm-up is
//! recorded with its outcome class. Requests still unanswered `grace` seconds after the window
//! are abandoned and recorded as `Unfinished` with their time so far (percentiles that include
//! them are lower bounds).

// Each bench target uses a part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub type Res<T> = Result<T, String>;

/// The arguments after the program name (`cargo bench` passes `--bench` to harness-less
/// targets: it is dropped).
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// `--key value` options.
pub struct Opts {
    map: HashMap<String, String>,
    usage: String,
}

impl Opts {
    pub fn parse(args: &[String], usage: &str) -> Res<Opts> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(k) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a}\n{usage}"));
            };
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            map.insert(k.to_string(), v.clone());
        }
        Ok(Opts {
            map,
            usage: usage.to_string(),
        })
    }
    pub fn str(&self, k: &str) -> Res<String> {
        self.map
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required\n{}", self.usage))
    }
    pub fn str_or(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    pub fn num(&self, k: &str, d: u64) -> Res<u64> {
        match self.map.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: not a number: {v}")),
        }
    }
}

/// A multi-threaded runtime for `main`.
fn runtime() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// A benchmark binary's `main`: `<mode> [options]` from the command line; `dispatch` runs the
/// mode on a fresh runtime (`None`: no such mode, the usage is printed). An error is printed
/// as `name: error` and ends the process with status 1.
pub fn run_main(
    name: &str,
    usage: &str,
    dispatch: impl FnOnce(&str, &Opts, &tokio::runtime::Runtime) -> Option<Res<()>>,
) {
    let result = (|| {
        let args = args();
        let mode = args.first().cloned().ok_or_else(|| usage.to_string())?;
        let opts = Opts::parse(&args[1..], usage)?;
        let rt = runtime()?;
        dispatch(&mode, &opts, &rt).unwrap_or_else(|| Err(usage.to_string()))
    })();
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// Requests carry `Authorization: Bearer $FHIR_TOKEN` when it is set (the server requires a
/// token unless it runs with `--auth off`).
pub fn client(pool: usize) -> Res<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(t) = std::env::var("FHIR_TOKEN") {
        let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|e| e.to_string())?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())
}

/// xorshift64*: enough randomness for picking ids, no dependency; a fixed seed gives a fixed
/// sequence (the datasets are seeded with one).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// A `urn:uuid:` full URL that is the same for the same seed (`Uuid::new_v4` would not be).
pub fn urn(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "urn:uuid:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// `2030-01-01` plus `days`, as `YYYY-MM-DD` (2030 is not a leap year; the range stays in it).
pub fn day_2030(days: usize) -> String {
    const LEN: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = days % 365;
    let mut m = 0;
    while d >= LEN[m] {
        d -= LEN[m];
        m += 1;
    }
    format!("2030-{:02}-{:02}", m + 1, d + 1)
}

/// A transaction Bundle entry creating `resource` as `full` (`urn:uuid:…`).
pub fn entry(rt: &str, full: &str, resource: Value) -> Value {
    json!({"fullUrl": full, "resource": resource, "request": {"method": "POST", "url": rt}})
}

/// Posts a transaction Bundle; returns the ids of the created resources, in entry order.
pub async fn post_bundle(c: &reqwest::Client, url: &str, entries: Vec<Value>) -> Res<Vec<String>> {
    let n = entries.len();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let resp = c
        .post(url)
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "transaction: HTTP {status}: {}",
            text.chars().take(500).collect::<String>()
        ));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("transaction response: {e}"))?;
    let out: Vec<String> = v["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["response"]["location"].as_str())
                .filter_map(|l| l.split('/').nth(1).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if out.len() != n {
        return Err(format!(
            "transaction: {n} entries sent, {} locations back",
            out.len()
        ));
    }
    Ok(out)
}

/// Posts `bundles` (entry lists) as transactions, `parallel` at a time; returns the created ids
/// of each, in the order given. Progress goes to stderr, prefixed with `what`.
pub async fn post_bundles(
    c: &reqwest::Client,
    url: &str,
    bundles: Vec<Vec<Value>>,
    parallel: usize,
    what: &str,
) -> Res<Vec<Vec<String>>> {
    let t0 = Instant::now();
    let total = bundles.len();
    let mut results: Vec<Option<Vec<String>>> = (0..total).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    let mut queue = bundles.into_iter().enumerate();
    let mut done = 0;
    loop {
        while set.len() < parallel.max(1) {
            let Some((i, entries)) = queue.next() else {
                break;
            };
            let (c, url) = (c.clone(), url.to_string());
            set.spawn(async move { (i, post_bundle(&c, &url, entries).await) });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, ids) = joined.map_err(|e| e.to_string())?;
        results[i] = Some(ids?);
        done += 1;
        if done % 10 == 0 || done == total {
            eprintln!(
                "{what}: {done}/{total} bundles ({:.0} s)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(results.into_iter().flatten().collect())
}

// ------------------------------------------------------------------ the closed-loop runner

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Ok,
    /// 409: an answer, but not the one asked for (the slot was taken).
    Conflict,
    /// 429: refused by the admission queue.
    Throttled,
    /// Anything else, transport errors included.
    Error,
    /// Still unanswered `grace` seconds after the window: abandoned.
    Unfinished,
}

/// What a worker reports for one request: its class, a tag (the scenario's request kind, an
/// index into its list of kind names), a count it wants summed (e.g. results returned), and
/// for errors a description.
pub struct Outcome {
    pub class: Class,
    pub tag: u8,
    pub value: u32,
    pub detail: Option<String>,
}

impl Outcome {
    pub fn of(class: Class, tag: u8) -> Self {
        Self {
            class,
            tag,
            value: 0,
            detail: None,
        }
    }
    pub fn error(tag: u8, detail: String) -> Self {
        Self {
            class: Class::Error,
            tag,
            value: 0,
            detail: Some(detail),
        }
    }
}

pub type OutcomeFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One client of the closed loop.
pub trait Worker: Send + 'static {
    fn one(&mut self) -> OutcomeFuture<'_>;
}

/// One recorded request.
#[derive(Clone, Copy)]
pub struct Sample {
    pub us: u64,
    pub class: Class,
    pub tag: u8,
    pub value: u32,
    /// Completed inside the measured window.
    pub in_window: bool,
}

/// What a run recorded (requests completed after the warm-up, and abandoned ones).
pub struct Run {
    pub samples: Vec<Sample>,
    pub window_s: f64,
    pub error_sample: Option<String>,
}

impl Run {
    pub fn count(&self, f: impl Fn(&Sample) -> bool) -> u64 {
        self.samples.iter().filter(|s| f(s)).count() as u64
    }
    /// Requests matching `f` completed inside the window, per second of it.
    pub fn rate(&self, f: impl Fn(&Sample) -> bool) -> f64 {
        self.count(|s| s.in_window && f(s)) as f64 / self.window_s
    }
    /// Latencies (µs, sorted) of the requests matching `f`.
    pub fn latencies(&self, f: impl Fn(&Sample) -> bool) -> Vec<u64> {
        let mut v: Vec<u64> = self.samples.iter().filter(|s| f(s)).map(|s| s.us).collect();
        v.sort_unstable();
        v
    }
}

/// The `p`th percentile of sorted µs latencies, in ms (nearest rank).
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

/// Mean of µs latencies, in ms.
pub fn mean_ms(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0
    }
}

/// Rounded to two decimals.
pub fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `{n, p50_ms, p99_ms, mean_ms, max_ms}` of sorted µs latencies.
pub fn summary(lat: &[u64]) -> Value {
    json!({
        "n": lat.len(),
        "p50_ms": r2(pct(lat, 50.0)),
        "p99_ms": r2(pct(lat, 99.0)),
        "mean_ms": r2(mean_ms(lat)),
        "max_ms": r2(lat.last().copied().unwrap_or(0) as f64 / 1000.0),
    })
}

/// Runs `workers` (one task each) for `warmup` + `duration`; see the module comment.
pub async fn closed_loop<W: Worker>(
    workers: Vec<W>,
    warmup: Duration,
    duration: Duration,
    grace: Duration,
) -> Res<Run> {
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + duration;
    // Requests still unanswered then are abandoned (every run is bounded).
    let hard_stop = tokio::time::Instant::from_std(end + grace);
    let mut set = tokio::task::JoinSet::new();
    for mut w in workers {
        set.spawn(async move {
            let mut samples = Vec::new();
            let mut error_sample = None;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = tokio::time::timeout_at(hard_stop, w.one()).await;
                let done = Instant::now();
                // Completed during the warm-up: not measured.
                if done < warm_end {
                    continue;
                }
                let us = (done - t0).as_micros() as u64;
                let (o, stop) = match r {
                    Ok(o) => (o, false),
                    Err(_) => (Outcome::of(Class::Unfinished, 0), true),
                };
                if o.detail.is_some() && error_sample.is_none() {
                    error_sample = o.detail;
                }
                samples.push(Sample {
                    us,
                    class: o.class,
                    tag: o.tag,
                    value: o.value,
                    in_window: done <= end,
                });
                if stop {
                    break;
                }
            }
            (samples, error_sample)
        });
    }
    let mut run = Run {
        samples: Vec::new(),
        window_s: duration.as_secs_f64(),
        error_sample: None,
    };
    while let Some(t) = set.join_next().await {
        let (samples, error_sample) = t.map_err(|e| e.to_string())?;
        run.samples.extend(samples);
        if run.error_sample.is_none() {
            run.error_sample = error_sample;
        }
    }
    Ok(run)
}

/// Sends a request with `Accept: application/fhir+json` and reads the whole body (the
/// connection goes back to the pool only then). Transport failures are `Err`.
pub async fn send(req: reqwest::RequestBuilder) -> Res<(reqwest::StatusCode, Vec<u8>)> {
    let resp = req
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, body.to_vec()))
}

/// The first `n` bytes of a body as text, for error reports.
pub fn head(body: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&body[..body.len().min(n)]).into_owned()
}
