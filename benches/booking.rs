//! Scheduling load generator (issue 3; a `harness = false` bench target, `benches/booking.sh`
//! drives it). Shares its options, client, RNG, Bundles and closed-loop runner with
//! `benches/load.rs` (`benches/common`).
//!
//! ```text
//! cargo bench --bench booking -- seed --url http://127.0.0.1:8080/fhir --out ids.json
//! cargo bench --bench booking -- run  --url http://127.0.0.1:8080/fhir --ids ids.json \
//!     --scenario book|find --concurrency 64 --duration 20 --warmup 5 --label postgres
//! ```
//!
//! `seed` makes a fixed dataset (seeded RNG: the same resources every time): one Organization,
//! `--locations` Locations, and `--practitioners` Practitioners (all speak English, some also
//! Spanish, French, German, Chinese, Arabic or Vietnamese), each with one PractitionerRole (one
//! of 7 specialties, 40 % general practice; one Location, or two for a quarter of them;
//! Mon–Fri 09:00–17:00 in hourly slots) and one Schedule (actors: the role and the
//! practitioner), and `--slots-per-schedule` Slots per Schedule: hourly, 09:00–17:00 UTC on
//! weekdays from Monday 2030-01-07 on (200 slots = 25 weekdays), carrying the specialty.
//! `--slots bundle` (default) posts everything as transaction Bundles of about `--bundle`
//! entries, `--parallel` at a time, every third Slot `busy`, the rest `free`; `--slots generate`
//! posts the practitioners, roles and schedules as Bundles and then calls
//! `Schedule/{id}/$generate-slots` for each schedule (`--parallel` at a time; all free, no
//! specialty on the slots — the generator does not copy it) and reads the slot ids back.
//! The ids go to `--out` as JSON.
//!
//! `run` (the runner of `benches/common`):
//! - `book`: `POST Appointment/$book` with an `appt-resource` Appointment for a free Slot (a new
//!   patient each time, and the slot's practitioner). Clients contend on a hot pool of `--pool`
//!   free slots (seeded order, shuffled): each request picks one of the pool's slots it does not
//!   yet know to be taken, at random, so concurrent clients collide on the same slot; an
//!   answer (201, or 409: taken) takes the slot out of the pool; when fewer than
//!   `--concurrency` remain, the next pool starts. Counted: booked (200/201), conflicts (409),
//!   throttled (429, the admission queue), errors (anything else). Throughput = booked + 409
//!   answers per second; latencies over those answers.
//! - `find`: `GET Appointment/$find?start&end&_count=10` over one weekday (00:00–24:00 UTC) or
//!   a three-hour window, with one filter mix: none (15 %), `specialty` (30 %), `practitioner`
//!   (20 %), `location` (15 %), `location` + `specialty` (10 %), `language` (10 %). Latencies
//!   overall and by kind, with the mean number of proposals returned.
//!
//! Prints one JSON line per run.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{
    client, closed_loop, day_2030, entry, head, post_bundles, r2, send, summary, urn, Class, Opts,
    Outcome, OutcomeFuture, Res, Rng, Worker,
};

fn main() {
    common::run_main("booking", &usage(), |mode, opts, rt| match mode {
        "seed" => Some(rt.block_on(seed(opts))),
        "run" => Some(rt.block_on(run(opts))),
        _ => None,
    });
}

fn usage() -> String {
    "usage: booking seed --url URL --out FILE [--practitioners 5000] [--slots-per-schedule 200] \
     [--locations 20] [--slots bundle|generate] [--bundle 1000] [--parallel 2]\n       \
     booking run --url URL --ids FILE --scenario book|find [--concurrency 64] [--duration 20] \
     [--warmup 5] [--grace 10] [--label NAME] [--pool 2000]"
        .to_string()
}

const EXT: &str = "https://fhir-scheduler.org/fhir/StructureDefinition";
const SNOMED: &str = "http://snomed.info/sct";
const BCP47: &str = "urn:ietf:bcp:47";
/// Specialties (SNOMED CT); the first is drawn for 40 % of the roles, the others evenly.
const SPECIALTIES: [(&str, &str); 7] = [
    ("394814009", "General practice"),
    ("394579002", "Cardiology"),
    ("394582007", "Dermatology"),
    ("394583002", "Endocrinology"),
    ("394584008", "Gastroenterology"),
    ("394591006", "Neurology"),
    ("394537008", "Pediatric specialty"),
];
/// Second languages and the share (%) of practitioners who speak each; everyone speaks `en`.
const LANGUAGES: [(&str, usize); 6] = [
    ("es", 20),
    ("fr", 6),
    ("de", 4),
    ("zh", 4),
    ("ar", 3),
    ("vi", 3),
];
const FAMILIES: [&str; 12] = [
    "Garcia", "Smith", "Nguyen", "Okafor", "Rossi", "Kowalski", "Haddad", "Tanaka", "Silva",
    "Johnson", "Ivanova", "Dubois",
];
const GIVEN: [&str; 10] = [
    "Ana", "John", "Linh", "Chidi", "Jonas", "Giulia", "Marta", "Omar", "Yuki", "Pedro",
];

/// Slot layout: hourly from 09:00 UTC, 8 a day, on weekdays from Monday 2030-01-07 (day 6 of
/// 2030) on.
const SLOTS_PER_DAY: usize = 8;
const FIRST_HOUR: usize = 9;
const FIRST_DAY: usize = 6;

/// Day of 2030 (0 = Jan 1) of weekday number `d` (0 = the first Monday).
fn weekday(d: usize) -> usize {
    FIRST_DAY + d / 5 * 7 + d % 5
}

/// `[start, end)` of slot `n` of a schedule, as instants.
fn slot_time(n: usize) -> (String, String) {
    let day = day_2030(weekday(n / SLOTS_PER_DAY));
    let h = FIRST_HOUR + n % SLOTS_PER_DAY;
    (
        format!("{day}T{h:02}:00:00Z"),
        format!("{day}T{:02}:00:00Z", h + 1),
    )
}

fn weekdays_for(per: usize) -> usize {
    per.div_ceil(SLOTS_PER_DAY)
}

fn specialty(code: usize) -> Value {
    let (c, d) = SPECIALTIES[code];
    json!([{"coding": [{"system": SNOMED, "code": c, "display": d}]}])
}

// ------------------------------------------------------------------ seed

/// One practitioner's resources as drawn from the RNG.
struct Doc {
    specialty: usize,
    languages: Vec<&'static str>,
    locations: Vec<usize>,
}

fn draw(rng: &mut Rng, locations: usize) -> Doc {
    let specialty = if rng.chance(40) {
        0
    } else {
        1 + rng.below(SPECIALTIES.len() - 1)
    };
    let mut languages = vec!["en"];
    for (l, share) in LANGUAGES {
        if rng.chance(share) {
            languages.push(l);
        }
    }
    let mut locs = vec![rng.below(locations)];
    if rng.chance(25) {
        let other = rng.below(locations);
        if other != locs[0] {
            locs.push(other);
        }
    }
    Doc {
        specialty,
        languages,
        locations: locs,
    }
}

/// Practitioner, PractitionerRole, Schedule (and, unless `slots` is None, the Slots) of
/// practitioner `i`, as Bundle entries.
fn doc_entries(
    i: usize,
    d: &Doc,
    rng: &mut Rng,
    org: &str,
    location_ids: &[String],
    slots: Option<usize>,
    per: usize,
) -> Vec<Value> {
    let (pr, role, sc) = (urn(rng), urn(rng), urn(rng));
    let comms: Vec<Value> = d
        .languages
        .iter()
        .map(|l| json!({"coding": [{"system": BCP47, "code": l}]}))
        .collect();
    let mut out = vec![
        entry(
            "Practitioner",
            &pr,
            json!({"resourceType": "Practitioner", "active": true,
                   "identifier": [{"system": "urn:fhir-scheduler:bench", "value": format!("doc-{i}")}],
                   "name": [{"family": FAMILIES[i % FAMILIES.len()],
                             "given": [GIVEN[(i / FAMILIES.len()) % GIVEN.len()]], "prefix": ["Dr."]}],
                   "communication": comms}),
        ),
        entry(
            "PractitionerRole",
            &role,
            json!({"resourceType": "PractitionerRole", "active": true,
                   "practitioner": {"reference": pr},
                   "organization": {"reference": format!("Organization/{org}")},
                   "location": d.locations.iter().map(|l| json!({"reference": format!("Location/{}", location_ids[*l])})).collect::<Vec<_>>(),
                   "specialty": specialty(d.specialty),
                   "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                                      "availableStartTime": "09:00:00", "availableEndTime": "17:00:00"}],
                   "extension": [{"url": format!("{EXT}/slot-duration"), "extension": [
                       {"url": "duration", "valueDuration": {"value": 60, "unit": "min",
                        "system": "http://unitsofmeasure.org", "code": "min"}}]}]}),
        ),
        entry(
            "Schedule",
            &sc,
            json!({"resourceType": "Schedule", "active": true,
                   "identifier": [{"system": "urn:fhir-scheduler:bench", "value": format!("sched-{i}")}],
                   "actor": [{"reference": role}, {"reference": pr}],
                   "specialty": specialty(d.specialty),
                   "planningHorizon": {"start": format!("{}T00:00:00Z", day_2030(FIRST_DAY)),
                                       "end": format!("{}T00:00:00Z", day_2030(weekday(weekdays_for(per) - 1) + 1))}}),
        ),
    ];
    if let Some(per) = slots {
        for n in 0..per {
            let (start, end) = slot_time(n);
            out.push(entry(
                "Slot",
                &urn(rng),
                json!({"resourceType": "Slot",
                       "extension": [{"url": format!("{EXT}/visit-mode"), "valueCode": "in-person"}],
                       "schedule": {"reference": sc},
                       "status": if n % 3 == 0 { "busy" } else { "free" },
                       "specialty": specialty(d.specialty),
                       "start": start, "end": end}),
            ));
        }
    }
    out
}

async fn seed(o: &Opts) -> Res<()> {
    let url = o.str("url")?;
    let out = o.str("out")?;
    let n_docs = o.num("practitioners", 5000)?.max(1) as usize;
    let per = o.num("slots-per-schedule", 200)?.max(1) as usize;
    let n_locs = o.num("locations", 20)?.max(1) as usize;
    let bundle = o.num("bundle", 1000)?.max(1) as usize;
    let parallel = o.num("parallel", 2)?.max(1) as usize;
    let generate = match o.str_or("slots", "bundle").as_str() {
        "bundle" => false,
        "generate" => true,
        s => return Err(format!("--slots: bundle or generate, not {s}")),
    };
    if weekday(weekdays_for(per)) >= 360 {
        return Err("--slots-per-schedule: the slots must stay in 2030".into());
    }
    let c = client(parallel)?;
    let t0 = Instant::now();
    let mut rng = Rng::new(0xb00c);

    // The organization and its locations.
    let org_full = urn(&mut rng);
    let mut entries = vec![entry(
        "Organization",
        &org_full,
        json!({"resourceType": "Organization", "active": true, "name": "Bench Health"}),
    )];
    for l in 0..n_locs {
        entries.push(entry(
            "Location",
            &urn(&mut rng),
            json!({"resourceType": "Location", "status": "active", "name": format!("Clinic {}", l + 1),
                   "managingOrganization": {"reference": org_full},
                   "address": {"city": "Springfield", "state": "IL", "country": "US"},
                   "position": {"latitude": 39.70 + 0.01 * l as f64, "longitude": -89.70 + 0.01 * (l % 7) as f64}}),
        ));
    }
    let ids = post_bundles(&c, &url, vec![entries], 1, "seed organization").await?;
    let org = ids[0][0].clone();
    let location_ids = ids[0][1..].to_vec();

    // Practitioners with role, schedule (and slots): `k` of them per Bundle.
    let docs: Vec<Doc> = (0..n_docs).map(|_| draw(&mut rng, n_locs)).collect();
    let per_doc = 3 + if generate { 0 } else { per };
    let k = (bundle / per_doc).max(1);
    let bundles: Vec<Vec<Value>> = docs
        .chunks(k)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .flat_map(|(j, d)| {
                    doc_entries(
                        b * k + j,
                        d,
                        &mut rng,
                        &org,
                        &location_ids,
                        (!generate).then_some(per),
                        per,
                    )
                })
                .collect()
        })
        .collect();
    let results = post_bundles(&c, &url, bundles, parallel, "seed").await?;
    let mut schedules = Vec::with_capacity(n_docs);
    for ids in results {
        for d in ids.chunks(per_doc) {
            schedules.push(json!({"practitioner": d[0], "role": d[1], "id": d[2],
                                  "slots": d[3..].to_vec()}));
        }
    }
    let t_bundles = t0.elapsed().as_secs_f64();
    eprintln!(
        "seed: {n_docs} practitioners (with their slots: {}) in {t_bundles:.1} s",
        !generate
    );

    if generate {
        let t1 = Instant::now();
        generate_slots(&c, &url, &mut schedules, per, parallel).await?;
        eprintln!(
            "seed: $generate-slots and reading the slot ids back: {:.1} s",
            t1.elapsed().as_secs_f64()
        );
    }
    for (s, d) in schedules.iter_mut().zip(&docs) {
        s["specialty"] = json!(d.specialty);
    }
    let doc = json!({
        "slots_per_schedule": per,
        "weekdays": weekdays_for(per),
        "busy_every": if generate { 0 } else { 3 },
        "organization": org,
        "locations": location_ids,
        "schedules": schedules,
        "seconds": r2(t0.elapsed().as_secs_f64()),
    });
    std::fs::write(&out, doc.to_string()).map_err(|e| format!("{out}: {e}"))?;

    // Sanity check: `$find` for the first practitioner's first day finds its free slots.
    let pr = doc["schedules"][0]["practitioner"]
        .as_str()
        .unwrap_or_default();
    let day = day_2030(FIRST_DAY);
    let next = day_2030(FIRST_DAY + 1);
    let (status, body) = send(c.get(format!("{url}/Appointment/$find")).query(&[
        ("start", format!("{day}T00:00:00Z")),
        ("end", format!("{next}T00:00:00Z")),
        ("practitioner", format!("Practitioner/{pr}")),
    ]))
    .await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let found = v["entry"].as_array().map_or(0, Vec::len);
    let expected = (0..per.min(SLOTS_PER_DAY))
        .filter(|n| generate || n % 3 != 0)
        .count();
    eprintln!(
        "seed: {n_docs} practitioners × {per} slots in {:.1} s; check: $find found {found} \
         proposals for Practitioner/{pr} on {day} ({status}), {expected} expected",
        t0.elapsed().as_secs_f64()
    );
    if found != expected {
        return Err(format!("seed check failed: {}", head(&body, 300)));
    }
    Ok(())
}

/// `Schedule/{id}/$generate-slots` for every schedule, then the slot ids (sorted by start) into
/// each schedule's `slots`.
async fn generate_slots(
    c: &reqwest::Client,
    url: &str,
    schedules: &mut [Value],
    per: usize,
    parallel: usize,
) -> Res<()> {
    let start = format!("{}T00:00:00Z", day_2030(FIRST_DAY));
    let end = format!("{}T00:00:00Z", day_2030(weekday(weekdays_for(per) - 1) + 1));
    let ids: Vec<String> = schedules
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut slots: HashMap<String, Vec<String>> = HashMap::new();
    let mut queue = ids.iter().cloned();
    let mut done = 0;
    loop {
        while set.len() < parallel {
            let Some(id) = queue.next() else { break };
            let (c, url) = (c.clone(), url.to_string());
            let body = json!({"resourceType": "Parameters", "parameter": [
                {"name": "start", "valueDateTime": start}, {"name": "end", "valueDateTime": end}]});
            set.spawn(async move {
                let (status, b) = send(
                    c.post(format!("{url}/Schedule/{id}/$generate-slots"))
                        .header("Content-Type", "application/fhir+json")
                        .body(body.to_string()),
                )
                .await?;
                if !status.is_success() {
                    return Err(format!("$generate-slots: HTTP {status}: {}", head(&b, 300)));
                }
                let (status, b) = send(c.get(format!("{url}/Slot")).query(&[
                    ("schedule", format!("Schedule/{id}")),
                    ("_sort", "start".to_string()),
                    ("_count", per.to_string()),
                    ("_elements", "id".to_string()),
                ]))
                .await?;
                if !status.is_success() {
                    return Err(format!("Slot search: HTTP {status}: {}", head(&b, 300)));
                }
                let v: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                let got: Vec<String> = v["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
                    .collect();
                Ok::<_, String>((id, got))
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (id, got) = joined.map_err(|e| e.to_string())??;
        if got.len() != per {
            return Err(format!(
                "Schedule/{id}: {} slots generated, {per} expected",
                got.len()
            ));
        }
        slots.insert(id, got);
        done += 1;
        if done % 100 == 0 || done == ids.len() {
            eprintln!(
                "seed: $generate-slots {done}/{} schedules ({:.0} s)",
                ids.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    for s in schedules.iter_mut() {
        let id = s["id"].as_str().unwrap_or_default().to_string();
        s["slots"] = json!(slots.remove(&id).unwrap_or_default());
    }
    Ok(())
}

// ------------------------------------------------------------------ run

struct Schedule {
    practitioner: String,
    slots: Vec<String>,
}

struct Dataset {
    schedules: Vec<Schedule>,
    locations: Vec<String>,
    weekdays: usize,
    busy_every: usize,
}

fn load(path: &str) -> Res<Dataset> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?)
            .map_err(|e| format!("{path}: {e}"))?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    let schedules: Vec<Schedule> = v["schedules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Schedule {
            practitioner: s["practitioner"].as_str().unwrap_or_default().to_string(),
            slots: strings(&s["slots"]),
        })
        .collect();
    if schedules.is_empty() {
        return Err(format!("{path}: no schedules"));
    }
    Ok(Dataset {
        schedules,
        locations: strings(&v["locations"]),
        weekdays: v["weekdays"].as_u64().unwrap_or(1).max(1) as usize,
        busy_every: v["busy_every"].as_u64().unwrap_or(0) as usize,
    })
}

/// The hot pools of `book`: free slots `(schedule, n)` in a fixed shuffled order, taken `size`
/// at a time.
struct Pools {
    order: Vec<(u32, u32)>,
    next: usize,
    size: usize,
    /// Refill below this many free slots.
    low: usize,
    free: Vec<(u32, u32)>,
    used: u64,
}

impl Pools {
    fn pick(&mut self, rng: &mut Rng) -> Option<(u32, u32)> {
        if self.free.len() < self.low {
            let end = (self.next + self.size).min(self.order.len());
            if end > self.next {
                self.free = self.order[self.next..end].to_vec();
                self.next = end;
                self.used += 1;
            }
        }
        if self.free.is_empty() {
            return None;
        }
        Some(self.free[rng.below(self.free.len())])
    }
    /// The slot was answered for (booked, or taken by someone else).
    fn taken(&mut self, c: (u32, u32)) {
        if let Some(i) = self.free.iter().position(|x| *x == c) {
            self.free.swap_remove(i);
        }
    }
}

const BOOK_TAGS: [&str; 1] = ["book"];
const FIND_TAGS: [&str; 6] = [
    "window",
    "specialty",
    "practitioner",
    "location",
    "location+specialty",
    "language",
];

struct BookWorker {
    c: reqwest::Client,
    base: String,
    ds: Arc<Dataset>,
    pools: Arc<Mutex<Pools>>,
    rng: Rng,
    /// Unique patient references: `Patient/bench-{nonce}-{worker}-{n}`.
    patient: String,
    n: u64,
}

impl BookWorker {
    async fn book(&mut self) -> Outcome {
        let picked = self
            .pools
            .lock()
            .ok()
            .and_then(|mut p| p.pick(&mut self.rng));
        let Some((s, n)) = picked else {
            return Outcome::error(0, "the hot pools ran out of free slots".into());
        };
        let sc = &self.ds.schedules[s as usize];
        let (start, end) = slot_time(n as usize);
        self.n += 1;
        let appt = json!({"resourceType": "Appointment", "status": "proposed",
            "start": start, "end": end,
            "slot": [{"reference": format!("Slot/{}", sc.slots[n as usize])}],
            "participant": [
                {"actor": {"reference": format!("{}-{}", self.patient, self.n)}, "status": "needs-action"},
                {"actor": {"reference": format!("Practitioner/{}", sc.practitioner)}, "status": "needs-action"}]});
        let body = json!({"resourceType": "Parameters",
                          "parameter": [{"name": "appt-resource", "resource": appt}]});
        let r = send(
            self.c
                .post(format!("{}/Appointment/$book", self.base))
                .header("Content-Type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await;
        let out = match r {
            Err(e) => Outcome::error(0, e),
            Ok((st, _)) if st.is_success() => Outcome::of(Class::Ok, 0),
            Ok((st, _)) if st.as_u16() == 409 => Outcome::of(Class::Conflict, 0),
            Ok((st, _)) if st.as_u16() == 429 => Outcome::of(Class::Throttled, 0),
            Ok((st, b)) => Outcome::error(0, format!("HTTP {st}: {}", head(&b, 300))),
        };
        if matches!(out.class, Class::Ok | Class::Conflict) {
            if let Ok(mut p) = self.pools.lock() {
                p.taken((s, n));
            }
        }
        out
    }
}

impl Worker for BookWorker {
    fn one(&mut self) -> OutcomeFuture<'_> {
        Box::pin(self.book())
    }
}

struct FindWorker {
    c: reqwest::Client,
    base: String,
    ds: Arc<Dataset>,
    rng: Rng,
}

impl FindWorker {
    async fn find(&mut self) -> Outcome {
        let rng = &mut self.rng;
        let ds = &self.ds;
        let d = rng.below(ds.weekdays);
        let (day, next) = (day_2030(weekday(d)), day_2030(weekday(d) + 1));
        let mut q: Vec<(&str, String)> = if rng.chance(50) {
            vec![
                ("start", format!("{day}T00:00:00Z")),
                ("end", format!("{next}T00:00:00Z")),
            ]
        } else {
            let h = FIRST_HOUR - 1 + rng.below(SLOTS_PER_DAY - 1);
            vec![
                ("start", format!("{day}T{h:02}:00:00Z")),
                ("end", format!("{day}T{:02}:00:00Z", h + 3)),
            ]
        };
        q.push(("_count", "10".into()));
        let spec =
            |rng: &mut Rng| format!("{SNOMED}|{}", SPECIALTIES[rng.below(SPECIALTIES.len())].0);
        let roll = rng.below(100);
        let tag: u8 = match roll {
            0..15 => 0,
            15..45 => 1,
            45..65 => 2,
            65..80 => 3,
            80..90 => 4,
            _ => 5,
        };
        match tag {
            1 => q.push(("specialty", spec(rng))),
            2 => {
                let s = &ds.schedules[rng.below(ds.schedules.len())];
                q.push(("practitioner", format!("Practitioner/{}", s.practitioner)));
            }
            3 | 4 => {
                let l = &ds.locations[rng.below(ds.locations.len())];
                q.push(("location", format!("Location/{l}")));
                if tag == 4 {
                    q.push(("specialty", spec(rng)));
                }
            }
            5 => q.push(("language", LANGUAGES[rng.below(LANGUAGES.len())].0.into())),
            _ => {}
        }
        let r = send(
            self.c
                .get(format!("{}/Appointment/$find", self.base))
                .query(&q),
        )
        .await;
        match r {
            Err(e) => Outcome::error(tag, e),
            Ok((st, b)) if st.is_success() => {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                let mut o = Outcome::of(Class::Ok, tag);
                o.value = v["entry"].as_array().map_or(0, Vec::len) as u32;
                o
            }
            Ok((st, b)) => Outcome::error(tag, format!("HTTP {st}: {}", head(&b, 300))),
        }
    }
}

impl Worker for FindWorker {
    fn one(&mut self) -> OutcomeFuture<'_> {
        Box::pin(self.find())
    }
}

async fn run(o: &Opts) -> Res<()> {
    let base = o.str("url")?;
    let ds = Arc::new(load(&o.str("ids")?)?);
    let scenario = o.str("scenario")?;
    let conc = o.num("concurrency", 64)?.max(1) as usize;
    let duration = Duration::from_secs(o.num("duration", 20)?.max(1));
    let warmup = Duration::from_secs(o.num("warmup", 5)?);
    let grace = Duration::from_secs(o.num("grace", 10)?);
    let label = o.str_or("label", "unknown");
    let c = client(conc)?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    let (run, tags, pools) = match scenario.as_str() {
        "book" => {
            // Free slots in a fixed shuffled order: the same pools on every run of a dataset.
            let mut order: Vec<(u32, u32)> = Vec::new();
            for (s, sc) in ds.schedules.iter().enumerate() {
                for n in 0..sc.slots.len() {
                    if ds.busy_every == 0 || n % ds.busy_every != 0 {
                        order.push((s as u32, n as u32));
                    }
                }
            }
            Rng::new(0x9001).shuffle(&mut order);
            let size = o.num("pool", 2000)?.max(1) as usize;
            let pools = Arc::new(Mutex::new(Pools {
                order,
                next: 0,
                size,
                low: conc.min(size),
                free: Vec::new(),
                used: 0,
            }));
            let workers = (0..conc)
                .map(|w| BookWorker {
                    c: c.clone(),
                    base: base.clone(),
                    ds: ds.clone(),
                    pools: pools.clone(),
                    rng: Rng::new(nonce ^ (w as u64 + 1)),
                    patient: format!("Patient/bench-{nonce:x}-{w}"),
                    n: 0,
                })
                .collect();
            let run = closed_loop(workers, warmup, duration, grace).await?;
            let used = pools.lock().map(|p| p.used).unwrap_or(0);
            (run, &BOOK_TAGS[..], Some((used, size)))
        }
        "find" => {
            let workers = (0..conc)
                .map(|w| FindWorker {
                    c: c.clone(),
                    base: base.clone(),
                    ds: ds.clone(),
                    rng: Rng::new(nonce ^ (w as u64 + 1)),
                })
                .collect();
            let run = closed_loop(workers, warmup, duration, grace).await?;
            (run, &FIND_TAGS[..], None)
        }
        s => return Err(format!("unknown scenario {s}")),
    };

    let count = |c: Class| run.count(|s| s.class == c);
    let (ok, conflicts, throttled, errors, unfinished) = (
        count(Class::Ok),
        count(Class::Conflict),
        count(Class::Throttled),
        count(Class::Error),
        count(Class::Unfinished),
    );
    // Answers: 2xx, and for `book` 409 too; latencies over answers and abandoned requests.
    let answered = |s: &common::Sample| matches!(s.class, Class::Ok | Class::Conflict);
    let lat = run.latencies(|s| answered(s) || s.class == Class::Unfinished);
    let stats = summary(&lat);
    let mut line = json!({
        "scenario": scenario,
        "backend": label,
        "concurrency": conc,
        "window_s": r2(run.window_s),
        "requests": ok + conflicts + throttled + errors + unfinished,
        "ok": ok,
        "conflicts": conflicts,
        "throttled": throttled,
        "errors": errors,
        "unfinished": unfinished,
        "censored": unfinished > 0,
        "rps": r2(run.rate(answered)),
        "ok_rps": r2(run.rate(|s| s.class == Class::Ok)),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "mean_ms": stats["mean_ms"],
        "max_ms": stats["max_ms"],
        "error_sample": run.error_sample,
    });
    if let Some((used, size)) = pools {
        line["booked_latency"] = summary(&run.latencies(|s| s.class == Class::Ok));
        line["conflict_latency"] = summary(&run.latencies(|s| s.class == Class::Conflict));
        line["pools"] = json!({"size": size, "used": used});
    }
    if tags.len() > 1 {
        let mut by = serde_json::Map::new();
        for (i, t) in tags.iter().enumerate() {
            let mine = |s: &common::Sample| s.tag as usize == i && s.class == Class::Ok;
            let mut st = summary(&run.latencies(mine));
            let n = run.count(mine);
            let results: u64 = run
                .samples
                .iter()
                .filter(|s| mine(s))
                .map(|s| u64::from(s.value))
                .sum();
            st["mean_results"] = json!(r2(results as f64 / n.max(1) as f64));
            st["empty"] = json!(run.count(|s| mine(s) && s.value == 0));
            by.insert((*t).to_string(), st);
        }
        line["by_kind"] = Value::Object(by);
    }
    println!("{line}");
    if errors > 0 || unfinished > 0 {
        eprintln!("booking: {errors} errors, {unfinished} unfinished ({scenario}, {label})");
    }
    Ok(())
}
