//! Load generator for fhir-scheduler (a `harness = false` bench target; `benches/run.sh` drives it).
//!
//! ```text
//! cargo bench --bench load -- seed --url http://127.0.0.1:8080/fhir --out ids.json
//! cargo bench --bench load -- run  --url http://127.0.0.1:8080/fhir --ids ids.json \
//!     --scenario read|create|search --concurrency 64 --duration 20 --warmup 5 --label sqlite
//! ```
//!
//! `seed` creates the fixed dataset through transaction Bundles of about `--bundle` entries:
//! `--patients` Patients, and `--schedules` Schedules with `--slots-per-schedule` Slots each
//! (hourly 09:00–17:00 from 2030-01-01 on, every third one `busy`, the rest `free`), plus one
//! Practitioner per Bundle as the Schedules' actor. The created Patient and Schedule ids go to
//! `--out` as JSON.
//!
//! `run` keeps `--concurrency` workers, each a closed loop (send, read the whole body, repeat)
//! over a shared pool of keep-alive HTTP/1.1 connections; no request starts after the
//! `--duration` window that follows `--warmup`. Every request completing after the warm-up is
//! recorded. Any response that is not 2xx, and any transport error, is an error: counted,
//! reported (with a sample), not in the latencies. Requests still unanswered `--grace` seconds
//! after the window are abandoned and reported as `unfinished`; their time so far goes into
//! the latencies, which makes p50/p99 lower bounds (`censored: true`).
//! Prints one JSON line: scenario, backend label, requests, errors, unfinished, req/s
//! (successful responses completed inside the window / its length), p50_ms, p99_ms.
//!
//! Scenarios: `read` = `GET Patient/{random seeded id}`; `create` = `POST Patient` (a new
//! ~400-byte Patient each time); `search` = `GET Slot?schedule=Schedule/{random}&
//! start=ge2030-01-{random day in the first 4/5 of the schedule's range}&status=free` (a full
//! default page of 20).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Res<T> = Result<T, String>;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("load: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Res<()> {
    // `cargo bench` passes `--bench` to harness-less targets: ignore it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(mode) = args.first().cloned() else {
        return Err(usage());
    };
    let opts = parse_opts(&args[1..])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match mode.as_str() {
        "seed" => rt.block_on(seed(&opts)),
        "run" => rt.block_on(run(&opts)),
        _ => Err(usage()),
    }
}

fn usage() -> String {
    "usage: load seed --url URL --out FILE [--patients 10000] [--schedules 500] \
     [--slots-per-schedule 200] [--bundle 1000] [--parallel 2]\n       \
     load run --url URL --ids FILE --scenario read|create|search [--concurrency 64] \
     [--duration 20] [--warmup 5] [--grace 10] [--label NAME]"
        .to_string()
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn str(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required\n{}", usage()))
    }
    fn str_or(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num(&self, k: &str, d: u64) -> Res<u64> {
        match self.0.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: not a number: {v}")),
        }
    }
}

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut m = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(k) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument {a}\n{}", usage()));
        };
        let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
        m.insert(k.to_string(), v.clone());
    }
    Ok(Opts(m))
}

/// Requests carry `Authorization: Bearer $FHIR_TOKEN` when it is set (the server requires a
/// token unless it runs with `--auth off`).
fn client(pool: usize) -> Res<reqwest::Client> {
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

/// xorshift64*: enough randomness for picking ids, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FAMILIES: [&str; 12] = [
    "Garcia", "Smith", "Nguyen", "Okafor", "Rossi", "Kowalski", "Haddad", "Tanaka", "Silva",
    "Johnson", "Ivanova", "Dubois",
];
const GIVEN: [&str; 10] = [
    "Ana", "John", "Linh", "Chidi", "Jonas", "Giulia", "Marta", "Omar", "Yuki", "Pedro",
];

/// A Patient of about 400 bytes.
fn patient(rng: &mut Rng, key: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:fhir-scheduler:bench", "value": key}],
        "active": true,
        "name": [{"family": FAMILIES[rng.below(FAMILIES.len())],
                  "given": [GIVEN[rng.below(GIVEN.len())]]}],
        "telecom": [{"system": "phone", "value": format!("+1-555-{:04}", rng.below(10000)), "use": "mobile"}],
        "gender": if rng.below(2) == 0 { "female" } else { "male" },
        "birthDate": format!("{}-{:02}-{:02}", 1940 + rng.below(80), 1 + rng.below(12), 1 + rng.below(28)),
        "address": [{"line": [format!("{} Main St", 1 + rng.below(999))], "city": "Springfield",
                     "state": "IL", "postalCode": "62701", "country": "US"}]
    })
}

/// `2030-01-01` plus `days`, as `YYYY-MM-DD` (2030 is not a leap year; the range stays in it).
fn day_2030(days: usize) -> String {
    const LEN: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = days % 365;
    let mut m = 0;
    while d >= LEN[m] {
        d -= LEN[m];
        m += 1;
    }
    format!("2030-{:02}-{:02}", m + 1, d + 1)
}

const SLOTS_PER_DAY: usize = 8;

fn entry(rt: &str, full: &str, resource: Value) -> Value {
    json!({"fullUrl": full, "resource": resource, "request": {"method": "POST", "url": rt}})
}

/// Posts a transaction Bundle; returns the ids of the created resources, in entry order.
async fn post_bundle(c: &reqwest::Client, url: &str, entries: Vec<Value>) -> Res<Vec<String>> {
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

async fn seed(o: &Opts) -> Res<()> {
    let url = o.str("url")?;
    let out = o.str("out")?;
    let patients = o.num("patients", 10_000)? as usize;
    let schedules = o.num("schedules", 500)? as usize;
    let per = o.num("slots-per-schedule", 200)? as usize;
    let bundle = o.num("bundle", 1000)?.max(1) as usize;
    let parallel = o.num("parallel", 2)?.max(1) as usize;
    if per.div_ceil(SLOTS_PER_DAY) > 365 {
        return Err("--slots-per-schedule: at most 365 days of slots".into());
    }
    let c = client(parallel)?;
    let t0 = Instant::now();
    let mut rng = Rng::new(0x5eed);

    // Build every Bundle first, then post them `parallel` at a time.
    enum Kind {
        Patients,
        Schedules(usize),
    }
    let mut bundles: Vec<(Kind, Vec<Value>)> = Vec::new();
    let mut p = 0;
    while p < patients {
        let n = bundle.min(patients - p);
        let entries = (p..p + n)
            .map(|i| {
                let full = format!("urn:uuid:{}", uuid::Uuid::new_v4());
                entry("Patient", &full, patient(&mut rng, &format!("pat-{i}")))
            })
            .collect();
        bundles.push((Kind::Patients, entries));
        p += n;
    }
    let sched_per_bundle = (bundle / per.max(1)).max(1);
    let mut s = 0;
    while s < schedules {
        let k = sched_per_bundle.min(schedules - s);
        let mut entries = Vec::with_capacity(1 + k * (per + 1));
        let pr_full = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        entries.push(entry(
            "Practitioner",
            &pr_full,
            json!({"resourceType": "Practitioner", "active": true,
                   "identifier": [{"system": "urn:fhir-scheduler:bench", "value": format!("pr-{s}")}],
                   "name": [{"family": FAMILIES[s % FAMILIES.len()], "given": [GIVEN[s % GIVEN.len()]], "prefix": ["Dr."]}]}),
        ));
        for j in s..s + k {
            let sc_full = format!("urn:uuid:{}", uuid::Uuid::new_v4());
            entries.push(entry(
                "Schedule",
                &sc_full,
                json!({"resourceType": "Schedule", "active": true,
                       "identifier": [{"system": "urn:fhir-scheduler:bench", "value": format!("sched-{j}")}],
                       "serviceType": [{"text": "General practice"}],
                       "actor": [{"reference": pr_full}],
                       "planningHorizon": {"start": "2030-01-01T00:00:00Z", "end": format!("{}T00:00:00Z", day_2030(per.div_ceil(SLOTS_PER_DAY)))}}),
            ));
            for n in 0..per {
                let day = day_2030(n / SLOTS_PER_DAY);
                let h = 9 + n % SLOTS_PER_DAY;
                let full = format!("urn:uuid:{}", uuid::Uuid::new_v4());
                entries.push(entry(
                    "Slot",
                    &full,
                    json!({"resourceType": "Slot",
                           "schedule": {"reference": sc_full},
                           "status": if n % 3 == 0 { "busy" } else { "free" },
                           "serviceType": [{"text": "General practice"}],
                           "start": format!("{day}T{h:02}:00:00Z"),
                           "end": format!("{day}T{:02}:00:00Z", h + 1)}),
                ));
            }
        }
        bundles.push((Kind::Schedules(k), entries));
        s += k;
    }
    let total = bundles.len();
    let mut patient_ids = Vec::with_capacity(patients);
    let mut schedule_ids = Vec::with_capacity(schedules);
    let mut set = tokio::task::JoinSet::new();
    let mut queue = bundles.into_iter().enumerate();
    let mut results: Vec<Option<(Kind, Vec<String>)>> = (0..total).map(|_| None).collect();
    let mut done = 0;
    loop {
        while set.len() < parallel {
            let Some((i, (kind, entries))) = queue.next() else {
                break;
            };
            let (c, url) = (c.clone(), url.clone());
            set.spawn(async move { (i, kind, post_bundle(&c, &url, entries).await) });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, kind, ids) = joined.map_err(|e| e.to_string())?;
        results[i] = Some((kind, ids?));
        done += 1;
        if done % 10 == 0 || done == total {
            eprintln!(
                "seed: {done}/{total} bundles ({:.0} s)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    for (kind, ids) in results.into_iter().flatten() {
        match kind {
            Kind::Patients => patient_ids.extend(ids),
            // [Practitioner, (Schedule, Slot × per) × k]
            Kind::Schedules(k) => {
                for j in 0..k {
                    schedule_ids.push(ids[1 + j * (per + 1)].clone());
                }
            }
        }
    }
    let doc = json!({"patients": patient_ids, "schedules": schedule_ids,
                     "slots_per_schedule": per, "slot_days": per.div_ceil(SLOTS_PER_DAY)});
    std::fs::write(&out, doc.to_string()).map_err(|e| format!("{out}: {e}"))?;
    // Sanity check: a search the `search` scenario makes must find what was seeded.
    let sid = schedule_ids.first().ok_or("no schedules")?;
    let v: Value = c
        .get(format!(
            "{url}/Slot?schedule=Schedule/{sid}&start=ge2030-01-01&status=free&_count=1000"
        ))
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let found = v["entry"].as_array().map_or(0, Vec::len);
    let expected = (0..per).filter(|n| n % 3 != 0).count();
    eprintln!(
        "seed: {} patients, {} schedules × {per} slots in {:.1} s; check: {found} free slots \
         found for Schedule/{sid}, {expected} expected",
        patient_ids.len(),
        schedule_ids.len(),
        t0.elapsed().as_secs_f64()
    );
    if found != expected {
        return Err("seed check failed".into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Read,
    Create,
    Search,
}

struct Dataset {
    patients: Vec<String>,
    schedules: Vec<String>,
    slot_days: usize,
}

#[derive(Default)]
struct Tally {
    /// Successful requests completed after the warm-up, and unfinished ones (time so far).
    latencies_us: Vec<u64>,
    /// Successful requests completed inside the measured window.
    ok_in_window: u64,
    errors: u64,
    unfinished: u64,
    error_sample: Option<String>,
}

async fn one(
    c: &reqwest::Client,
    base: &str,
    sc: Scenario,
    ds: &Dataset,
    rng: &mut Rng,
) -> Result<(), String> {
    let req = match sc {
        Scenario::Read => {
            let id = &ds.patients[rng.below(ds.patients.len())];
            c.get(format!("{base}/Patient/{id}"))
        }
        Scenario::Search => {
            let id = &ds.schedules[rng.below(ds.schedules.len())];
            let day = day_2030(rng.below((ds.slot_days * 4 / 5).max(1)));
            c.get(format!(
                "{base}/Slot?schedule=Schedule/{id}&start=ge{day}&status=free"
            ))
        }
        Scenario::Create => {
            let key = uuid::Uuid::new_v4().to_string();
            c.post(format!("{base}/Patient"))
                .header("Content-Type", "application/fhir+json")
                .body(patient(rng, &key).to_string())
        }
    };
    let resp = req
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    // Read the whole body: the connection goes back to the pool only then.
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

async fn run(o: &Opts) -> Res<()> {
    let base = o.str("url")?;
    let ids_file = o.str("ids")?;
    let sc = match o.str("scenario")?.as_str() {
        "read" => Scenario::Read,
        "create" => Scenario::Create,
        "search" => Scenario::Search,
        s => return Err(format!("unknown scenario {s}")),
    };
    let conc = o.num("concurrency", 64)?.max(1) as usize;
    let duration = Duration::from_secs(o.num("duration", 20)?.max(1));
    let warmup = Duration::from_secs(o.num("warmup", 5)?);
    let grace = Duration::from_secs(o.num("grace", 10)?);
    let label = o.str_or("label", "unknown");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&ids_file).map_err(|e| format!("{ids_file}: {e}"))?,
    )
    .map_err(|e| format!("{ids_file}: {e}"))?;
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ds = Arc::new(Dataset {
        patients: strings("patients"),
        schedules: strings("schedules"),
        slot_days: v["slot_days"].as_u64().unwrap_or(25) as usize,
    });
    if ds.patients.is_empty() || ds.schedules.is_empty() {
        return Err(format!("{ids_file}: no patients or schedules"));
    }
    let c = client(conc)?;
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + duration;
    // Requests still unanswered then are abandoned (every run is bounded).
    let hard_stop = tokio::time::Instant::from_std(end + grace);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..conc {
        let (c, base, ds) = (c.clone(), base.clone(), ds.clone());
        set.spawn(async move {
            let mut rng = Rng::new(w as u64 + 1 + start.elapsed().as_nanos() as u64);
            let mut t = Tally::default();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = tokio::time::timeout_at(hard_stop, one(&c, &base, sc, &ds, &mut rng)).await;
                let done = Instant::now();
                let us = (done - t0).as_micros() as u64;
                match r {
                    // Completed during the warm-up: not measured.
                    _ if done < warm_end => {}
                    Ok(Ok(())) => {
                        t.latencies_us.push(us);
                        if done <= end {
                            t.ok_in_window += 1;
                        }
                    }
                    Ok(Err(e)) => {
                        t.errors += 1;
                        t.error_sample.get_or_insert(e);
                    }
                    Err(_) => {
                        t.unfinished += 1;
                        t.latencies_us.push(us);
                        break;
                    }
                }
            }
            t
        });
    }
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        let t = t.map_err(|e| e.to_string())?;
        all.latencies_us.extend(t.latencies_us);
        all.ok_in_window += t.ok_in_window;
        all.errors += t.errors;
        all.unfinished += t.unfinished;
        if all.error_sample.is_none() {
            all.error_sample = t.error_sample;
        }
    }
    let window = duration.as_secs_f64();
    let mut lat = all.latencies_us;
    lat.sort_unstable();
    let completed_ok = lat.len() as u64 - all.unfinished;
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * lat.len() as f64).ceil().max(1.0) as usize;
        lat[rank.min(lat.len()) - 1] as f64 / 1000.0
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0
    };
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let name = match sc {
        Scenario::Read => "read",
        Scenario::Create => "create",
        Scenario::Search => "search",
    };
    let line = json!({
        "scenario": name,
        "backend": label,
        "concurrency": conc,
        "window_s": r2(window),
        "requests": completed_ok + all.errors + all.unfinished,
        "errors": all.errors,
        "unfinished": all.unfinished,
        "censored": all.unfinished > 0,
        "rps": r2(all.ok_in_window as f64 / window),
        "p50_ms": r2(pct(50.0)),
        "p99_ms": r2(pct(99.0)),
        "mean_ms": r2(mean),
        "max_ms": r2(lat.last().copied().unwrap_or(0) as f64 / 1000.0),
        "error_sample": all.error_sample,
    });
    println!("{line}");
    if all.errors > 0 || all.unfinished > 0 {
        eprintln!(
            "load: {} errors, {} unfinished ({name}, {label})",
            all.errors, all.unfinished
        );
    }
    Ok(())
}
