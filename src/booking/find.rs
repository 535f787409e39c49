//! `Appointment/$find`: open slots that fit, as proposed Appointments sorted by start.
//!
//! Filters on who or where (practitioner, organization, location, near, language, insurance,
//! accommodation) each give a set of actors; a schedule qualifies when its actors meet every
//! given set (different kinds AND, repeats of one kind OR). Free slots of qualifying schedules in
//! `[start, end)` are then searched with the slot-level filters (specialty, service-type,
//! visit-type), and slots that clash with the patient's own appointments are dropped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::booking::params::OpParams;
use crate::fhir::datetime::{self, Kind};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;
use crate::fhir::search::open::{servable, OpenSlots};
use crate::fhir::Fhir;
use crate::scheduling::effects::ext_url;
use crate::scheduling::status::is_active;

/// Most actors or schedules one filter may expand to before the request is too costly.
const MAX_EXPANSION: usize = 5000;
/// Default and largest number of proposals.
const DEFAULT_COUNT: usize = 20;
const MAX_COUNT: usize = 200;

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn refs(rt: &str, rows: &[crate::store::FoundRow]) -> BTreeSet<String> {
    rows.iter().map(|r| format!("{rt}/{}", r.id)).collect()
}

/// `Type/id` or a bare id of `rt` → `Type/id`.
fn as_ref(rt: &str, v: &str) -> String {
    if v.contains('/') {
        v.to_string()
    } else {
        format!("{rt}/{v}")
    }
}

/// The schedules each actor filter (kind and values) expanded to, kept while the directory
/// (`store::DIRECTORY_TYPES`) is unchanged: every commit that writes one of its types in this
/// process advances the store's generation, which the entries must match, so a change is seen
/// by the next `$find`. Changes made by other processes are seen once an entry is refreshed:
/// a request finding it older than `CACHE_TTL` is answered from it while one refresh runs in
/// the background; one finding it older than `CACHE_STALE` waits for a fresh expansion. The
/// expansion is the costly part of `$find` for a location or a language (the roles, then the
/// schedules of hundreds of actors: 20–60 ms at 5,000 practitioners), and its answer is the
/// same for every caller (it runs as the server).
#[derive(Default, Clone)]
pub struct ActorCache {
    entries: Arc<Mutex<HashMap<String, Cached>>>,
}

struct Cached {
    generation: u64,
    at: Instant,
    /// Last asked for.
    used: Instant,
    schedules: Arc<HashSet<String>>,
    /// A background refresh of this entry is under way.
    refreshing: bool,
}

const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_STALE: Duration = Duration::from_secs(60);
/// Entries kept at most; past it the quarter least recently used go, so a stream of one-off
/// keys (every practitioner of a large directory) does not push out the ones in steady use
/// (a location's: 20–60 ms to expand again).
const CACHE_MAX: usize = 4096;

/// What the cache holds for a key.
enum Lookup {
    Fresh(Arc<HashSet<String>>),
    /// Older than `CACHE_TTL`: usable; `refresh` if this caller is to refresh it.
    Stale {
        schedules: Arc<HashSet<String>>,
        refresh: bool,
    },
    Miss,
}

impl ActorCache {
    fn get(&self, key: &str, generation: u64) -> Lookup {
        let Ok(mut entries) = self.entries.lock() else {
            return Lookup::Miss;
        };
        let Some(c) = entries.get_mut(key).filter(|c| c.generation == generation) else {
            return Lookup::Miss;
        };
        c.used = Instant::now();
        let age = c.at.elapsed();
        if age < CACHE_TTL {
            Lookup::Fresh(c.schedules.clone())
        } else if age < CACHE_STALE {
            let refresh = !c.refreshing;
            c.refreshing = true;
            Lookup::Stale {
                schedules: c.schedules.clone(),
                refresh,
            }
        } else {
            Lookup::Miss
        }
    }

    fn put(&self, key: String, generation: u64, schedules: Arc<HashSet<String>>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX && !entries.contains_key(&key) {
                let mut by_use: Vec<(Instant, String)> =
                    entries.iter().map(|(k, c)| (c.used, k.clone())).collect();
                by_use.sort_unstable();
                for (_, k) in by_use.into_iter().take(CACHE_MAX / 4) {
                    entries.remove(&k);
                }
            }
            entries.insert(
                key,
                Cached {
                    generation,
                    at: Instant::now(),
                    used: Instant::now(),
                    schedules,
                    refreshing: false,
                },
            );
        }
    }

    /// A refresh failed: the next request past `CACHE_TTL` tries again.
    fn refresh_failed(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(c) = entries.get_mut(key) {
                c.refreshing = false;
            }
        }
    }

    /// Expands one filter into the cache, in the background, as the server.
    fn refresh(
        &self,
        fhir: Arc<Fhir>,
        key: String,
        generation: u64,
        kind: String,
        values: Vec<String>,
    ) {
        let cache = self.clone();
        tokio::spawn(crate::fhir::access::as_system(async move {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            match (Finder { fhir: &fhir }).schedules_of(&kind, &values).await {
                Ok(ids) => cache.put(key, generation, Arc::new(ids)),
                Err(e) => {
                    tracing::warn!(error = %e, filter = %kind, "$find: refreshing an actor filter failed");
                    cache.refresh_failed(&key);
                }
            }
        }));
    }
}

struct Finder<'a> {
    fhir: &'a Fhir,
}

impl Finder<'_> {
    async fn rows(
        &self,
        rt: &str,
        pairs: Vec<(String, String)>,
    ) -> FhirResult<Vec<crate::store::FoundRow>> {
        let rows = self.fhir.find_rows(rt, &pairs, MAX_EXPANSION + 1).await?;
        if rows.len() > MAX_EXPANSION {
            return Err(FhirError::TooCostly(format!(
                "$find: a filter matches more than {MAX_EXPANSION} {rt} resources; narrow it"
            )));
        }
        Ok(rows)
    }

    /// Practitioner and PractitionerRole references of the roles matching `pairs`.
    async fn roles(&self, pairs: Vec<(String, String)>) -> FhirResult<BTreeSet<String>> {
        let rows = self.rows("PractitionerRole", pairs).await?;
        let mut out = refs("PractitionerRole", &rows);
        for r in &rows {
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if let Some(p) = body["practitioner"]["reference"].as_str() {
                out.insert(p.to_string());
            }
        }
        Ok(out)
    }

    /// The ids of the schedules in use (not marked `active: false`) whose actors one filter
    /// kind allows.
    async fn schedules_of(&self, kind: &str, values: &[&str]) -> FhirResult<HashSet<String>> {
        let actors = self.actors(kind, values).await?;
        if actors.is_empty() {
            return Ok(HashSet::new());
        }
        let list: Vec<String> = actors.into_iter().collect();
        Ok(self
            .rows(
                "Schedule",
                // `active` is optional: only a schedule marked inactive is left out.
                vec![pair("actor", list.join(",")), pair("active:not", "false")],
            )
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    /// The actor set one filter kind allows.
    async fn actors(&self, kind: &str, values: &[&str]) -> FhirResult<BTreeSet<String>> {
        let joined = values.join(",");
        let mut out = BTreeSet::new();
        match kind {
            "practitioner" => {
                for v in values {
                    out.insert(as_ref("Practitioner", v));
                }
                let prs: Vec<String> = out.iter().cloned().collect();
                out.extend(
                    self.roles(vec![pair("practitioner", prs.join(","))])
                        .await?,
                );
            }
            "organization" => {
                out.extend(
                    self.roles(vec![pair("organization", joined.clone())])
                        .await?,
                );
                let locs = self
                    .rows("Location", vec![pair("organization", joined.clone())])
                    .await?;
                out.extend(refs("Location", &locs));
                let hcs = self
                    .rows("HealthcareService", vec![pair("organization", joined)])
                    .await?;
                out.extend(refs("HealthcareService", &hcs));
            }
            "location" => {
                for v in values {
                    out.insert(as_ref("Location", v));
                }
                out.extend(self.roles(vec![pair("location", joined)]).await?);
            }
            "near" => {
                let locs = self.rows("Location", vec![pair("near", joined)]).await?;
                let ids: Vec<String> = locs.iter().map(|r| format!("Location/{}", r.id)).collect();
                out.extend(ids.iter().cloned());
                if !ids.is_empty() {
                    out.extend(self.roles(vec![pair("location", ids.join(","))]).await?);
                }
            }
            "language" => {
                let prs = self
                    .rows("Practitioner", vec![pair("communication", joined)])
                    .await?;
                let ids: Vec<String> = prs
                    .iter()
                    .map(|r| format!("Practitioner/{}", r.id))
                    .collect();
                out.extend(ids.iter().cloned());
                if !ids.is_empty() {
                    out.extend(
                        self.roles(vec![pair("practitioner", ids.join(","))])
                            .await?,
                    );
                }
            }
            "insurance" => {
                out.extend(self.roles(vec![pair("insurance", joined.clone())]).await?);
                let orgs = self
                    .rows("Organization", vec![pair("insurance", joined)])
                    .await?;
                let ids: Vec<String> = orgs
                    .iter()
                    .map(|r| format!("Organization/{}", r.id))
                    .collect();
                if !ids.is_empty() {
                    out.extend(
                        self.roles(vec![pair("organization", ids.join(","))])
                            .await?,
                    );
                }
            }
            "accommodation" => {
                out.extend(
                    self.roles(vec![pair("accommodation", joined.clone())])
                        .await?,
                );
                // Offered by a location: whoever practises there.
                let locs = self
                    .rows("Location", vec![pair("accommodation", joined.clone())])
                    .await?;
                let ids: Vec<String> = refs("Location", &locs).into_iter().collect();
                out.extend(ids.iter().cloned());
                if !ids.is_empty() {
                    out.extend(self.roles(vec![pair("location", ids.join(","))]).await?);
                }
                let hcs = self
                    .rows("HealthcareService", vec![pair("accommodation", joined)])
                    .await?;
                out.extend(refs("HealthcareService", &hcs));
            }
            _ => {}
        }
        Ok(out)
    }
}

/// Runs `$find` and returns the searchset Bundle of proposed Appointments.
pub async fn find(
    fhir: &Arc<Fhir>,
    cache: &ActorCache,
    base: &str,
    p: &OpParams,
) -> FhirResult<Value> {
    let bad = |name: &str, msg: &str| FhirError::invalid_at(IssueCode::Required, name, msg);
    let start = p
        .text("start")
        .ok_or_else(|| bad("start", "$find needs start"))?;
    let end = p.text("end").ok_or_else(|| bad("end", "$find needs end"))?;
    let (s_range, _) = datetime::parse(start, Kind::DateTime)
        .ok_or_else(|| bad("start", "start must be a dateTime"))?;
    let (e_range, _) =
        datetime::parse(end, Kind::DateTime).ok_or_else(|| bad("end", "end must be a dateTime"))?;
    if e_range.lo <= s_range.lo {
        return Err(FhirError::invalid_at(
            IssueCode::Value,
            "end",
            "end must be after start",
        ));
    }
    let count = match p.text("_count") {
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| {
                FhirError::invalid_at(IssueCode::Value, "_count", "_count must be a number")
            })?
            .min(MAX_COUNT),
        None => DEFAULT_COUNT,
    };
    let finder = Finder { fhir };

    // Actor filters → the schedules that meet all of them.
    let mut schedules: Option<HashSet<String>> = None;
    // Read before any expansion runs: an entry is stored under the generation its queries
    // started from, so a commit during them makes it stale at once.
    let generation = fhir.store.directory_generation();
    for kind in [
        "practitioner",
        "organization",
        "location",
        "near",
        "language",
        "insurance",
        "accommodation",
    ] {
        let values = p.texts(kind);
        if values.is_empty() {
            continue;
        }
        let key = format!("{kind}\u{0}{}", values.join("\u{0}"));
        let lookup = match generation {
            Some(g) => cache.get(&key, g),
            None => Lookup::Miss,
        };
        let ids = match lookup {
            Lookup::Fresh(ids) => ids,
            Lookup::Stale { schedules, refresh } => {
                if let (true, Some(g)) = (refresh, generation) {
                    let values = values.iter().map(|v| v.to_string()).collect();
                    cache.refresh(fhir.clone(), key, g, kind.to_string(), values);
                }
                schedules
            }
            Lookup::Miss => {
                // As the server, as a refresh does: the entry serves every caller.
                let expand = finder.schedules_of(kind, &values);
                let ids = Arc::new(crate::fhir::access::as_system(expand).await?);
                if let Some(g) = generation {
                    cache.put(key, g, ids.clone());
                }
                ids
            }
        };
        schedules = Some(match schedules {
            None => ids.as_ref().clone(),
            Some(prev) => prev.intersection(&ids).cloned().collect(),
        });
    }
    if schedules.as_ref().is_some_and(HashSet::is_empty) {
        return Ok(bundle(base, Vec::new()));
    }

    // Free slots in the window, with the slot-level filters.
    let fmt = |us: i64| datetime::format_instant(us);
    // With a patient, ask for more than needed: some may clash with the patient's own
    // appointments. Without one, every slot found is a proposal.
    let patient = p.text("patient").map(|v| as_ref("Patient", v));
    let wanted = if patient.is_some() {
        count * 2 + 10
    } else {
        count
    };
    let slots = match open_slot_walk(p, &schedules, s_range.lo, e_range.lo, wanted) {
        // The open-slot index: schedule and specialty tested on the row walked.
        Some(o) => fhir.open_slots(&o).await?,
        // Filters it does not carry (service type, appointment type, visit type, a whole
        // code system): the generic search over `free-start`, the same slots, each filter a
        // probe of the walk.
        None => {
            fhir.find_rows(
                "Slot",
                &generic_slot_search(p, &schedules, s_range.lo, e_range.lo),
                wanted,
            )
            .await?
        }
    };

    // The patient's own commitments in the window.
    let mut busy: Vec<(i64, i64)> = Vec::new();
    if let Some(pt) = &patient {
        let appts = fhir
            .find_rows(
                "Appointment",
                &[
                    pair("patient", pt.clone()),
                    pair("date", format!("ge{}", fmt(s_range.lo - 86_400_000_000))),
                    pair("date", format!("lt{}", fmt(e_range.lo + 86_400_000_000))),
                ],
                MAX_EXPANSION,
            )
            .await?;
        for a in appts {
            let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
            if !is_active(v["status"].as_str().unwrap_or_default()) {
                continue;
            }
            if let (Some(s), Some(e)) = (instant(&v["start"]), instant(&v["end"])) {
                busy.push((s, e));
            }
        }
    }

    // The slots that become proposals, then their schedules (one query) to name the
    // participants of each.
    let mut chosen = Vec::new();
    for row in slots {
        if chosen.len() >= count {
            break;
        }
        let slot: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
        let (Some(s), Some(e)) = (instant(&slot["start"]), instant(&slot["end"])) else {
            continue;
        };
        if busy.iter().any(|(bs, be)| *bs < e && s < *be) {
            continue;
        }
        chosen.push((row.id, slot));
    }
    let schedule_ids: BTreeSet<&str> = chosen
        .iter()
        .filter_map(|(_, slot)| slot["schedule"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Schedule/"))
        .collect();
    let mut schedules: std::collections::HashMap<String, Value> = Default::default();
    if !schedule_ids.is_empty() {
        let ids: Vec<&str> = schedule_ids.into_iter().collect();
        for row in fhir.read_ids("Schedule", &ids).await? {
            let body = serde_json::from_str(&row.body).unwrap_or(Value::Null);
            schedules.insert(format!("Schedule/{}", row.id), body);
        }
    }
    let proposals = chosen
        .iter()
        .map(|(id, slot)| {
            let sched = slot["schedule"]["reference"].as_str().unwrap_or_default();
            let schedule = schedules.get(sched).unwrap_or(&Value::Null);
            proposal(id, slot, schedule, patient.as_deref())
        })
        .collect();
    Ok(bundle(base, proposals))
}

/// Slot-level filters of `$find` and the Slot parameter each is asked as.
const SLOT_FILTERS: [(&str, &str); 4] = [
    ("specialty", "specialty"),
    ("service-type", "service-type"),
    ("appointment-type", "appointment-type"),
    ("visit-type", "visit-mode"),
];

/// The walk of the open-slot index for this `$find`, when it can serve it: no slot-level
/// filter but `specialty`, given once (its values OR-ed), each value a code.
fn open_slot_walk(
    p: &OpParams,
    schedules: &Option<HashSet<String>>,
    from: i64,
    to: i64,
    limit: usize,
) -> Option<OpenSlots> {
    if SLOT_FILTERS
        .iter()
        .any(|(param, _)| *param != "specialty" && !p.texts(param).is_empty())
    {
        return None;
    }
    let specialties = match p.texts("specialty").as_slice() {
        [] => Vec::new(),
        [one] => {
            let tokens = crate::fhir::search::parse::token_list(one)?;
            if !tokens.iter().all(servable) {
                return None;
            }
            tokens
        }
        _ => return None,
    };
    let schedules = schedules.as_ref().map(|ids| {
        let mut list: Vec<String> = ids.iter().cloned().collect();
        list.sort();
        list
    });
    Some(OpenSlots {
        from,
        to,
        schedules,
        specialties,
        limit,
    })
}

/// The same slots as a Slot search: `free-start` is `start` for free slots only, so the walk
/// in start order never passes over booked ones.
fn generic_slot_search(
    p: &OpParams,
    schedules: &Option<HashSet<String>>,
    from: i64,
    to: i64,
) -> Vec<(String, String)> {
    let fmt = |us: i64| datetime::format_instant(us);
    let mut q = vec![
        pair("free-start", format!("ge{}", fmt(from))),
        pair("free-start", format!("lt{}", fmt(to))),
        pair("_sort", "free-start"),
    ];
    if let Some(ids) = schedules {
        let mut list: Vec<String> = ids.iter().map(|i| format!("Schedule/{i}")).collect();
        list.sort();
        q.push(pair("schedule", list.join(",")));
    }
    for (param, slot_param) in SLOT_FILTERS {
        for v in p.texts(param) {
            q.push(pair(slot_param, v));
        }
    }
    q
}

fn instant(v: &Value) -> Option<i64> {
    datetime::parse(v.as_str()?, Kind::Instant).map(|(r, _)| r.lo)
}

/// A proposed Appointment for one slot.
fn proposal(slot_id: &str, slot: &Value, schedule: &Value, patient: Option<&str>) -> Value {
    let mut participants = Vec::new();
    if let Some(p) = patient {
        participants.push(
            json!({"actor": {"reference": p}, "required": "required", "status": "needs-action"}),
        );
    }
    for a in schedule["actor"].as_array().into_iter().flatten() {
        if let Some(r) = a["reference"].as_str() {
            participants.push(json!({"actor": {"reference": r}, "required": "required", "status": "needs-action"}));
        }
    }
    let mut a = json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "start": slot["start"],
        "end": slot["end"],
        "slot": [{"reference": format!("Slot/{slot_id}")}],
        "participant": participants,
    });
    for k in [
        "serviceCategory",
        "serviceType",
        "specialty",
        "appointmentType",
    ] {
        if let Some(v) = slot.get(k) {
            a[k] = v.clone();
        }
    }
    let mode_url = ext_url("visit-mode");
    if let Some(ext) = slot["extension"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["url"] == mode_url.as_str()))
    {
        a["extension"] = json!([ext]);
    }
    if participants_empty(&a) {
        a["participant"] = json!([{"type": [{"text": "patient"}], "status": "needs-action"}]);
    }
    a
}

fn participants_empty(a: &Value) -> bool {
    a["participant"].as_array().is_none_or(Vec::is_empty)
}

fn bundle(base: &str, proposals: Vec<Value>) -> Value {
    let entries: Vec<Value> = proposals
        .into_iter()
        .map(|a| {
            json!({
                "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                "resource": a,
                "search": {"mode": "match"}
            })
        })
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": entries.len(),
        "link": [{"relation": "self", "url": format!("{base}/Appointment/$find")}],
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_drops_the_least_recently_used_quarter() {
        let cache = ActorCache::default();
        let ids = Arc::new(HashSet::from(["s1".to_string()]));
        cache.put("steady".into(), 1, ids.clone());
        for i in 0..CACHE_MAX - 1 {
            cache.put(format!("once-{i}"), 1, ids.clone());
        }
        assert!(matches!(cache.get("steady", 1), Lookup::Fresh(_)));
        assert!(
            matches!(cache.get("steady", 2), Lookup::Miss),
            "another generation"
        );
        cache.put("new".into(), 1, ids.clone());
        let n = cache.entries.lock().unwrap().len();
        assert_eq!(n, CACHE_MAX - CACHE_MAX / 4 + 1);
        assert!(
            matches!(cache.get("steady", 1), Lookup::Fresh(_)),
            "in use: kept"
        );
        assert!(matches!(cache.get("new", 1), Lookup::Fresh(_)));
        assert!(
            matches!(cache.get("once-0", 1), Lookup::Miss),
            "oldest: dropped"
        );
    }
}
