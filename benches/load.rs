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

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{
    client, closed_loop, day_2030, entry, head, post_bundles, r2, send, Class, Opts, Outcome,
    OutcomeFuture, Res, Rng, Worker,
};

fn main() {
    common::run_main("load", &usage(), |mode, opts, rt| match mode {
        "seed" => Some(rt.block_on(seed(opts))),
        "run" => Some(rt.block_on(run(opts))),
        _ => None,
    });
}

fn usage() -> String {
    "usage: load seed --url URL --out FILE [--patients 10000] [--schedules 500] \
     [--slots-per-schedule 200] [--bundle 1000] [--parallel 2]\n       \
     load run --url URL --ids FILE --scenario read|create|search [--concurrency 64] \
     [--duration 20] [--warmup 5] [--grace 10] [--label NAME]"
        .to_string()
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

const SLOTS_PER_DAY: usize = 8;

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
    let (kinds, bundles): (Vec<Kind>, Vec<Vec<Value>>) = bundles.into_iter().unzip();
    let results = post_bundles(&c, &url, bundles, parallel, "seed").await?;
    let mut patient_ids = Vec::with_capacity(patients);
    let mut schedule_ids = Vec::with_capacity(schedules);
    for (kind, ids) in kinds.into_iter().zip(results) {
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
    let (status, body) = send(req).await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", head(&body, 300)))
    }
}

struct LoadWorker {
    c: reqwest::Client,
    base: String,
    sc: Scenario,
    ds: Arc<Dataset>,
    rng: Rng,
}

impl Worker for LoadWorker {
    fn one(&mut self) -> OutcomeFuture<'_> {
        Box::pin(async move {
            match one(&self.c, &self.base, self.sc, &self.ds, &mut self.rng).await {
                Ok(()) => Outcome::of(Class::Ok, 0),
                Err(e) => Outcome::error(0, e),
            }
        })
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
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    let workers = (0..conc)
        .map(|w| LoadWorker {
            c: c.clone(),
            base: base.clone(),
            sc,
            ds: ds.clone(),
            rng: Rng::new(w as u64 + 1 + seed),
        })
        .collect();
    let run = closed_loop(workers, warmup, duration, grace).await?;
    // Latencies: successful requests and abandoned ones (time so far).
    let lat = run.latencies(|s| matches!(s.class, Class::Ok | Class::Unfinished));
    let errors = run.count(|s| s.class == Class::Error);
    let unfinished = run.count(|s| s.class == Class::Unfinished);
    let completed_ok = run.count(|s| s.class == Class::Ok);
    let name = match sc {
        Scenario::Read => "read",
        Scenario::Create => "create",
        Scenario::Search => "search",
    };
    let stats = common::summary(&lat);
    let line = json!({
        "scenario": name,
        "backend": label,
        "concurrency": conc,
        "window_s": r2(run.window_s),
        "requests": completed_ok + errors + unfinished,
        "errors": errors,
        "unfinished": unfinished,
        "censored": unfinished > 0,
        "rps": r2(run.rate(|s| s.class == Class::Ok)),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "mean_ms": stats["mean_ms"],
        "max_ms": stats["max_ms"],
        "error_sample": run.error_sample,
    });
    println!("{line}");
    if errors > 0 || unfinished > 0 {
        eprintln!("load: {errors} errors, {unfinished} unfinished ({name}, {label})");
    }
    Ok(())
}
