//! The search planner against real SQL: a fixture stored through the crate's own store (real
//! migrations, index rows from the real indexer plus hand-made number/quantity rows, which none
//! of our resource types produce), then each query of the tables below parsed, planned and run
//! on SQLite and PostgreSQL. Checks the matching ids, the count query, sort order, paging,
//! `_include` and `_revinclude`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use fhir_scheduler::fhir::datetime::{self, Kind};
use fhir_scheduler::fhir::index::{extract, IndexRow, IndexValue};
use fhir_scheduler::fhir::registry::{ParamType, SearchParamDef};
use fhir_scheduler::fhir::search::{self, Include, SearchRequest};
use fhir_scheduler::fhir::Fhir;
use fhir_scheduler::store::{SqlQuery, SqlStore, Write};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{fresh_postgres, Backend};

/// `Type?query` (URL-encoded as a client sends it, non-ASCII characters aside), then the ids expected in any order;
/// `-` for none.
const CASES: &str = r"
# string: starts-with on the normalised value, :exact, :contains (LIKE wildcards escaped)
Patient?family=quorra                                   p1
Patient?family=QUO                                      p1
Patient?family=Qu                                       p1 p2
Patient?family=zoe                                      p5
Patient?family=ZOË                                       p5
Patient?family:exact=Zoë                                 p5
Patient?family:exact=zoë                                 -
Patient?family:exact=Quorra                             p1
Patient?family:contains=ill                             p2
Patient?family:contains=100%25_                         p3
Patient?family:contains=0%25                            p3
Patient?family:contains=%25s                            -
Patient?family=o%27brien%5C,                            p3
Patient?family=quorra,quill                             p1 p2
Patient?family=qu&family=quo                            p1
Patient?name=ann&family=q                               p1 p2
Patient?family:missing=true                             -
Patient?birthdate:missing=true                          p3
Patient?birthdate:missing=false                         p1 p2 p5
Slot?x-comment=bring%20the%20refer                      s4
Slot?x-comment:contains=REFÉR                           s4

# token
Patient?identifier=http://ex.org/ids|p2                 p2
Patient?identifier=p2                                   p2
Patient?identifier=http://ex.org/ids|                   p1 p2 p3 p5
Patient?identifier=|p2                                  -
Patient?identifier=http://other|p2                      -
Patient?gender=male,other                               p2 p3
Patient?gender:not=female                               p2 p3
Patient?gender:not=female,male                          p3
Slot?status=free&schedule=Schedule/sc1                  s1 s3 s4 s6
Slot?status:not=free&schedule=Schedule/sc1              s2 s5
Slot?service-type=http://ex.org/st|gp                   s4
Slot?service-type=gp                                    s4
Slot?service-type=http://ex.org/st|                     s4
# :text: the coding's display and the concept's text are separate rows (words not mixed)
Slot?service-type:text=Family                           s4
Slot?service-type:text=doc                              s4
Slot?service-type:text=family%20doc                     s4
Slot?service-type:text=octor                            -
Slot?service-type:text=general%20prac                   s4
Slot?service-type:text=PRACTICE                         s4
Slot?service-type:text=family%20prac                    -
Schedule?active=true                                    sc1 sc2
Schedule?active:missing=true                            sc3
Patient?_tag=urn:tags|t1                                p1 p2 p3
Patient?_tag:missing=true                               p5

# uri
Patient?_profile=http://ex.org/fhir/StructureDefinition/p                     p5
Patient?_profile:below=http://ex.org/fhir/                                    p5
Patient?_profile:below=http://ex.org/fhir/Struct                              p5
Patient?_profile:below=http://ex.org/other                                    -
Patient?_profile:above=http://ex.org/fhir/StructureDefinition/p/_history/2    p5
Patient?_profile:above=http://ex.org/fhir/StructureDefinition                 -

# _id, _lastUpdated (columns of the resource table)
Patient?_id=p1,p2,p4                                    p1 p2
Patient?_lastUpdated=gt2001-01-01                       p1 p2 p3 p5
Patient?_lastUpdated=lt2021&_id=p1,p5                   p1
Patient?_lastUpdated=2026-01-01                         p5
Patient?_lastUpdated=ge2026-01-01T00:00:00Z             p5
Patient?_lastUpdated=sa2026-01-01T00:00:00Z             -

# date: instants on the stored side (s3 starts 2030-01-02T00:30Z)
Slot?start=ge2030-01-02&start=lt2030-01-03&schedule=Schedule/sc1    s3 s4 s5 s6
Slot?start=2030-01-02&schedule=sc1                      s3 s4 s5 s6
Slot?start=2030-01-01&schedule=sc1                      s1 s2
Slot?start=eq2030-01-01T08:00&schedule=sc1              s1
Slot?start=2030-01-01T08:00:00Z                         s1 s7 s8
Slot?start=2030-01-01T09:00:00%2B01:00                  s1 s7 s8
# an unencoded + arrives as a space
Slot?start=2030-01-01T09:00:00+01:00                    s1 s7 s8
Slot?start=ne2030-01-01&schedule=sc1                    s3 s4 s5 s6
Slot?start=gt2030-01-01&schedule=sc1                    s3 s4 s5 s6
Slot?start=sa2030-01-01&schedule=sc1                    s3 s4 s5 s6
Slot?start=le2030-01-01T09:00&schedule=sc1              s1 s2
Slot?start=lt2030-01-01T09:00&schedule=sc1              s1
Slot?start=eb2030-01-01T09:00&schedule=sc1              s1
Slot?start=ge2030-01-02T23:59:59Z&schedule=sc1          s6
Slot?start=gt2030-01-02T23:59:59Z&schedule=sc1          -
Slot?start=ge2030&start=lt2030-01-01T09:00,ge2030-01-02T11:00&schedule=sc1    s1 s5 s6
Slot?start=ap2030-01-01T08:00:00Z&schedule=sc1          s1 s2 s3 s4 s5 s6
Slot?start=ap2029-01-01&schedule=sc1                    -
# one instant per Slot: both tests on its one row, one bounded range (less than a second before
# the search value may still end inside it: s3 starts 00:30:00Z and ends 00:30:00.999999Z)
Slot?start=ge2030-01-02T00:30:00.5Z&start=le2030-01-02T10:00:00Z    s3 s4
Slot?start=gt2030-01-02T00:30:00.5Z&start=lt2030-01-02T10:00:00Z    s3
Slot?start=ge2030-01-02T00:30:01Z&start=lt2030-01-02T10:00:00Z      -
Slot?start=ge2030-01-01T08:00:00Z&start=lt2030-01-01T09:00:00Z&start=ne2030-01-01T08:00:00Z    -
Slot?start=ge2030-01-01&start=lt2030-01-02,ge2030-01-02T23:00:00Z&status=free    s1 s6 s7 s8
# several values (hand-made x-date rows): each test may be met by another value
Slot?x-date=ge2030-01-15&x-date=lt2030-01-07            s4
Slot?x-date=ge2030-01-15&x-date=lt2030-01-07&x-date=ne2030-01-05    s4
Slot?x-date=2030-02-01&x-date=ge2030-02-01              s5
Slot?x-date:missing=true&schedule=sc1                   s3 s6

# date: ranges on the stored side (p5 was born in 1980: the whole year)
Patient?birthdate=1980                                  p1 p5
Patient?birthdate=1980-05-17                            p1
Patient?birthdate=lt1980-05-17                          p5
Patient?birthdate=le1980-05-17                          p1 p5
Patient?birthdate=ge1980-05-17                          p1 p2 p5
Patient?birthdate=gt1980-05-17                          p2 p5
Patient?birthdate=sa1980-05-17                          p2
Patient?birthdate=eb1980-05-17                          -
Patient?birthdate=ne1980-05-17                          p2 p5
Patient?birthdate=ne1980                                p2
Patient?birthdate=sa1979                                p1 p2 p5

# reference
Appointment?patient=Patient/p1                          a1 a2
Appointment?patient=p1                                  a1 a2
Appointment?patient:Patient=p2                          a3
Appointment?actor=Practitioner/pr1                      a1 a2
Appointment?actor=pr1,p2                                a1 a2 a3
Appointment?actor:Patient=pr1                           -
Appointment?patient=http://other.org/fhir/Patient/p5    a5
# an absolute reference to another server is not a reference to the local Patient/p5
Appointment?patient=p5                                  -
Appointment?patient=Patient/p5                          -
Appointment?patient.family=zo                           -
Appointment?patient:missing=true                        -
Appointment?slot=Slot/s1/_history/3                     a1
# several references of one type: one IN list per type (and for untyped ids, and for URLs)
Slot?schedule=Schedule/sc1,Schedule/sc2,sc3&status=free                 s1 s3 s4 s6 s7 s8
Slot?schedule=Schedule/sc2,Schedule/sc3,Schedule/sc9                    s7 s8
Appointment?actor=Practitioner/pr1,Practitioner/pr2,Patient/p2,p1       a1 a2 a3
Appointment?actor=pr2,p1                                                a1 a2 a3
Appointment?patient=http://other.org/fhir/Patient/p5,http://x.org/P/1,p2    a3 a5

# chains
Appointment?practitioner.family=Smith                   a1 a2
Appointment?practitioner.family=müll                    a3
Appointment?practitioner.family=smithers                -
Appointment?actor.family=smith                          a1 a2
Appointment?actor:Patient.family=qu                     a1 a2 a3
Appointment?actor:Patient.identifier=http://ex.org/ids|p2    a3
Appointment?practitioner._id=pr2                        a3
Slot?schedule.actor=Practitioner/pr1                    s1 s2 s3 s4 s5 s6
Slot?schedule.actor=Practitioner/pr3                    s8
Slot?schedule.actor=pr2&status=free                     s7
Slot?schedule.active:missing=true                       s8

# _has
Patient?_has:Appointment:patient:status=booked                          p1
Patient?_has:Appointment:patient:status=booked,cancelled                p1 p2
Patient?_has:Appointment:patient:status:not=booked                      p2
Practitioner?_has:Appointment:practitioner:date=2030-01-01              pr1 pr2
Practitioner?_has:Schedule:actor:_id=sc2                                pr2
Practitioner?_has:Appointment:practitioner:status=booked&family=smi     pr1
Schedule?_has:Slot:schedule:status=busy-tentative                       sc1
Patient?_has:Appointment:patient:_lastUpdated=gt2000                    p1 p2
Patient?_has:Appointment:patient:_lastUpdated=lt2000                    -

# filters that do not drive (EXISTS probes) next to a more selective one
Practitioner?_id=pr1,pr2&_has:Appointment:practitioner:status=booked    pr1
Appointment?_id=a1,a3&practitioner.family=smith         a1
Appointment?_id=a1,a3&patient=p1                        a1
Patient?_id=p1,p3&birthdate:missing=false               p1
Patient?_id=p1,p3,p5&family=qu,zo&_lastUpdated=lt2025   p1
Slot?schedule=sc1&x-comment:contains=refer              s4

# number (hand-made rows: s1 100, s2 99.4, s3 7)
Slot?x-number=100                                       s1
Slot?x-number=1e2                                       s1 s2
Slot?x-number=99                                        s2
Slot?x-number=gt99.4                                    s1
Slot?x-number=ge99.4                                    s1 s2
Slot?x-number=lt99.4,eb7.5                              s3
Slot?x-number=le99.4                                    s2 s3
Slot?x-number=ne100                                     s2 s3
Slot?x-number=ap95                                      s1 s2
Slot?x-number:missing=true&schedule=sc1                 s4 s5 s6

# quantity (hand-made rows: s1 5.4 mg, s2 5.4 g)
Slot?x-quantity=5.4                                     s1 s2
Slot?x-quantity=5.4|http://unitsofmeasure.org|mg        s1
Slot?x-quantity=5.4||g                                  s2
Slot?x-quantity=5.4||mgs                                s1
Slot?x-quantity=gt5|http://unitsofmeasure.org|          s1 s2
Slot?x-quantity=lt5                                     -

# near (l1 Amsterdam, l2 Utrecht 34 km away, l3 London 358 km away, l4 without position)
Location?near=52.3676|4.9041|1|km                       l1
Location?near=52.3676|4.9041|500|m                      l1
Location?near=52.3676|4.9041|30                         l1
Location?near=52.3676|4.9041|40                         l1 l2
Location?near=52.3676|4.9041                            l1 l2
Location?near=52.3676|4.9041|25|mi                      l1 l2
Location?near=52.3676|4.9041|400|km                     l1 l2 l3
Location?near=51.5072|-0.1276|10,52.0907|5.1214|10      l2 l3
Location?near=52.3676|4.9041|400&name=utr               l2
Location?near:missing=true                              l4
";

/// `Type?query`, then the ids of the page (`_count` rows, default 20) in this order.
const ORDERED: &str = r"
Slot?schedule=sc1&_sort=start                           s1 s2 s3 s4 s5 s6
Slot?schedule=sc1&_sort=-start                          s6 s5 s4 s3 s2 s1
Slot?schedule=sc1&_sort=status,-start                   s2 s5 s6 s4 s3 s1
Slot?schedule=sc1&_sort=-_id&_count=2&_offset=1         s5 s4
# without a value: last, both ways; ties by rid
Slot?schedule=sc1&_sort=x-comment                       s4 s1 s2 s3 s5 s6
Slot?schedule=sc1&_sort=-x-comment                      s4 s1 s2 s3 s5 s6
Slot?schedule=sc1&_sort=x-number                        s3 s2 s1 s4 s5 s6
Slot?schedule=sc1&_sort=-x-number                       s1 s2 s3 s4 s5 s6
Patient?_sort=-birthdate                                p2 p5 p1 p3
Patient?_sort=birthdate                                 p5 p1 p2 p3
Patient?_sort=family                                    p3 p2 p1 p5
Patient?_sort=-_lastUpdated,_id                         p5 p1 p2 p3
# a date sort walks the index in its order: one instant per Slot, ties by rid both ways
Slot?start=ge2030-01-01T09:00:00Z&start=lt2030-01-02T11:00:00Z&_sort=start    s2 s3 s4
Slot?start=ge2030-01-01T09:00:00Z&start=lt2030-01-02T11:00:00Z&_sort=-start   s4 s3 s2
Slot?start=ge2030-01-01T08:00:00Z&start=lt2030-01-01T09:00:00Z&_sort=start    s1 s7 s8
Slot?start=ge2030-01-01T08:00:00Z&start=lt2030-01-01T09:00:00Z&_sort=-start   s1 s7 s8
Slot?start=lt2030-01-02&_sort=-start&_count=2                                 s2 s1
Slot?start=ge2030-01-02T00:30:00.5Z&start=lt2030-01-02T10:00:00Z&_sort=start  s3
Slot?status=free&_sort=start&_count=3&_offset=1                               s7 s8 s3
Slot?_sort=-start&_count=3                                                    s6 s5 s4
# several values (x-date): by the lowest ascending, the highest descending, each once (s5
# has the same value twice), ties by rid, resources without one last by rid
Slot?schedule=sc1&_sort=x-date                          s2 s4 s1 s5 s3 s6
Slot?schedule=sc1&_sort=-x-date                         s1 s5 s4 s2 s3 s6
Slot?_sort=x-date&_count=3                              s7 s2 s4
Slot?schedule=sc1&_sort=x-date&_count=2&_offset=3       s5 s3
Slot?schedule=sc1&_sort=x-date&_count=2&_offset=4       s3 s6
Slot?schedule=sc1&_sort=-x-date&_count=1&_offset=5      s6
Slot?x-date=ge2030-01-15&_sort=x-date                   s4 s1 s5
Slot?x-date=ge2030-01-15&_sort=-x-date                  s1 s5 s4
Slot?x-date=ge2030-01-15&x-date=lt2030-01-07&_sort=x-date    s4
Slot?x-date:missing=true&_sort=x-date                   s3 s6 s8
Slot?x-date:missing=true&_sort=-x-date&_count=1         s3
";

/// The lines of a case table: query and expected ids.
fn table(text: &str) -> Vec<(&str, Vec<&str>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            let query = words.next().unwrap_or_default();
            (query, words.filter(|w| *w != "-").collect())
        })
        .collect()
}

/// The database under test: the store, the engine's registry (plus the made-up parameters) and
/// the rid of every stored resource by `Type/id`.
struct Db {
    backend: Backend,
    fhir: Fhir,
    rids: HashMap<String, i64>,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Db {
    async fn open(backend: Backend) -> Self {
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("fhir-planner-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
                (url, Some(TempDir(dir)))
            }
            Backend::Postgres => (fresh_postgres().await, None),
        };
        let store = SqlStore::connect(&url, 2).await.expect("connect");
        store.migrate().await.expect("migrate");
        let mut fhir = Fhir::new(Arc::new(store)).expect("engine");
        for (code, ptype, expression) in [
            // Parameters without an expression are refused; these two select nothing.
            (
                "x-number",
                ParamType::Number,
                "Slot.extension('urn:test:n').value",
            ),
            (
                "x-quantity",
                ParamType::Quantity,
                "Slot.extension('urn:test:q').value",
            ),
            ("x-comment", ParamType::String, "Slot.comment"),
            // Several dates per Slot (hand-made rows).
            (
                "x-date",
                ParamType::Date,
                "Slot.extension('urn:test:d').value",
            ),
        ] {
            fhir.registry.insert(
                "Slot",
                SearchParamDef {
                    code: code.into(),
                    url: format!("urn:test:{code}"),
                    ptype,
                    expression: Some(expression.into()),
                    targets: vec![],
                    documentation: None,
                },
            );
        }
        Db {
            backend,
            fhir,
            rids: HashMap::new(),
            _dir: dir,
        }
    }

    /// Stores `r` with the indexer's rows plus `extra`; `deleted` deletes it again.
    async fn put(&mut self, r: &Value, deleted: bool, extra: &[IndexRow]) {
        let rt = r["resourceType"].as_str().unwrap().to_string();
        let id = r["id"].as_str().unwrap().to_string();
        let last_updated = r["meta"]["lastUpdated"]
            .as_str()
            .map(|s| datetime::parse(s, Kind::Instant).unwrap().0.lo)
            .unwrap_or(1_700_000_000_000_000);
        let mut index = extract(&self.fhir.registry, r);
        index.extend_from_slice(extra);
        let mut tx = self.fhir.store.begin().await.unwrap();
        let write = Write {
            res_type: rt.clone(),
            id: id.clone(),
            version: 1,
            last_updated,
            method: "POST",
            body: r.to_string(),
            index,
            holds: vec![],
        };
        let stored = tx.put(write, None).await.unwrap();
        if deleted {
            tx.delete(&rt, &id, 2, 1, last_updated).await.unwrap();
        }
        tx.commit().await.unwrap();
        self.rids.insert(format!("{rt}/{id}"), stored.rid);
    }

    fn rid(&self, key: &str) -> i64 {
        self.rids[key]
    }

    /// Parses `Type?query` as the server does (URL-decoded pairs, strict handling).
    fn request(&self, type_query: &str) -> SearchRequest {
        let (rt, q) = type_query.split_once('?').unwrap_or((type_query, ""));
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(a, b)| (a.into_owned(), b.into_owned()))
            .collect();
        search::parse(&self.fhir.registry, rt, &pairs, false)
            .unwrap_or_else(|e| panic!("{type_query}: {e}"))
    }

    async fn run(&self, q: &SqlQuery) -> Vec<String> {
        let rows = self.fhir.store.find(q).await;
        let rows = rows.unwrap_or_else(|e| panic!("{:?} {e}: {}", self.backend, q.sql));
        rows.into_iter()
            .map(|r| match r.res_type.as_str() {
                "" => r.id,
                t => format!("{t}/{}", r.id),
            })
            .collect()
    }

    /// The ids of the page, in order.
    async fn ids(&self, req: &SearchRequest) -> Vec<String> {
        let dialect = self.fhir.store.dialect();
        self.run(&req.page_query(&self.fhir.registry, dialect))
            .await
    }

    async fn count(&self, req: &SearchRequest) -> i64 {
        let q = req.count_query(&self.fhir.registry, self.fhir.store.dialect());
        self.fhir
            .store
            .count(&q)
            .await
            .unwrap_or_else(|e| panic!("{:?} {e}: {}", self.backend, q.sql))
    }
}

async fn fixture(db: &mut Db) {
    let sys = "http://ex.org/ids";
    let prac = |id: &str, family: &str| {
        json!({"resourceType": "Practitioner", "id": id,
               "name": [{"family": family, "given": ["John"]}]})
    };
    db.put(&prac("pr1", "Smith"), false, &[]).await;
    db.put(&prac("pr2", "Müller"), false, &[]).await;
    db.put(&prac("pr3", "Smithers"), true, &[]).await;
    let pat = |id: &str, family: &str, birth: Option<&str>, gender: &str| {
        let mut p = json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": sys, "value": id}],
            "name": [{"family": family, "given": ["Ann"]}], "gender": gender,
            "meta": {"lastUpdated": "2020-01-01T00:00:00Z",
                     "tag": [{"system": "urn:tags", "code": "t1"}]}});
        if let Some(b) = birth {
            p["birthDate"] = json!(b);
        }
        p
    };
    for (id, family, birth, gender, deleted) in [
        ("p1", "Quorra", Some("1980-05-17"), "female", false),
        ("p2", "Quill", Some("1992-11-02"), "male", false),
        ("p3", "O'Brien, 100%_sure", None, "other", false),
        ("p4", "Quorra", Some("1980-05-17"), "female", true),
    ] {
        db.put(&pat(id, family, birth, gender), deleted, &[]).await;
    }
    let mut p5 = pat("p5", "Zoë", Some("1980"), "female");
    p5["meta"] = json!({"lastUpdated": "2026-01-01T00:00:00Z",
                        "profile": ["http://ex.org/fhir/StructureDefinition/p"]});
    db.put(&p5, false, &[]).await;

    let schedule = |id: &str, pr: &str, active: bool| {
        let mut s = json!({"resourceType": "Schedule", "id": id,
                           "actor": [{"reference": format!("Practitioner/{pr}")}]});
        if active {
            s["active"] = json!(true);
        }
        s
    };
    db.put(&schedule("sc1", "pr1", true), false, &[]).await;
    db.put(&schedule("sc2", "pr2", true), false, &[]).await;
    db.put(&schedule("sc3", "pr3", false), false, &[]).await;

    // sc1: s1..s6 over 2030-01-01/02; s7 on sc2, s8 on sc3, s9 deleted.
    let slot = |id: &str, sc: &str, start: &str, status: &str| {
        json!({"resourceType": "Slot", "id": id,
               "schedule": {"reference": format!("Schedule/{sc}")}, "status": status,
               "start": start, "end": start.replace(":00:00Z", ":30:00Z")})
    };
    let num = |v: f64| IndexRow {
        param: "x-number".into(),
        value: IndexValue::Number {
            value: v,
            lo: v - 0.5,
            hi: v + 0.5,
        },
    };
    let qty = |v: f64, code: &str| IndexRow {
        param: "x-quantity".into(),
        value: IndexValue::Quantity {
            value: v,
            lo: v - 0.05,
            hi: v + 0.05,
            system: Some("http://unitsofmeasure.org".into()),
            code: Some(code.into()),
            unit: Some(format!("{code}s")),
        },
    };
    // x-date: s1 01-10 and 03-01, s2 01-05, s3 none, s4 01-20 and 01-05, s5 02-01 twice, s6
    // none, s7 01-01.
    let day = |d: &str| {
        let (r, _) = datetime::parse(d, Kind::Date).unwrap();
        IndexRow {
            param: "x-date".into(),
            value: IndexValue::Date { lo: r.lo, hi: r.hi },
        }
    };
    let s1 = slot("s1", "sc1", "2030-01-01T08:00:00Z", "free");
    let s1_rows = [
        num(100.0),
        qty(5.4, "mg"),
        day("2030-03-01"),
        day("2030-01-10"),
    ];
    db.put(&s1, false, &s1_rows).await;
    let s2 = slot("s2", "sc1", "2030-01-01T09:00:00Z", "busy");
    db.put(&s2, false, &[num(99.4), qty(5.4, "g"), day("2030-01-05")])
        .await;
    let s3 = slot("s3", "sc1", "2030-01-01T23:30:00-01:00", "free");
    db.put(&s3, false, &[num(7.0)]).await;
    let mut s4 = slot("s4", "sc1", "2030-01-02T10:00:00Z", "free");
    s4["comment"] = json!("Bring the Référence letter");
    s4["serviceType"] = json!([{"coding": [{"system": "http://ex.org/st", "code": "gp",
                                            "display": "General Practice"}],
                                "text": "Family doctor"}]);
    db.put(&s4, false, &[day("2030-01-20"), day("2030-01-05")])
        .await;
    for (id, sc, start, status, deleted, dates) in [
        (
            "s5",
            "sc1",
            "2030-01-02T11:00:00Z",
            "busy-tentative",
            false,
            vec![day("2030-02-01"), day("2030-02-01")],
        ),
        ("s6", "sc1", "2030-01-02T23:59:59Z", "free", false, vec![]),
        (
            "s7",
            "sc2",
            "2030-01-01T08:00:00Z",
            "free",
            false,
            vec![day("2030-01-01")],
        ),
        ("s8", "sc3", "2030-01-01T08:00:00Z", "free", false, vec![]),
        (
            "s9",
            "sc1",
            "2030-01-01T08:00:00Z",
            "free",
            true,
            vec![day("2029-01-01")],
        ),
    ] {
        db.put(&slot(id, sc, start, status), deleted, &dates).await;
    }

    let appt = |id: &str, p: &str, pr: &str, status: &str, s: &str, start: &str| {
        json!({"resourceType": "Appointment", "id": id, "status": status,
            "start": start, "end": start, "slot": [{"reference": format!("Slot/{s}")}],
            "participant": [
                {"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"},
                {"actor": {"reference": format!("Practitioner/{pr}")}, "status": "accepted"}]})
    };
    for (id, p, pr, status, s, start, deleted) in [
        (
            "a1",
            "p1",
            "pr1",
            "booked",
            "s1",
            "2030-01-01T08:00:00Z",
            false,
        ),
        (
            "a2",
            "p1",
            "pr1",
            "booked",
            "s4",
            "2030-01-02T10:00:00Z",
            false,
        ),
        (
            "a3",
            "p2",
            "pr2",
            "cancelled",
            "s7",
            "2030-01-01T08:00:00Z",
            false,
        ),
        (
            "a4",
            "p2",
            "pr1",
            "booked",
            "s9",
            "2030-01-01T08:00:00Z",
            true,
        ),
    ] {
        db.put(&appt(id, p, pr, status, s, start), deleted, &[])
            .await;
    }
    let mut a5 = appt("a5", "p5", "pr3", "proposed", "s8", "2030-01-01T08:00:00Z");
    a5["participant"][0]["actor"]["reference"] = json!("http://other.org/fhir/Patient/p5");
    db.put(&a5, false, &[]).await;

    let location = |id: &str, name: &str, at: Option<(f64, f64)>| {
        let mut l = json!({"resourceType": "Location", "id": id, "name": name});
        if let Some((lat, lon)) = at {
            l["position"] = json!({"latitude": lat, "longitude": lon});
        }
        l
    };
    for (id, name, at) in [
        ("l1", "Amsterdam", Some((52.3676, 4.9041))),
        ("l2", "Utrecht", Some((52.0907, 5.1214))),
        ("l3", "London", Some((51.5072, -0.1276))),
        ("l4", "Nowhere", None),
    ] {
        db.put(&location(id, name, at), false, &[]).await;
    }
}

async fn planner_on_real_sql(backend: Backend) {
    let mut db = Db::open(backend).await;
    fixture(&mut db).await;
    let mut failures = Vec::new();

    let cases = table(CASES);
    for (query, expected) in &cases {
        let req = db.request(query);
        let got: BTreeSet<String> = db.ids(&req).await.into_iter().collect();
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("{query}: expected {want:?}, got {got:?}"));
        }
        let n = db.count(&req).await;
        if n != expected.len() as i64 {
            failures.push(format!("{query}: count {n}, expected {}", expected.len()));
        }
    }

    let ordered = table(ORDERED);
    for (query, expected) in &ordered {
        let req = db.request(query);
        let mut got = db.ids(&req).await;
        got.truncate(req.count);
        if got != *expected {
            failures.push(format!("{query}: expected {expected:?}, got {got:?}"));
        }
    }

    // Paging by the next links: every page, no overlap.
    let mut seen = Vec::new();
    let mut query = "Slot?schedule=Schedule/sc1&_count=4&_sort=start".to_string();
    loop {
        let req = db.request(&query);
        let page = db.ids(&req).await;
        let more = page.len() > req.count;
        seen.extend(page.into_iter().take(req.count));
        if !more {
            break;
        }
        query = format!("Slot?{}", req.link_query(req.offset + req.count));
    }
    if seen != ["s1", "s2", "s3", "s4", "s5", "s6"] {
        failures.push(format!("paging: got {seen:?}"));
    }
    let req = db.request("Slot?schedule=sc1&_count=0");
    if db.count(&req).await != 6 {
        failures.push("Slot?schedule=sc1&_count=0: count is not 6".into());
    }

    failures.extend(includes(&db).await);
    assert!(
        failures.is_empty(),
        "{backend:?}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + ordered.len(),
        failures.join("\n")
    );
}
both!(planner_on_real_sql);

/// `_include` and `_revinclude` queries; returns the failures.
async fn includes(db: &Db) -> Vec<String> {
    let d = db.fhir.store.dialect();
    let inc = |s: &str, p: &str, t: Option<&str>| Include {
        source_type: s.into(),
        param: p.into(),
        target_type: t.map(String::from),
        iterate: false,
    };
    let rids = |keys: &[&str]| keys.iter().map(|k| db.rid(k)).collect::<Vec<_>>();
    let (a1, a2, a3, a4) = (
        "Appointment/a1",
        "Appointment/a2",
        "Appointment/a3",
        "Appointment/a4",
    );
    let cases: Vec<(&str, Option<SqlQuery>, Vec<&str>)> = vec![
        (
            "Appointment _include patient",
            search::include_query(
                &[inc("Appointment", "patient", None)],
                &rids(&[a1, a2]),
                100,
                d,
            ),
            vec!["Patient/p1"],
        ),
        (
            // a4 is deleted (no index rows): nothing of it.
            "Appointment _include actor:Practitioner, slot",
            search::include_query(
                &[
                    inc("Appointment", "actor", Some("Practitioner")),
                    inc("Appointment", "slot", None),
                ],
                &rids(&[a1, a3, a4]),
                100,
                d,
            ),
            vec!["Practitioner/pr1", "Practitioner/pr2", "Slot/s1", "Slot/s7"],
        ),
        (
            "Schedule _revinclude Slot:schedule",
            search::revinclude_query(
                &[inc("Slot", "schedule", None)],
                &rids(&["Schedule/sc1"]),
                100,
                d,
            ),
            vec![
                "Slot/s1", "Slot/s2", "Slot/s3", "Slot/s4", "Slot/s5", "Slot/s6",
            ],
        ),
        (
            "_revinclude Appointment:actor:Practitioner, Schedule:actor",
            search::revinclude_query(
                &[
                    inc("Appointment", "actor", Some("Practitioner")),
                    inc("Schedule", "actor", None),
                ],
                &rids(&["Practitioner/pr1", "Schedule/sc1"]),
                100,
                d,
            ),
            vec!["Appointment/a1", "Appointment/a2", "Schedule/sc1"],
        ),
        (
            "Practitioner _revinclude Appointment:actor:Patient",
            search::revinclude_query(
                &[inc("Appointment", "actor", Some("Patient"))],
                &rids(&["Practitioner/pr1"]),
                100,
                d,
            ),
            vec![],
        ),
    ];
    let mut failures = Vec::new();
    for (name, q, expected) in cases {
        let got: BTreeSet<String> = db.run(&q.expect(name)).await.into_iter().collect();
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    // The limit holds.
    let q = search::include_query(&[inc("Appointment", "actor", None)], &rids(&[a1]), 1, d);
    let n = db.run(&q.expect("include")).await.len();
    if n != 1 {
        failures.push(format!("_include limit 1: {n} rows"));
    }
    failures
}
