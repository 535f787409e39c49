//! External identity provider mode (`--oidc-issuer`) against a real OpenID Connect provider:
//! npm `oidc-provider` (tests/oidc/idp.mjs, started per test on a free port) issuing JWT access
//! tokens through client_credentials with resource indicators. Its tokens are used over real
//! HTTP as any client would; only the attacks (a forged kid, `alg: none`) are made here.
//!
//! Needs `node` and `npm ci` in tests/oidc (scripts/test.sh runs it); without `node` the tests
//! say so and pass.

use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{patient, Backend, Resp, TestApp};
use fhir_scheduler::config::OidcConfig;

/// The provider process; killed on drop (and it exits by itself when its stdin closes).
struct Idp {
    issuer: String,
    child: Child,
    _stdin: ChildStdin,
    http: reqwest::Client,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tests/oidc/idp.mjs; `None` (after saying why) when `node` is not installed.
async fn start_idp() -> Option<Idp> {
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        eprintln!(
            "SKIPPED: `node` is not installed; the external identity provider tests need it \
             (Node.js 20+, then `npm ci` in tests/oidc)"
        );
        return None;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "tests/oidc has no node_modules: run `npm ci` in tests/oidc (scripts/test.sh does)"
    );
    let mut child = Command::new("node")
        .arg("idp.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await
    .expect("the IdP announces itself within 30 s")
    .unwrap()
    .expect("IdP stdout");
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("IdP said {line:?}"));
    Some(Idp {
        issuer: ready["issuer"].as_str().unwrap().to_string(),
        child,
        _stdin: stdin,
        http: reqwest::Client::new(),
    })
}

impl Idp {
    /// A client_credentials access token of `client` for `resource` (its `aud`).
    async fn token(&self, client: &str, scope: &str, resource: &str) -> String {
        let r = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some("secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "token for {client}: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn stats(&self) -> Value {
        let url = format!("{}/__stats", self.issuer);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Rotates in a new signing key; its kid.
    async fn rotate(&self) -> String {
        let url = format!("{}/__rotate", self.issuer);
        let v: Value = self
            .http
            .post(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["kid"].as_str().unwrap().to_string()
    }
}

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn get_as(app: &TestApp, path: &str, token: &str) -> Resp {
    let bearer = format!("Bearer {token}");
    app.send(
        reqwest::Method::GET,
        path,
        None,
        &[("Authorization", bearer.as_str())],
    )
    .await
}

/// A 401 with the RFC 6750 challenge naming the token invalid.
fn assert_refused(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.json);
    let challenge = r.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{what}: WWW-Authenticate {challenge:?}"
    );
}

async fn app_for(b: Backend, idp: &Idp) -> TestApp {
    let issuer = idp.issuer.clone();
    TestApp::start_config(b, move |c| c.oidc = Some(OidcConfig::new(issuer))).await
}

async fn external_idp_tokens(b: Backend) {
    let Some(idp) = start_idp().await else { return };
    let app = app_for(b, &idp).await;
    // Our own tokens keep working beside the IdP's (TestApp's admin token is minted by us).
    for id in ["oidc-a", "oidc-b"] {
        let mut p = patient(id);
        p["id"] = json!(id);
        let r = app.put(&format!("Patient/{id}"), &p).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }

    // Admin tokens of every accepted algorithm read anything.
    for (client, alg) in [
        ("admin-es256", "ES256"),
        ("admin-es384", "ES384"),
        ("admin-rs256", "RS256"),
        ("admin-rs384", "RS384"),
    ] {
        let t = idp.token(client, "user/*.cruds", &app.base).await;
        assert_eq!(jwt_part(&t, 0)["alg"], alg);
        let r = get_as(&app, "Patient/oidc-b", &t).await;
        assert_eq!(r.status, StatusCode::OK, "{client}: {}", r.json);
        assert_eq!(r.json["id"], "oidc-b");
    }

    // A patient (fhirUser Patient/oidc-a) is confined to themself.
    let pa = idp.token("patient-a", "patient/*.rs", &app.base).await;
    assert_eq!(jwt_part(&pa, 1)["fhirUser"], "Patient/oidc-a");
    assert_eq!(
        get_as(&app, "Patient/oidc-b", &pa).await.outcome(403),
        "forbidden"
    );
    let own = get_as(&app, "Patient/oidc-a", &pa).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.json);
    let all = get_as(&app, "Patient", &pa).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.json);
    let ids: Vec<&str> = all.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["oidc-a"]);

    // Genuine IdP tokens the server must still refuse.
    let other = idp
        .token("admin-es256", "user/*.cruds", "https://other.example/fhir")
        .await;
    assert_refused(
        &get_as(&app, "Patient/oidc-a", &other).await,
        "another audience",
    );
    let hs = idp.token("admin-hs256", "user/*.cruds", &app.base).await;
    assert_eq!(jwt_part(&hs, 0)["alg"], "HS256");
    assert_refused(&get_as(&app, "Patient/oidc-a", &hs).await, "HS256");
    let no_role = idp.token("no-role", "user/*.cruds", &app.base).await;
    assert_refused(&get_as(&app, "Patient/oidc-a", &no_role).await, "no role");

    // alg none, with the header and claims of a valid admin token and no signature.
    let valid = idp.token("admin-es256", "user/*.cruds", &app.base).await;
    let mut header = jwt_part(&valid, 0);
    header["alg"] = json!("none");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        valid.split('.').nth(1).unwrap()
    );
    assert_refused(&get_as(&app, "Patient/oidc-a", &none).await, "alg none");
    // The same token with its signature is fine.
    assert_eq!(
        get_as(&app, "Patient/oidc-a", &valid).await.status,
        StatusCode::OK
    );

    // Revoked through our revocation endpoint: refused from then on.
    let origin = app.base.trim_end_matches("/fhir");
    let r = app
        .client
        .post(format!("{origin}/auth/revoke"))
        .form(&[("token", valid.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_refused(&get_as(&app, "Patient/oidc-a", &valid).await, "revoked");

    // Discovery still names our own authorization server (see auth::external).
    let conf: Value = app
        .client
        .get(format!("{origin}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conf["issuer"], origin);
}
both!(external_idp_tokens);

/// A fresh P-256 key the IdP never saw.
fn forger() -> jsonwebtoken::EncodingKey {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_idp_key_rotation_and_forged_kids() {
    let Some(idp) = start_idp().await else { return };
    let app = app_for(Backend::Sqlite, &idp).await;
    let mut p = patient("rot");
    p["id"] = json!("rot");
    app.put("Patient/rot", &p).await;

    // Keys are read at the first token that needs them.
    assert_eq!(idp.stats().await, json!({"discovery": 0, "jwks": 0}));
    let before = idp.token("admin-es256", "user/*.cruds", &app.base).await;
    assert_eq!(
        get_as(&app, "Patient/rot", &before).await.status,
        StatusCode::OK
    );
    assert_eq!(idp.stats().await, json!({"discovery": 1, "jwks": 1}));

    // The IdP rotates: a new kid, unknown to us until we read the JWKS again.
    let kid = idp.rotate().await;
    let after = idp.token("admin-es256", "user/*.cruds", &app.base).await;
    assert_eq!(jwt_part(&after, 0)["kid"], kid.as_str());
    let r = get_as(&app, "Patient/rot", &after).await;
    assert_eq!(r.status, StatusCode::OK, "rotated key: {}", r.json);
    assert_eq!(idp.stats().await, json!({"discovery": 1, "jwks": 2}));
    assert_eq!(
        get_as(&app, "Patient/rot", &before).await.status,
        StatusCode::OK
    );

    // Forged tokens: right issuer, audience and claims, signed by a key the IdP never had.
    let key = forger();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": idp.issuer, "aud": app.base, "sub": "mallory",
        "exp": now + 300, "iat": now, "fhir_scheduler_role": "admin", "scope": "user/*.cruds"});
    let forge = |kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    // Under a kid the IdP has: a bad signature.
    assert_refused(
        &get_as(&app, "Patient/rot", &forge(&kid)).await,
        "known kid, wrong key",
    );
    // A flood of unknown kids: each refused, and the JWKS read again at most once per 10 s.
    for i in 0..25 {
        let t = forge(&format!("forged-{i}"));
        assert_refused(&get_as(&app, "Patient/rot", &t).await, "unknown kid");
    }
    let stats = idp.stats().await;
    assert_eq!(stats["discovery"], 1, "{stats}");
    assert!(
        stats["jwks"].as_u64().unwrap() <= 3,
        "JWKS fetched too often: {stats}"
    );
    // The genuine tokens are unaffected.
    assert_eq!(
        get_as(&app, "Patient/rot", &after).await.status,
        StatusCode::OK
    );
}
