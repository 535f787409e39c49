//! SMART App Launch and Backend Services end to end over HTTP, as a browser and an app would:
//! authorize → login → (TOTP) → consent → code → token → FHIR call; refresh with rotation;
//! EHR launch; client_credentials with freshly generated RS384 and ES384 keys; introspection
//! and revocation; and the attacks on each step.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::both;
use crate::helpers::{patient, Backend, TestApp};
use fhir_scheduler::auth::accounts::{create_client, create_user, NewClient};
use fhir_scheduler::auth::Role;

const REDIRECT: &str = "https://app.example/cb";
const VERIFIER: &str = "a-very-long-pkce-code-verifier-with-enough-entropy-0123456789";

fn challenge(v: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn origin(app: &TestApp) -> String {
    app.base.trim_end_matches("/fhir").to_string()
}

fn hidden_tx(html: &str) -> String {
    let re = regex::Regex::new(r#"name="tx" value="([^"]+)""#).unwrap();
    re.captures(html).expect(html)[1].to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

struct Flow<'a> {
    app: &'a TestApp,
    web: reqwest::Client,
}

impl<'a> Flow<'a> {
    fn new(app: &'a TestApp) -> Self {
        Flow {
            app,
            web: browser(),
        }
    }

    fn authorize_url(&self, scope: &str, extra: &[(&str, &str)]) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        let ch = challenge(VERIFIER);
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", "booking-app"),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "st-123"),
            ("aud", self.app.base.as_str()),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k, v));
        }
        for (k, v) in pairs {
            if !v.is_empty() {
                ser.append_pair(k, v);
            }
        }
        format!("{}/auth/authorize?{}", origin(self.app), ser.finish())
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.web.get(url).send().await.unwrap()
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.web
            .post(format!("{}{path}", origin(self.app)))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Runs the pages up to the redirect back to the app; returns its Location.
    async fn sign_in(
        &self,
        scope: &str,
        extra: &[(&str, &str)],
        user: &str,
        pass: &str,
        totp: Option<&str>,
    ) -> String {
        let html = self.consent_page(scope, extra, user, pass, totp).await;
        let tx = hidden_tx(&html);
        let r = self
            .post_form("/auth/consent", &[("tx", &tx), ("decision", "approve")])
            .await;
        assert!(r.status().is_redirection(), "{}", r.status());
        r.headers()["location"].to_str().unwrap().to_string()
    }

    /// Signs in up to the consent page and returns it.
    async fn consent_page(
        &self,
        scope: &str,
        extra: &[(&str, &str)],
        user: &str,
        pass: &str,
        totp: Option<&str>,
    ) -> String {
        let r = self.get(&self.authorize_url(scope, extra)).await;
        assert_eq!(r.status(), 200);
        let tx = hidden_tx(&r.text().await.unwrap());
        let r = self
            .post_form(
                "/auth/login",
                &[("tx", &tx), ("username", user), ("password", pass)],
            )
            .await;
        assert_eq!(r.status(), 200);
        let mut html = r.text().await.unwrap();
        if html.contains("action=\"/auth/mfa\"") {
            let tx = hidden_tx(&html);
            let code = match totp {
                Some(secret) => fhir_scheduler::auth::server::totp_now(secret).unwrap(),
                None => panic!("a second factor was asked for"),
            };
            let r = self
                .post_form("/auth/mfa", &[("tx", &tx), ("code", &code)])
                .await;
            assert_eq!(r.status(), 200);
            html = r.text().await.unwrap();
        }
        assert!(html.contains("Allow access?"), "{html}");
        html
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self.post_form("/auth/token", form).await;
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn exchange(&self, code: &str, verifier: &str) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", "booking-app"),
        ])
        .await
    }

    async fn fhir(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .app
            .send(
                reqwest::Method::GET,
                path,
                None,
                &[("Authorization", &format!("Bearer {token}"))],
            )
            .await;
        (r.status, r.json)
    }
}

async fn register(app: &TestApp) -> (String, String) {
    let store = app.auth.store.clone();
    create_client(
        &store,
        &NewClient {
            client_id: "booking-app",
            name: "Booking App",
            kind: "public",
            secret: None,
            jwks: None,
            redirect_uris: &[REDIRECT.to_string()],
            scopes:
                "openid fhirUser launch launch/patient offline_access patient/*.cruds user/*.cruds",
            role: None,
        },
    )
    .await
    .unwrap();
    let pa = app.create(patient("Alpha")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pb = app.create(patient("Bravo")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    create_user(
        &store,
        "alpha",
        "alpha-password",
        Role::Patient,
        Some(&format!("Patient/{pa}")),
    )
    .await
    .unwrap();
    (pa, pb)
}

async fn standalone_patient_launch_refresh_and_attacks(b: Backend) {
    let app = TestApp::start(b).await;
    let (pa, pb) = register(&app).await;
    let f = Flow::new(&app);
    let scope = "openid fhirUser launch/patient offline_access patient/*.rs";
    let loc = f.sign_in(scope, &[], "alpha", "alpha-password", None).await;
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-123"));
    let code = query_param(&loc, "code").unwrap();
    // PKCE mismatch: refused, and the code is spent.
    let (s, e) = f
        .exchange(&code, "the-wrong-verifier-the-wrong-verifier-the-wrong")
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (s, _) = f.exchange(&code, VERIFIER).await;
    assert_eq!(s, 400, "a code is single-use even after a failed attempt");

    let loc = f.sign_in(scope, &[], "alpha", "alpha-password", None).await;
    let code = query_param(&loc, "code").unwrap();
    let (s, t) = f.exchange(&code, VERIFIER).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["patient"], pa);
    assert_eq!(t["need_patient_banner"], true);
    assert!(t["expires_in"].as_i64().unwrap() <= 3600);
    let id_token = t["id_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["fhirUser"], format!("{}/Patient/{pa}", app.base));
    assert_eq!(claims["aud"], "booking-app");
    let access = t["access_token"].as_str().unwrap().to_string();
    let (s, own) = f.fhir(&access, &format!("Patient/{pa}")).await;
    assert_eq!(s, 200, "{own}");
    let (s, _) = f.fhir(&access, &format!("Patient/{pb}")).await;
    assert_eq!(s, 403);

    // Refresh with rotation; reuse of the old one revokes the family.
    let r1 = t["refresh_token"].as_str().unwrap().to_string();
    let (s, t2) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("client_id", "booking-app"),
        ])
        .await;
    assert_eq!(s, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert_eq!(
        f.fhir(
            t2["access_token"].as_str().unwrap(),
            &format!("Patient/{pa}")
        )
        .await
        .0,
        200
    );
    let (s, e) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("client_id", "booking-app"),
        ])
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (s, _) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r2),
            ("client_id", "booking-app"),
        ])
        .await;
    assert_eq!(s, 400, "the family is revoked after a reuse");
    // ... and so are the access tokens it issued (RFC 6749 §4.1.2, §10.4).
    for t in [&access, t2["access_token"].as_str().unwrap()] {
        let (s, _) = f.fhir(t, &format!("Patient/{pa}")).await;
        assert_eq!(s, 401, "an access token of a revoked family");
    }
    // A reused code: refused, and the tokens issued from it are revoked.
    let loc = f.sign_in(scope, &[], "alpha", "alpha-password", None).await;
    let code = query_param(&loc, "code").unwrap();
    let (s, t3) = f.exchange(&code, VERIFIER).await;
    assert_eq!(s, 200, "{t3}");
    let access3 = t3["access_token"].as_str().unwrap().to_string();
    assert_eq!(f.fhir(&access3, &format!("Patient/{pa}")).await.0, 200);
    let (s, e) = f.exchange(&code, VERIFIER).await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(f.fhir(&access3, &format!("Patient/{pa}")).await.0, 401);

    // Introspection and revocation, of a fresh token.
    let loc = f.sign_in(scope, &[], "alpha", "alpha-password", None).await;
    let (s, t4) = f
        .exchange(&query_param(&loc, "code").unwrap(), VERIFIER)
        .await;
    assert_eq!(s, 200, "{t4}");
    let access = t4["access_token"].as_str().unwrap().to_string();
    let admin = app.admin_bearer.clone();
    let r = f
        .web
        .post(format!("{}/auth/introspect", origin(&app)))
        .header("Authorization", &admin)
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let i: Value = r.json().await.unwrap();
    assert_eq!(i["active"], true);
    assert_eq!(i["patient"], pa);
    let r = f.post_form("/auth/revoke", &[("token", &access)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(f.fhir(&access, &format!("Patient/{pa}")).await.0, 401);
    let r = f
        .web
        .post(format!("{}/auth/introspect", origin(&app)))
        .header("Authorization", &admin)
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    let r = f.post_form("/auth/introspect", &[("token", &access)]).await;
    assert_eq!(r.status(), 401, "introspection needs a caller");

    // Bad authorization requests.
    for (extra, want) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (vec![("state", "")], "invalid_request"),
        (
            vec![("aud", "https://elsewhere.example/fhir")],
            "invalid_request",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
    ] {
        let r = f.get(&f.authorize_url(scope, &extra)).await;
        assert!(r.status().is_redirection(), "{extra:?}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(
            query_param(&loc, "error").as_deref(),
            Some(want),
            "{extra:?}: {loc}"
        );
    }
    let r = f
        .get(&f.authorize_url(scope, &[("redirect_uri", "https://evil.example/cb")]))
        .await;
    assert_eq!(
        r.status(),
        400,
        "an unregistered redirect is never followed"
    );
    // Wrong password, then lockout.
    let r = f.get(&f.authorize_url(scope, &[])).await;
    let tx = hidden_tx(&r.text().await.unwrap());
    let mut last = 0;
    for _ in 0..6 {
        last = f
            .post_form(
                "/auth/login",
                &[
                    ("tx", &tx),
                    ("username", "alpha"),
                    ("password", "wrong-password"),
                ],
            )
            .await
            .status()
            .as_u16();
    }
    assert_eq!(last, 429, "locked after repeated failures");
    let r = f
        .post_form(
            "/auth/login",
            &[
                ("tx", &tx),
                ("username", "alpha"),
                ("password", "alpha-password"),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        429,
        "even the right password waits out the lock"
    );
}
both!(standalone_patient_launch_refresh_and_attacks);

async fn practitioner_enrols_totp_then_ehr_launch(b: Backend) {
    let app = TestApp::start(b).await;
    let (pa, _) = register(&app).await;
    let doc = app
        .create(json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    create_user(
        &app.auth.store,
        "drdoc",
        "doc-password",
        Role::Practitioner,
        Some(&format!("Practitioner/{doc}")),
    )
    .await
    .unwrap();
    let f = Flow::new(&app);
    let scope = "openid fhirUser user/*.rs";
    // First login: enrolment.
    let r = f.get(&f.authorize_url(scope, &[])).await;
    let tx = hidden_tx(&r.text().await.unwrap());
    let r = f
        .post_form(
            "/auth/login",
            &[
                ("tx", &tx),
                ("username", "drdoc"),
                ("password", "doc-password"),
            ],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("otpauth://totp/"), "{html}");
    let secret = regex::Regex::new(r"secret=([A-Z2-7]+)")
        .unwrap()
        .captures(&html)
        .unwrap()[1]
        .to_string();
    let tx = hidden_tx(&html);
    let r = f
        .post_form("/auth/mfa", &[("tx", &tx), ("code", "000000")])
        .await;
    assert_eq!(r.status(), 401, "a wrong code");
    let code = fhir_scheduler::auth::server::totp_now(&secret).unwrap();
    let r = f
        .post_form("/auth/mfa", &[("tx", &tx), ("code", &code)])
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("recovery codes"), "{html}");
    // The next login asks for the code (no enrolment page).
    let loc = f
        .sign_in(scope, &[], "drdoc", "doc-password", Some(&secret))
        .await;
    let (s, t) = f
        .exchange(&query_param(&loc, "code").unwrap(), VERIFIER)
        .await;
    assert_eq!(s, 200, "{t}");
    assert!(t.get("patient").is_none());

    // EHR launch: the EHR (an admin here) makes a launch context for patient A.
    let r = f
        .web
        .post(format!("{}/auth/launch", origin(&app)))
        .header("Authorization", &app.admin_bearer)
        .json(&json!({"patient": format!("Patient/{pa}"), "encounter": "Encounter/enc-7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let launch = r.json::<Value>().await.unwrap()["launch"]
        .as_str()
        .unwrap()
        .to_string();
    let loc = f
        .sign_in(
            "launch openid fhirUser patient/*.rs",
            &[("launch", &launch)],
            "drdoc",
            "doc-password",
            Some(&secret),
        )
        .await;
    let (s, t) = f
        .exchange(&query_param(&loc, "code").unwrap(), VERIFIER)
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["patient"], pa);
    assert_eq!(t["encounter"], "enc-7", "the EHR's encounter context");
    assert_eq!(t["need_patient_banner"], false);

    // Standalone launch asking launch/patient: the practitioner picks among the patients booked
    // with them (A only), on the consent page.
    let pb = app
        .create(json!({"resourceType": "Patient", "name": [{"family": "Other"}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.create(json!({"resourceType": "Appointment", "status": "booked",
        "start": "2031-05-05T10:00:00Z", "end": "2031-05-05T10:30:00Z",
        "participant": [{"actor": {"reference": format!("Patient/{pa}")}, "status": "accepted"},
                        {"actor": {"reference": format!("Practitioner/{doc}")}, "status": "accepted"}]}))
        .await;
    let html = f
        .consent_page(
            "launch/patient openid fhirUser patient/*.rs",
            &[],
            "drdoc",
            "doc-password",
            Some(&secret),
        )
        .await;
    assert!(html.contains(&format!("value=\"{pa}\"")), "{html}");
    assert!(!html.contains(&format!("value=\"{pb}\"")), "{html}");
    let tx = hidden_tx(&html);
    for pick in [None, Some(pb.as_str())] {
        let mut form = vec![("tx", tx.as_str()), ("decision", "approve")];
        form.extend(pick.map(|p| ("patient", p)));
        let r = f.post_form("/auth/consent", &form).await;
        assert_eq!(r.status(), 400, "{pick:?} is not a patient offered");
    }
    let r = f
        .post_form(
            "/auth/consent",
            &[("tx", &tx), ("decision", "approve"), ("patient", &pa)],
        )
        .await;
    assert!(r.status().is_redirection(), "{}", r.status());
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let (s, t) = f
        .exchange(&query_param(&loc, "code").unwrap(), VERIFIER)
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["patient"], pa);
    assert_eq!(t["need_patient_banner"], true);

    let r = f
        .get(&f.authorize_url("launch patient/*.rs", &[("launch", "made-up")]))
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        query_param(&loc, "error").as_deref(),
        Some("invalid_request")
    );
}
both!(practitioner_enrols_totp_then_ehr_launch);

/// A fresh key pair: (private key for jsonwebtoken, public JWK).
fn es384_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let p = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
        "x": URL_SAFE_NO_PAD.encode(&p[1..49]), "y": URL_SAFE_NO_PAD.encode(&p[49..97])});
    (jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

fn rs384_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut argon2::password_hash::rand_core::OsRng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS384",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())});
    (jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()), jwk)
}

async fn backend_services_with_fresh_keys(b: Backend) {
    let app = TestApp::start(b).await;
    let (es_key, es_jwk) = es384_key("es-1");
    let (rs_key, rs_jwk) = rs384_key("rs-1");
    create_client(
        &app.auth.store,
        &NewClient {
            client_id: "analytics",
            name: "Analytics",
            kind: "confidential-asymmetric",
            secret: None,
            jwks: Some(&json!({"keys": [es_jwk, rs_jwk]}).to_string()),
            redirect_uris: &[],
            scopes: "system/Slot.rs system/Schedule.rs",
            role: None,
        },
    )
    .await
    .unwrap();
    let f = Flow::new(&app);
    let token_url = format!("{}/auth/token", origin(&app));
    let now = fhir_scheduler::auth::now_secs();
    let assertion = |alg: jsonwebtoken::Algorithm,
                     key: &jsonwebtoken::EncodingKey,
                     kid: &str,
                     jti: &str,
                     life: i64| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.into());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(
            &h,
            &json!({"iss": "analytics", "sub": "analytics", "aud": token_url, "exp": now + life, "jti": jti}),
            key,
        )
        .unwrap()
    };
    let ask = |a: String| {
        let f = &f;
        async move {
            f.token(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/Slot.rs system/Patient.rs"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a),
            ])
            .await
        }
    };
    for (alg, key, kid) in [
        (jsonwebtoken::Algorithm::ES384, &es_key, "es-1"),
        (jsonwebtoken::Algorithm::RS384, &rs_key, "rs-1"),
    ] {
        let a = assertion(alg, key, kid, &format!("jti-{kid}"), 240);
        let (s, t) = ask(a.clone()).await;
        assert_eq!(s, 200, "{alg:?}: {t}");
        assert_eq!(
            t["scope"], "system/Slot.rs",
            "narrowed to what the client may have"
        );
        assert!(t["expires_in"].as_i64().unwrap() <= 300);
        let access = t["access_token"].as_str().unwrap();
        assert_eq!(f.fhir(access, "Slot").await.0, 200);
        assert_eq!(f.fhir(access, "Patient").await.0, 403);
        // The same assertion again: a replayed jti.
        let (s, e) = ask(a).await;
        assert_eq!(
            (s.as_u16(), e["error"].as_str()),
            (401, Some("invalid_client")),
            "{alg:?} replay"
        );
    }
    // Too long a lifetime, a foreign key under a known kid, an unknown kid, an HS256 assertion.
    let (s, _) = ask(assertion(
        jsonwebtoken::Algorithm::ES384,
        &es_key,
        "es-1",
        "long",
        3600,
    ))
    .await;
    assert_eq!(s, 401, "assertions live at most 5 minutes");
    let (other, _) = es384_key("es-1");
    let (s, _) = ask(assertion(
        jsonwebtoken::Algorithm::ES384,
        &other,
        "es-1",
        "foreign",
        200,
    ))
    .await;
    assert_eq!(s, 401, "a key the client never registered");
    let (s, _) = ask(assertion(
        jsonwebtoken::Algorithm::ES384,
        &es_key,
        "nope",
        "unknown-kid",
        200,
    ))
    .await;
    assert_eq!(s, 401);
    let hs = assertion(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        "es-1",
        "hs",
        200,
    );
    assert_eq!(ask(hs).await.0, 401);
}
both!(backend_services_with_fresh_keys);

async fn smart_configuration_is_complete_json(b: Backend) {
    let app = TestApp::start(b).await;
    let r = browser()
        .get(format!("{}/.well-known/smart-configuration", app.base))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let c: Value = r.json().await.unwrap();
    for k in [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
    ] {
        assert!(c[k].as_str().unwrap().starts_with("http://"), "{k}: {c}");
    }
    let caps: Vec<&str> = c["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for cap in [
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-standalone-patient",
        "permission-v1",
        "permission-v2",
        "permission-patient",
        "permission-user",
        "permission-offline",
        "sso-openid-connect",
    ] {
        assert!(caps.contains(&cap), "{cap}");
    }
    assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        c["registration_endpoint"],
        json!(format!("{}/auth/register", origin(&app)))
    );
    let jwks: Value = browser()
        .get(c["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    let meta = app.get("metadata").await.json;
    assert_eq!(
        meta["rest"][0]["security"]["service"][0]["coding"][0]["code"],
        "SMART-on-FHIR"
    );
}
both!(smart_configuration_is_complete_json);

async fn key_rotation_logs_nobody_out(b: Backend) {
    let app = TestApp::start(b).await;
    let before = app.admin_bearer.clone();
    let kid = fhir_scheduler::auth::keys::rotate(&app.auth.store, fhir_scheduler::auth::now_secs())
        .await
        .unwrap();
    app.auth.keys.reload(&app.auth.store).await.unwrap();
    let r = app
        .send(
            reqwest::Method::GET,
            "Slot",
            None,
            &[("Authorization", &before)],
        )
        .await;
    assert_eq!(
        r.status, 200,
        "a token signed by the previous key still works"
    );
    let fresh = app.bearer("admin", None, "user/*.cruds");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(
                fresh
                    .trim_start_matches("Bearer ")
                    .split('.')
                    .next()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], kid, "new tokens are signed by the new key");
    let r = app
        .send(
            reqwest::Method::GET,
            "Slot",
            None,
            &[("Authorization", &fresh)],
        )
        .await;
    assert_eq!(r.status, 200);
}
both!(key_rotation_logs_nobody_out);

/// RFC 7591: an admin registers a Backend Services client (its key by value) and a symmetric
/// one; the first then gets tokens with an assertion signed by that key. Registration needs an
/// admin's token, and metadata that cannot be served is refused with the RFC's error codes.
async fn dynamic_registration_by_an_admin(b: Backend) {
    let app = TestApp::start(b).await;
    let url = format!("{}/auth/register", origin(&app));
    let web = reqwest::Client::new();
    let post = |auth: Option<String>, body: Value| {
        let (web, url) = (&web, &url);
        async move {
            let mut req = web.post(url).json(&body);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let admin = app.bearer("admin", None, "user/*.cruds");
    let (es_key, es_jwk) = es384_key("dyn-1");
    let backend = json!({"client_name": "Nightly export", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "scope": "system/Slot.rs", "jwks": {"keys": [es_jwk]}});
    assert_eq!(post(None, backend.clone()).await.0, 401);
    let patient = app.bearer("patient", Some("Patient/p"), "patient/*.rs");
    let (s, e) = post(Some(patient), backend.clone()).await;
    assert_eq!((s, e["error"].as_str()), (403, Some("insufficient_scope")));
    let (s, client) = post(Some(admin.clone()), backend).await;
    assert_eq!(s, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap().to_string();
    assert!(client.get("client_secret").is_none());
    assert_eq!(client["grant_types"], json!(["client_credentials"]));

    let token_url = format!("{}/auth/token", origin(&app));
    let now = fhir_scheduler::auth::now_secs();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    h.kid = Some("dyn-1".into());
    let assertion = jsonwebtoken::encode(
        &h,
        &json!({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 120, "jti": "dyn-jti"}),
        &es_key,
    )
    .unwrap();
    let f = Flow::new(&app);
    let (s, t) = f
        .token(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/Slot.rs"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ])
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        f.fhir(t["access_token"].as_str().unwrap(), "Slot").await.0,
        200
    );

    // A confidential app: the secret is returned once and stored only as a hash.
    let (s, app_client) = post(
        Some(admin.clone()),
        json!({"redirect_uris": ["https://app.example/cb"], "scope": "launch/patient patient/*.rs"}),
    )
    .await;
    assert_eq!(s, 201, "{app_client}");
    assert_eq!(
        app_client["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    let secret = app_client["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 32);
    assert_eq!(
        app.sql_count(&format!(
            "SELECT COUNT(*) FROM auth_clients WHERE client_id = '{}' AND secret_hash LIKE '$argon2id$%'",
            app_client["client_id"].as_str().unwrap()
        ))
        .await,
        1
    );
    let (s, e) = post(
        Some(admin),
        json!({"redirect_uris": ["http://app.example/cb"], "scope": "patient/*.rs"}),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
}
both!(dynamic_registration_by_an_admin);
