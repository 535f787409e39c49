//! Authentication and access control over real HTTP: token attacks are refused (401 with
//! `WWW-Authenticate`), and patient A reaches nothing of patient B's through any path; a
//! practitioner reaches their own schedules, appointments and patients only.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{patient, Backend, TestApp};

/// Two practitioners, two patients, each patient booked with one practitioner.
struct World {
    app: TestApp,
    pa: String,
    pb: String,
    doc1: String,
    appt_a: String,
    appt_b: String,
    sched1: String,
    sched2: String,
    free_slot: String,
    busy_slot_b: String,
    resp_b: String,
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

async fn world(b: Backend) -> World {
    let app = TestApp::start(b).await;
    let pa = id(&app.create(patient("Alpha")).await);
    let pb = id(&app.create(patient("Bravo")).await);
    let doc1 = id(&app
        .create(json!({"resourceType": "Practitioner", "name": [{"family": "One"}]}))
        .await);
    let doc2 = id(&app
        .create(json!({"resourceType": "Practitioner", "name": [{"family": "Two"}]}))
        .await);
    let sched = |d: &str| json!({"resourceType": "Schedule", "actor": [{"reference": format!("Practitioner/{d}")}]});
    let sched1 = id(&app.create(sched(&doc1)).await);
    let sched2 = id(&app.create(sched(&doc2)).await);
    let slot = |s: &str, h: u32| {
        json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{s}")},
            "status": "free", "start": format!("2030-05-01T{h:02}:00:00Z"),
            "end": format!("2030-05-01T{h:02}:30:00Z")})
    };
    let slot_a = id(&app.create(slot(&sched1, 9)).await);
    let slot_b = id(&app.create(slot(&sched2, 9)).await);
    let free_slot = id(&app.create(slot(&sched1, 10)).await);
    let appt = |p: &str, d: &str, s: &str| {
        json!({"resourceType": "Appointment", "status": "booked",
            "start": "2030-05-01T09:00:00Z", "end": "2030-05-01T09:30:00Z",
            "slot": [{"reference": format!("Slot/{s}")}],
            "participant": [
                {"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"},
                {"actor": {"reference": format!("Practitioner/{d}")}, "status": "accepted"}]})
    };
    let appt_a = id(&app.create(appt(&pa, &doc1, &slot_a)).await);
    let appt_b = id(&app.create(appt(&pb, &doc2, &slot_b)).await);
    let resp_b = id(&app
        .create(json!({"resourceType": "AppointmentResponse",
            "appointment": {"reference": format!("Appointment/{appt_b}")},
            "actor": {"reference": format!("Patient/{pb}")}, "participantStatus": "accepted"}))
        .await);
    World {
        app,
        pa,
        pb,
        doc1,
        appt_a,
        appt_b,
        sched1,
        sched2,
        free_slot,
        busy_slot_b: slot_b,
        resp_b,
    }
}

impl World {
    fn patient_a(&self) -> String {
        self.app.bearer(
            "patient",
            Some(&format!("Patient/{}", self.pa)),
            "patient/*.cruds",
        )
    }

    async fn as_(
        &self,
        bearer: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> crate::helpers::Resp {
        self.app
            .send(
                method,
                path,
                body.map(|b| b.to_string().into_bytes()),
                &[("Authorization", bearer)],
            )
            .await
    }

    async fn get_as(&self, bearer: &str, path: &str) -> crate::helpers::Resp {
        self.as_(bearer, Method::GET, path, None).await
    }
}

/// Every full URL and reference in a response, flattened to text.
fn mentions(v: &Value, needle: &str) -> bool {
    v.to_string().contains(needle)
}

fn ids_of(r: &Value) -> Vec<String> {
    let mut ids: Vec<String> = r["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| {
                    format!(
                        "{}/{}",
                        x["resource"]["resourceType"].as_str().unwrap_or_default(),
                        x["resource"]["id"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn unauthenticated_requests_get_a_challenge(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app
        .send(Method::GET, "Patient", None, &[("Authorization", "")])
        .await;
    assert_eq!(r.outcome(401), "login");
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    // Discovery stays open.
    let r = app
        .send(Method::GET, "metadata", None, &[("Authorization", "")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .send(
            Method::GET,
            "Patient",
            None,
            &[("Authorization", "Basic YTpi")],
        )
        .await;
    r.outcome(401);
}
both!(unauthenticated_requests_get_a_challenge);

async fn forged_and_stale_tokens_are_refused(b: Backend) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use fhir_scheduler::auth::{now_secs, AccessClaims};
    let app = TestApp::start(b).await;
    let now = now_secs();
    let good = AccessClaims {
        iss: app.auth.issuer.clone(),
        sub: "mallory".into(),
        aud: app.auth.audience.clone(),
        exp: now + 300,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: "user/*.cruds".into(),
        client_id: "c".into(),
        role: "admin".into(),
        fhir_user: None,
        patient: None,
    };
    let signed = |c: &AccessClaims| app.auth.sign_claims(c).unwrap();
    let try_token = |t: String| {
        let app = &app;
        async move {
            let r = app
                .send(
                    Method::GET,
                    "Patient",
                    None,
                    &[("Authorization", &format!("Bearer {t}"))],
                )
                .await;
            (
                r.status.as_u16(),
                r.headers
                    .get("www-authenticate")
                    .map(|h| h.to_str().unwrap().to_string()),
            )
        }
    };
    // The control: a correct token works.
    assert_eq!(try_token(signed(&good)).await.0, 200);
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            signed(&AccessClaims {
                exp: now - 60,
                ..good.clone()
            }),
        ),
        (
            "not yet valid",
            signed(&AccessClaims {
                nbf: now + 600,
                ..good.clone()
            }),
        ),
        (
            "wrong aud",
            signed(&AccessClaims {
                aud: "https://other.example/fhir".into(),
                ..good.clone()
            }),
        ),
        (
            "wrong iss",
            signed(&AccessClaims {
                iss: "https://evil.example".into(),
                ..good.clone()
            }),
        ),
        (
            "unknown role",
            signed(&AccessClaims {
                role: "root".into(),
                ..good.clone()
            }),
        ),
        (
            "bad scope",
            signed(&AccessClaims {
                scope: "user/Patient.x".into(),
                ..good.clone()
            }),
        ),
    ];
    for (name, t) in cases {
        let (status, challenge) = try_token(t).await;
        assert_eq!(status, 401, "{name}");
        assert!(challenge.unwrap().contains("invalid_token"), "{name}");
    }
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    // alg none.
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    assert_eq!(try_token(none).await.0, 401, "alg none");
    // HS256 keyed with the server's public key (the classic confusion attack).
    let jwks = app.auth.keys.jwks();
    let public = jwks["keys"][0].to_string();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = jwks["keys"][0]["kid"].as_str().map(String::from);
    let hs = jsonwebtoken::encode(
        &h,
        &good,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_eq!(try_token(hs).await.0, 401, "HS256 with the public key");
    // A bad signature: the good token with its payload swapped.
    let t = signed(&good);
    let parts: Vec<&str> = t.split('.').collect();
    let evil = AccessClaims {
        sub: "someone-else".into(),
        ..good.clone()
    };
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap()),
        parts[2]
    );
    assert_eq!(try_token(swapped).await.0, 401, "bad signature");
    // Signed by a key the server never made (unknown kid).
    let row = fhir_scheduler::auth::keys::new_key_row(now).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&row.private_pkcs8)
        .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(row.kid.clone());
    let foreign =
        jsonwebtoken::encode(&h, &good, &jsonwebtoken::EncodingKey::from_ec_der(&der)).unwrap();
    assert_eq!(try_token(foreign).await.0, 401, "unknown kid");
    // The same foreign key claiming the server's kid.
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = jwks["keys"][0]["kid"].as_str().map(String::from);
    let spoof =
        jsonwebtoken::encode(&h, &good, &jsonwebtoken::EncodingKey::from_ec_der(&der)).unwrap();
    assert_eq!(try_token(spoof).await.0, 401, "foreign key, our kid");
    // Garbage.
    assert_eq!(try_token("a.b.c".into()).await.0, 401);
}
both!(forged_and_stale_tokens_are_refused);

async fn patient_a_reaches_nothing_of_patient_b(b: Backend) {
    let w = world(b).await;
    let a = w.patient_a();
    let pb = &w.pb;
    let leak = |r: &Value| mentions(r, &format!("Patient/{pb}")) || mentions(r, &w.appt_b);

    // Own data and the public directory: yes.
    assert_eq!(w.get_as(&a, &format!("Patient/{}", w.pa)).await.status, 200);
    assert_eq!(
        w.get_as(&a, &format!("Appointment/{}", w.appt_a))
            .await
            .status,
        200
    );
    assert_eq!(
        w.get_as(&a, &format!("Practitioner/{}", w.doc1))
            .await
            .status,
        200
    );
    assert_eq!(
        w.get_as(&a, &format!("Schedule/{}", w.sched2)).await.status,
        200
    );
    assert_eq!(
        w.get_as(&a, &format!("Slot/{}", w.free_slot)).await.status,
        200
    );

    // read, vread.
    for path in [
        format!("Patient/{pb}"),
        format!("Patient/{pb}/_history/1"),
        format!("Appointment/{}", w.appt_b),
        format!("Appointment/{}/_history/1", w.appt_b),
        format!("AppointmentResponse/{}", w.resp_b),
        format!("Slot/{}", w.busy_slot_b),
    ] {
        let r = w.get_as(&a, &path).await;
        assert_eq!(r.outcome(403), "forbidden", "{path}");
        assert!(!leak(&r.json), "{path}: {}", r.json);
    }
    // search, _include, _revinclude, chains, counts.
    for q in [
        "Patient".to_string(),
        format!("Patient?_id={pb}"),
        "Appointment".to_string(),
        format!("Appointment?patient=Patient/{pb}"),
        format!("Appointment?actor=Patient/{pb}"),
        "Appointment?_include=Appointment:patient&_include=Appointment:actor".to_string(),
        "Patient?_revinclude=Appointment:patient&_revinclude=AppointmentResponse:actor".to_string(),
        "Appointment?patient.family=Bravo".to_string(),
        "Appointment?patient.family=Alpha".to_string(),
        "AppointmentResponse".to_string(),
        "Slot?status=busy".to_string(),
        "Schedule?_revinclude=Slot:schedule".to_string(),
        "Practitioner?_revinclude=Appointment:practitioner".to_string(),
    ] {
        let r = w.get_as(&a, &q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.json);
        // The self link repeats the query; what must not appear is in the entries.
        assert!(!leak(&r.json["entry"]), "{q} leaked: {}", r.json);
    }
    let r = w.get_as(&a, "Appointment").await;
    assert_eq!(ids_of(&r.json), [format!("Appointment/{}", w.appt_a)]);
    let r = w.get_as(&a, "Appointment?_summary=count").await;
    assert_eq!(r.json["total"], 1, "the count is of A's own");
    let r = w.get_as(&a, "Slot?status=busy&_summary=count").await;
    assert_eq!(r.json["total"], 0);
    // _has into appointments would reveal B's bookings through the public directory.
    for q in [
        format!("Practitioner?_has:Appointment:practitioner:patient=Patient/{pb}"),
        "Patient?_has:Appointment:patient:status=booked".to_string(),
    ] {
        let r = w.get_as(&a, &q).await;
        assert_eq!(r.outcome(403), "forbidden", "{q}");
    }
    // history.
    for path in [
        format!("Appointment/{}/_history", w.appt_b),
        format!("Patient/{pb}/_history"),
        "Appointment/_history".to_string(),
        "_history".to_string(),
    ] {
        let r = w.get_as(&a, &path).await;
        assert_eq!(r.outcome(403), "forbidden", "{path}");
    }
    assert_eq!(
        w.get_as(&a, &format!("Appointment/{}/_history", w.appt_a))
            .await
            .status,
        200
    );
    // batch: each entry decided alone.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{pb}")}},
        {"request": {"method": "GET", "url": format!("Appointment?patient=Patient/{pb}")}},
        {"request": {"method": "GET", "url": format!("Patient/{}", w.pa)}},
        {"request": {"method": "DELETE", "url": format!("Appointment/{}", w.appt_b)}}]});
    let r = w.as_(&a, Method::POST, "", Some(&batch)).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(
        !leak(&r.json["entry"][0]) && !leak(&r.json["entry"][1]["resource"]["entry"]),
        "{}",
        r.json
    );
    assert!(r.json["entry"][0]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("403"));
    assert!(r.json["entry"][2]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("200"));
    assert!(r.json["entry"][3]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("403"));
    // transaction: one refused entry refuses all.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PATCH", "url": format!("Patient/{}", w.pa)},
         "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": "W10="}},
        {"request": {"method": "DELETE", "url": format!("Patient/{pb}")}}]});
    let r = w.as_(&a, Method::POST, "", Some(&tx)).await;
    assert!(r.status.is_client_error(), "{}", r.json);
    assert!(!leak(&r.json));
    assert_eq!(
        w.app.get(&format!("Patient/{pb}")).await.status,
        200,
        "B is still there"
    );
    // writes through REST.
    let mut b_appt = w.app.get(&format!("Appointment/{}", w.appt_b)).await.json;
    b_appt["status"] = json!("cancelled");
    let r = w
        .as_(
            &a,
            Method::PUT,
            &format!("Appointment/{}", w.appt_b),
            Some(&b_appt),
        )
        .await;
    r.outcome(403);
    let r = w
        .as_(&a, Method::POST, "Patient", Some(&patient("Sneaky")))
        .await;
    r.outcome(403);
    // operations.
    let none = json!({"resourceType": "Parameters"});
    let r = w
        .as_(
            &a,
            Method::POST,
            &format!("Appointment/{}/$cancel", w.appt_b),
            Some(&none),
        )
        .await;
    r.outcome(403);
    let r = w
        .get_as(&a, &format!("Appointment/$find?start=2030-05-01T00:00:00Z&end=2030-05-02T00:00:00Z&patient=Patient/{pb}"))
        .await;
    r.outcome(403);
    let r = w
        .as_(
            &a,
            Method::POST,
            &format!("Schedule/{}/$generate-slots", w.sched1),
            Some(&none),
        )
        .await;
    r.outcome(403);
    // Booking for someone else.
    let for_b = json!({"resourceType": "Appointment", "status": "proposed",
        "start": "2030-05-01T10:00:00Z", "end": "2030-05-01T10:30:00Z",
        "slot": [{"reference": format!("Slot/{}", w.free_slot)}],
        "participant": [{"actor": {"reference": format!("Patient/{pb}")}, "status": "needs-action"},
                        {"actor": {"reference": format!("Practitioner/{}", w.doc1)}, "status": "needs-action"}]});
    let r = w
        .as_(&a, Method::POST, "Appointment/$book", Some(&for_b))
        .await;
    r.outcome(403);
    assert_eq!(
        w.app.get(&format!("Slot/{}", w.free_slot)).await.json["status"],
        "free"
    );
    // The audit trail is for administrators.
    w.get_as(&a, "AuditEvent").await.outcome(403);
}
both!(patient_a_reaches_nothing_of_patient_b);

async fn a_patient_books_and_cancels_only_their_own(b: Backend) {
    let w = world(b).await;
    let a = w.patient_a();
    let mine = json!({"resourceType": "Appointment", "status": "proposed",
        "start": "2030-05-01T10:00:00Z", "end": "2030-05-01T10:30:00Z",
        "slot": [{"reference": format!("Slot/{}", w.free_slot)}],
        "participant": [{"actor": {"reference": format!("Patient/{}", w.pa)}, "status": "needs-action"},
                        {"actor": {"reference": format!("Practitioner/{}", w.doc1)}, "status": "needs-action"}]});
    let r = w
        .as_(&a, Method::POST, "Appointment/$book", Some(&mine))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let booked = r.json["entry"][0]["resource"].clone();
    let bid = id(&booked);
    // A patient does not mark themself arrived or fulfilled.
    let mut fulfilled = w.get_as(&a, &format!("Appointment/{bid}")).await.json;
    fulfilled["status"] = json!("arrived");
    w.as_(
        &a,
        Method::PUT,
        &format!("Appointment/{bid}"),
        Some(&fulfilled),
    )
    .await
    .outcome(403);
    // …but cancels.
    let r = w
        .as_(
            &a,
            Method::POST,
            &format!("Appointment/{bid}/$cancel"),
            Some(&json!({"resourceType": "Parameters"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        w.app.get(&format!("Slot/{}", w.free_slot)).await.json["status"],
        "free"
    );
    // An async booking's result is for the caller who started it only.
    let slot2 = w
        .app
        .create(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{}", w.sched1)},
            "status": "free", "start": "2030-05-01T11:00:00Z", "end": "2030-05-01T11:30:00Z"}))
        .await;
    let mut other = mine.clone();
    other["slot"] = json!([{"reference": format!("Slot/{}", id(&slot2))}]);
    other["start"] = json!("2030-05-01T11:00:00Z");
    other["end"] = json!("2030-05-01T11:30:00Z");
    let r = w
        .app
        .send(
            Method::POST,
            "Appointment/$book",
            Some(other.to_string().into_bytes()),
            &[("Prefer", "respond-async")],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let status_url = r.headers["content-location"].to_str().unwrap().to_string();
    let mut done = false;
    for _ in 0..50 {
        let r = w.app.get(&status_url).await;
        if r.status != StatusCode::ACCEPTED {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(done);
    w.get_as(&a, &status_url).await.outcome(404);
    // $find works for a patient, for themself.
    let r = w
        .get_as(&a, &format!("Appointment/$find?start=2030-05-01T00:00:00Z&end=2030-05-02T00:00:00Z&patient=Patient/{}", w.pa))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}
both!(a_patient_books_and_cancels_only_their_own);

/// `$find` needs only the Slot search scope: the actor filters expand through the directory
/// (PractitionerRole, Schedule…) as the server, on a cache miss as on a refresh, so a token
/// that may search Slots and nothing else gets the same answer either way.
async fn find_needs_only_the_slot_scope(b: Backend) {
    let w = world(b).await;
    let sched = w
        .app
        .create(json!({"resourceType": "Schedule", "active": true,
                       "actor": [{"reference": format!("Practitioner/{}", w.doc1)}]}))
        .await;
    let open = id(&w
        .app
        .create(json!({"resourceType": "Slot", "status": "free",
            "schedule": {"reference": format!("Schedule/{}", id(&sched))},
            "start": "2030-05-01T14:00:00Z", "end": "2030-05-01T14:30:00Z"}))
        .await);
    let me = format!("Patient/{}", w.pa);
    let slots_only = w.app.bearer("patient", Some(&me), "patient/Slot.rs");
    let q = format!(
        "Appointment/$find?start=2030-05-01T00:00:00Z&end=2030-05-02T00:00:00Z&practitioner=Practitioner/{}",
        w.doc1
    );
    for _ in 0..2 {
        let r = w.get_as(&slots_only, &q).await;
        assert_eq!(r.status, 200, "{}", r.json);
        let slots = crate::helpers::proposed_slots(&r.json);
        // The world's schedule of doc1 (no `active`) and the one above.
        assert_eq!(
            slots,
            [format!("Slot/{}", w.free_slot), format!("Slot/{open}")],
            "{}",
            r.json
        );
    }
    // Without the Slot scope, refused.
    let no_slots = w.app.bearer("patient", Some(&me), "patient/Appointment.rs");
    w.get_as(&no_slots, &q).await.outcome(403);
}
both!(find_needs_only_the_slot_scope);

async fn scopes_narrow_what_a_token_may_do(b: Backend) {
    let w = world(b).await;
    let me = format!("Patient/{}", w.pa);
    let read_only = w.app.bearer("patient", Some(&me), "patient/Appointment.r");
    assert_eq!(
        w.get_as(&read_only, &format!("Appointment/{}", w.appt_a))
            .await
            .status,
        200
    );
    w.get_as(&read_only, "Appointment").await.outcome(403);
    w.get_as(&read_only, &format!("Patient/{}", w.pa))
        .await
        .outcome(403);
    // v1 form.
    let v1 = w
        .app
        .bearer("patient", Some(&me), "patient/Appointment.read");
    assert_eq!(w.get_as(&v1, "Appointment").await.status, 200);
    let mut appt = w.app.get(&format!("Appointment/{}", w.appt_a)).await.json;
    appt["comment"] = json!("x");
    w.as_(
        &v1,
        Method::PUT,
        &format!("Appointment/{}", w.appt_a),
        Some(&appt),
    )
    .await
    .outcome(403);
    // An include of a type the token has no scope for is left out.
    let r = w
        .get_as(&v1, "Appointment?_include=Appointment:patient")
        .await;
    assert_eq!(ids_of(&r.json), [format!("Appointment/{}", w.appt_a)]);
    // A user-level admin token narrowed to one type.
    let narrow = w.app.bearer("admin", None, "user/Slot.rs");
    assert_eq!(w.get_as(&narrow, "Slot").await.status, 200);
    w.get_as(&narrow, "Patient").await.outcome(403);
    // An EHR launch: an admin's token with patient/ scopes and patient A in context reaches
    // only A's compartment.
    use fhir_scheduler::auth::{Principal, Role, Scopes};
    let p = Principal {
        subject: "ehr-user".into(),
        client_id: "ehr-app".into(),
        role: Role::Admin,
        fhir_user: None,
        patient: Some(w.pa.clone()),
        scopes: Scopes::parse("patient/*.rs").unwrap(),
    };
    let launch = format!("Bearer {}", w.app.auth.mint(&p, 300).unwrap().0);
    let r = w.get_as(&launch, "Appointment").await;
    assert_eq!(ids_of(&r.json), [format!("Appointment/{}", w.appt_a)]);
    w.get_as(&launch, &format!("Patient/{}", w.pb))
        .await
        .outcome(403);
    assert_eq!(
        w.get_as(&launch, &format!("Practitioner/{}", w.doc1))
            .await
            .status,
        200
    );
}
both!(scopes_narrow_what_a_token_may_do);

/// SMART v2 `?param=value` restrictions hold on every path: reads, searches, includes and
/// history show only resources that meet them.
async fn scope_restrictions_hold_on_every_path(b: Backend) {
    let app = TestApp::start(b).await;
    let p = app.create(patient("Restricted")).await;
    let pid = p["id"].as_str().unwrap();
    let appt = |status: &str, hour: u32| {
        json!({"resourceType": "Appointment", "status": status,
            "start": format!("2031-02-03T{hour:02}:00:00Z"),
            "end": format!("2031-02-03T{hour:02}:30:00Z"),
            "participant": [{"actor": {"reference": format!("Patient/{pid}")},
                             "status": "accepted"}]})
    };
    let booked = app.create(appt("booked", 9)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pending = app.create(appt("pending", 11)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = app.bearer(
        "admin",
        None,
        "user/Appointment.rs?status=booked user/Patient.rs",
    );
    let get = |path: String| {
        let t = t.clone();
        let app = &app;
        async move {
            app.send(Method::GET, &path, None, &[("Authorization", &t)])
                .await
        }
    };
    assert_eq!(get(format!("Appointment/{booked}")).await.status, 200);
    get(format!("Appointment/{pending}")).await.outcome(403);
    get(format!("Appointment/{pending}/_history/1"))
        .await
        .outcome(403);
    get(format!("Appointment/{pending}/_history"))
        .await
        .outcome(403);
    let r = get("Appointment".into()).await;
    assert_eq!(ids_of(&r.json), [format!("Appointment/{booked}")]);
    let r = get(format!("Patient?_id={pid}&_revinclude=Appointment:patient")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let mut got = ids_of(&r.json);
    got.sort();
    assert_eq!(
        got,
        [format!("Appointment/{booked}"), format!("Patient/{pid}")]
    );
    // A restriction it cannot read (a prefix) hides everything rather than showing it.
    let odd = app.bearer("admin", None, "user/Appointment.rs?date=ge2031-01-01");
    let r = app
        .send(
            Method::GET,
            &format!("Appointment/{booked}"),
            None,
            &[("Authorization", &odd)],
        )
        .await;
    r.outcome(403);
}
both!(scope_restrictions_hold_on_every_path);

async fn a_practitioner_reaches_their_own(b: Backend) {
    let w = world(b).await;
    let d = w.app.bearer(
        "practitioner",
        Some(&format!("Practitioner/{}", w.doc1)),
        "user/*.cruds",
    );
    assert_eq!(
        w.get_as(&d, &format!("Appointment/{}", w.appt_a))
            .await
            .status,
        200
    );
    assert_eq!(
        w.get_as(&d, &format!("Patient/{}", w.pa)).await.status,
        200,
        "booked with them"
    );
    w.get_as(&d, &format!("Patient/{}", w.pb))
        .await
        .outcome(403);
    w.get_as(&d, &format!("Appointment/{}", w.appt_b))
        .await
        .outcome(403);
    let r = w.get_as(&d, "Patient").await;
    assert_eq!(ids_of(&r.json), [format!("Patient/{}", w.pa)]);
    let r = w
        .get_as(&d, "Appointment?_include=Appointment:patient")
        .await;
    assert_eq!(
        ids_of(&r.json),
        [
            format!("Appointment/{}", w.appt_a),
            format!("Patient/{}", w.pa)
        ]
    );
    let r = w
        .get_as(&d, &format!("Slot?schedule=Schedule/{}", w.sched2))
        .await;
    assert!(
        !mentions(&r.json, &w.busy_slot_b),
        "another's busy slot: {}",
        r.json
    );
    let none = json!({"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDate": "2030-06-01"}, {"name": "end", "valueDate": "2030-06-02"}]});
    let before = w
        .app
        .search_ids(&format!("Slot?schedule=Schedule/{}&_count=1000", w.sched2))
        .await;
    let r = w
        .as_(
            &d,
            Method::POST,
            &format!("Schedule/{}/$generate-slots", w.sched2),
            Some(&none),
        )
        .await;
    assert!(r.status == 403 || r.status == 200, "{}", r.json);
    let after = w
        .app
        .search_ids(&format!("Slot?schedule=Schedule/{}&_count=1000", w.sched2))
        .await;
    assert_eq!(before, after, "nothing written on another's schedule");
    w.get_as(&d, "AuditEvent").await.outcome(403);
    w.get_as(&d, "_history").await.outcome(403);
}
both!(a_practitioner_reaches_their_own);

async fn auth_off_serves_without_tokens(b: Backend) {
    let app = TestApp::start_config(b, |c| c.auth = false).await;
    let r = app
        .send(Method::GET, "Patient", None, &[("Authorization", "")])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}
both!(auth_off_serves_without_tokens);

async fn every_access_is_on_record(b: Backend) {
    let w = world(b).await;
    let a = w.patient_a();
    w.get_as(&a, &format!("Patient/{}", w.pb))
        .await
        .outcome(403);
    assert_eq!(
        w.get_as(&a, "Appointment?date=ge2030-01-01").await.status,
        200
    );
    w.app
        .send(
            Method::GET,
            "Patient",
            None,
            &[("Authorization", "Bearer nonsense")],
        )
        .await
        .outcome(401);
    w.app.audit.flush().await.unwrap();
    let r = w
        .app
        .get(&format!("AuditEvent?entity=Patient/{}", w.pb))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let events: Vec<&Value> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let refused = events
        .iter()
        .find(|e| e["outcome"] == "4" && e.to_string().contains(&format!("Patient/{}", w.pa)))
        .unwrap_or_else(|| panic!("no record of A's refused read: {}", r.json));
    assert_eq!(refused["action"], "R");
    assert!(
        refused.to_string().contains("127.0.0.1"),
        "source address: {refused}"
    );
    let all = w.app.get("AuditEvent?_count=200").await.json;
    let text = all.to_string();
    assert!(text.contains("search-type"), "the search is on record");
    assert!(
        text.contains("Appointment?date") || text.contains("ZGF0ZT1nZTIwMzAtMDEtMDE"),
        "its query too"
    );
    // Token requests are on record too, refused ones included.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/auth/token",
            w.app.base.trim_end_matches("/fhir")
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    w.app.audit.flush().await.unwrap();
    let tokens = w.app.get("AuditEvent?subtype=ITI-71&outcome=4").await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    assert!(
        tokens.json["entry"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        tokens.json
    );
    // The unauthenticated attempt too (outcome 4, nobody known).
    assert!(
        all["entry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource"]["outcome"] == "4"
                && e["resource"]["outcomeDesc"]
                    .as_str()
                    .is_some_and(|d| d.contains("401"))),
        "{text}"
    );
}
both!(every_access_is_on_record);
