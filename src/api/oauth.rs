//! The authorization server over HTTP: SMART discovery, JWKS, the login / TOTP / consent pages,
//! and the token, introspection, revocation and launch endpoints. The logic is in
//! `auth::server`; this file renders it (HTML pages, redirects, RFC 6749 JSON errors).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::rest::base_url;
use crate::api::AppState;
use crate::audit::Record;
use crate::auth::policy::Role;
use crate::auth::server::{AuthorizeError, AuthorizeParams, LoginTx, OAuthError, Step, TokenForm};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/smart-configuration", get(smart_configuration))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/auth/jwks", get(jwks))
        .route("/auth/authorize", get(authorize))
        .route("/auth/login", post(login))
        .route("/auth/mfa", post(mfa))
        .route("/auth/consent", post(consent))
        .route("/auth/token", post(token))
        .route("/auth/introspect", post(introspect))
        .route("/auth/revoke", post(revoke))
        .route("/auth/launch", post(launch))
        .route("/auth/register", post(register))
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// Puts a login or token event on record; a record that cannot be kept fails the request.
async fn audit(st: &AppState, mut rec: Record, peer: &Peer) -> Result<(), Response> {
    if let Some(Extension(ConnectInfo(a))) = peer {
        rec = rec.source_addr(a.to_string());
    }
    st.audit.record(rec).await.map_err(|_| {
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the audit log is unavailable; try again later",
        )
    })
}

/// The public origin (scheme://host) the endpoints are advertised under.
fn origin(st: &AppState, headers: &HeaderMap) -> String {
    let base = base_url(st, headers);
    base.strip_suffix("/fhir").unwrap_or(&base).to_string()
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r.headers_mut()
        .insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    r
}

fn oauth_error(e: OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (
        status,
        Json(json!({"error": e.error, "error_description": e.description})),
    )
        .into_response();
    if e.status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"fhir-scheduler\""),
        );
    }
    no_store(r)
}

/// `GET [base]/.well-known/smart-configuration` (SMART App Launch 2.x): JSON whatever the Accept.
async fn smart_configuration(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let o = origin(&st, &headers);
    Json(json!({
        "issuer": o,
        "jwks_uri": format!("{o}/auth/jwks"),
        "authorization_endpoint": format!("{o}/auth/authorize"),
        "token_endpoint": format!("{o}/auth/token"),
        "introspection_endpoint": format!("{o}/auth/introspect"),
        "revocation_endpoint": format!("{o}/auth/revoke"),
        "registration_endpoint": format!("{o}/auth/register"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
            "offline_access", "online_access", "patient/*.cruds", "user/*.cruds", "system/*.cruds",
            "patient/*.read", "user/*.read", "system/*.read"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr", "launch-standalone", "client-public",
            "client-confidential-symmetric", "client-confidential-asymmetric",
            "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient", "permission-v1",
            "permission-v2", "permission-patient", "permission-user", "permission-offline",
            "permission-online", "sso-openid-connect"]
    }))
    .into_response()
}

/// OpenID Connect discovery for `sso-openid-connect`.
async fn openid_configuration(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let o = origin(&st, &headers);
    Json(json!({
        "issuer": o,
        "authorization_endpoint": format!("{o}/auth/authorize"),
        "token_endpoint": format!("{o}/auth/token"),
        "jwks_uri": format!("{o}/auth/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"],
        "code_challenge_methods_supported": ["S256"]
    }))
    .into_response()
}

async fn jwks(State(st): State<AppState>) -> Response {
    Json(st.auth.keys.jwks()).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}\
         label,input,button{{display:block;margin:.5rem 0}}code{{word-break:break-all}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = Html(html).into_response();
    // The pages carry a login session: never cached, never framed.
    r.headers_mut()
        .insert("x-frame-options", header::HeaderValue::from_static("DENY"));
    r.headers_mut().insert(
        "content-security-policy",
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    no_store(r)
}

fn error_page(status: StatusCode, msg: &str) -> Response {
    let mut r = page("Sign-in problem", &format!("<p>{}</p>", esc(msg)));
    *r.status_mut() = status;
    r
}

/// Renders the next page with `tx` sealed into it.
fn with_sealed(st: &AppState, tx: &LoginTx, render: impl FnOnce(&str) -> Response) -> Response {
    match st.auth.seal(tx) {
        Ok(s) => render(&s),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description),
    }
}

fn login_page(tx: &str, app: &str, problem: Option<&str>) -> Response {
    let p = problem
        .map(|m| format!("<p role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<p>{app} asks you to sign in.</p>{p}<form method=\"post\" action=\"/auth/login\">\
             <input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
             <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>",
            app = esc(app),
            tx = esc(tx)
        ),
    )
}

fn consent_page(
    tx: &str,
    t: &LoginTx,
    recovery: Option<&[String]>,
    patients: Option<&[(String, String)]>,
) -> Response {
    let scopes: String = t
        .scope
        .split_whitespace()
        .map(|s| format!("<li><code>{}</code></li>", esc(s)))
        .collect();
    let codes = recovery
        .map(|c| {
            format!(
                "<p>Your authenticator is set up. Keep these one-time recovery codes somewhere safe:</p><ul>{}</ul>",
                c.iter()
                    .map(|x| format!("<li><code>{}</code></li>", esc(x)))
                    .collect::<String>()
            )
        })
        .unwrap_or_default();
    let picker = patients
        .map(|list| {
            let options: String = list
                .iter()
                .map(|(id, name)| {
                    format!(
                        "<option value=\"{}\">{} (Patient/{})</option>",
                        esc(id),
                        esc(name),
                        esc(id)
                    )
                })
                .collect();
            format!("<label>Patient <select name=\"patient\" required>{options}</select></label>")
        })
        .unwrap_or_default();
    page(
        "Allow access?",
        &format!(
            "{codes}<p>{app} asks for:</p><ul>{scopes}</ul>\
             <form method=\"post\" action=\"/auth/consent\">\
             <input type=\"hidden\" name=\"tx\" value=\"{tx}\">{picker}\
             <button name=\"decision\" value=\"approve\">Allow</button>\
             <button name=\"decision\" value=\"deny\">Deny</button></form>",
            app = esc(&t.client_name),
            tx = esc(tx)
        ),
    )
}

fn totp_page(tx: &str, otpauth: Option<&str>, problem: Option<&str>) -> Response {
    let p = problem
        .map(|m| format!("<p role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    let enrol = otpauth
        .map(|u| {
            format!(
                "<p>Your role needs a second factor. Add this account to an authenticator app \
                 (scan or paste the link), then enter the code it shows.</p>\
                 <p><a href=\"{u}\"><code>{u}</code></a></p>",
                u = esc(u)
            )
        })
        .unwrap_or_else(|| {
            "<p>Enter the code from your authenticator app, or a recovery code.</p>".into()
        });
    page(
        "Second factor",
        &format!(
            "{enrol}{p}<form method=\"post\" action=\"/auth/mfa\">\
             <input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
             <label>Code <input name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required></label>\
             <button type=\"submit\">Continue</button></form>",
            tx = esc(tx)
        ),
    )
}

async fn authorize(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    match st.auth.authorize(&p, &base_url(&st, &headers)).await {
        Ok(tx) => with_sealed(&st, &tx, |s| login_page(s, &tx.client_name, None)),
        Err(AuthorizeError::Show(m)) => error_page(StatusCode::BAD_REQUEST, &m),
        Err(AuthorizeError::Redirect(url)) => Redirect::to(&url).into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    tx: String,
    username: String,
    password: String,
}

async fn login(State(st): State<AppState>, peer: Peer, Form(f): Form<LoginForm>) -> Response {
    let tx = match st.auth.open(&f.tx, "login") {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    let result = st.auth.login(tx.clone(), &f.username, &f.password).await;
    let mut rec = Record::login(result.is_ok())
        .who(format!("user:{}", f.username))
        .client(tx.client_id.clone());
    if let Err(e) = &result {
        rec = rec.outcome(crate::audit::Outcome::MinorFailure, e.description.clone());
    }
    if let Err(r) = audit(&st, rec, &peer).await {
        return r;
    }
    match result {
        Ok(Step::Consent(next)) => {
            let choices = match st.auth.patient_choices(&next).await {
                Ok(c) => c,
                Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
            };
            with_sealed(&st, &next, |s| {
                consent_page(s, &next, None, choices.as_deref())
            })
        }
        Ok(Step::Totp(next)) => with_sealed(&st, &next, |s| totp_page(s, None, None)),
        Ok(Step::Enrol { tx: next, otpauth }) => {
            with_sealed(&st, &next, |s| totp_page(s, Some(&otpauth), None))
        }
        Err(e) => {
            let mut r = login_page(&f.tx, &tx.client_name, Some(&e.description));
            *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNAUTHORIZED);
            r
        }
    }
}

#[derive(Deserialize)]
struct MfaForm {
    tx: String,
    code: String,
}

async fn mfa(State(st): State<AppState>, peer: Peer, Form(f): Form<MfaForm>) -> Response {
    let tx = match st
        .auth
        .open(&f.tx, "mfa")
        .or_else(|_| st.auth.open(&f.tx, "enrol"))
    {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    let who = format!("user:{}", tx.username.clone().unwrap_or_default());
    let client = tx.client_id.clone();
    let result = st.auth.second_factor(tx, &f.code).await;
    let mut rec = Record::login(result.is_ok()).who(who).client(client);
    if let Err(e) = &result {
        rec = rec.outcome(
            crate::audit::Outcome::MinorFailure,
            format!("second factor: {}", e.description),
        );
    }
    if let Err(r) = audit(&st, rec, &peer).await {
        return r;
    }
    match result {
        Ok((next, recovery)) => {
            let choices = match st.auth.patient_choices(&next).await {
                Ok(c) => c,
                Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
            };
            with_sealed(&st, &next, |s| {
                consent_page(s, &next, recovery.as_deref(), choices.as_deref())
            })
        }
        Err(e) => {
            let mut r = totp_page(&f.tx, None, Some(&e.description));
            *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNAUTHORIZED);
            r
        }
    }
}

#[derive(Deserialize)]
struct ConsentForm {
    tx: String,
    decision: String,
    /// The patient picked for a standalone launch (`launch/patient`).
    #[serde(default)]
    patient: Option<String>,
}

async fn consent(State(st): State<AppState>, Form(f): Form<ConsentForm>) -> Response {
    let tx = match st.auth.open(&f.tx, "consent") {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    match st
        .auth
        .consent(tx, f.decision == "approve", f.patient.as_deref())
        .await
    {
        Ok(url) => no_store(Redirect::to(&url).into_response()),
        Err(e) => error_page(StatusCode::BAD_REQUEST, &e.description),
    }
}

/// The caller's own access token, verified (introspection and launch need one).
async fn bearer_claims(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<crate::auth::AccessClaims, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refused = || {
        oauth_error(OAuthError {
            status: 401,
            error: "invalid_token",
            description: "the caller's own valid bearer token is required".into(),
        })
    };
    match token {
        Some(t) => st.auth.verify(t).await.map_err(|_| refused()),
        None => Err(refused()),
    }
}

/// `client_id:client_secret` from HTTP Basic.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b = v.strip_prefix("Basic ")?;
    let text = String::from_utf8(STANDARD.decode(b.trim()).ok()?).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

async fn token(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    let token_url = format!("{}/auth/token", origin(&st, &headers));
    let basic = basic(&headers);
    let client = f
        .client_id
        .clone()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()))
        .unwrap_or_else(|| "(client assertion)".into());
    let result = st.auth.token(&f, basic, &token_url).await;
    // Every token issued, and every one refused, is on record.
    let mut rec = Record::token_issued(result.is_ok()).client(client);
    match &result {
        Ok(v) => {
            if let Some(p) = v["patient"].as_str() {
                rec = rec.patient(format!("Patient/{p}"));
            }
        }
        Err(e) => rec = rec.outcome(crate::audit::Outcome::MinorFailure, e.description.clone()),
    }
    if let Err(r) = audit(&st, rec, &peer).await {
        return r;
    }
    match result {
        Ok(v) => no_store(Json(v).into_response()),
        Err(e) => oauth_error(e),
    }
}

#[derive(Deserialize)]
struct TokenParam {
    token: String,
}

/// RFC 7662: callers authenticate with a bearer token of their own.
async fn introspect(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<TokenParam>,
) -> Response {
    if let Err(r) = bearer_claims(&st, &headers).await {
        return r;
    }
    no_store(Json(st.auth.introspect(&f.token).await).into_response())
}

/// RFC 7009: always 200 for a well-formed request, whether or not the token was known.
async fn revoke(State(st): State<AppState>, Form(f): Form<TokenParam>) -> Response {
    match st.auth.revoke(&f.token).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(e),
    }
}

/// `POST /auth/register`: RFC 7591 dynamic client registration, protected (§3) — the initial
/// access token is an admin's access token. 201 with the client's information (a symmetric
/// client's secret appears here once); 400 `invalid_client_metadata` / `invalid_redirect_uri`.
async fn register(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let claims = match bearer_claims(&st, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !crate::auth::policy::may_register_clients(Role::parse(&claims.role)) {
        return oauth_error(OAuthError {
            status: 403,
            error: "insufficient_scope",
            description: "clients are registered by admins".into(),
        });
    }
    let meta: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return oauth_error(OAuthError {
                status: 400,
                error: "invalid_client_metadata",
                description: format!("the body is not JSON: {e}"),
            })
        }
    };
    match st.auth.register_client(&meta).await {
        Ok(client) => {
            tracing::info!(client_id = %client["client_id"].as_str().unwrap_or_default(),
                by = %claims.sub, "client registered");
            no_store((StatusCode::CREATED, Json(client)).into_response())
        }
        Err(e) => oauth_error(e),
    }
}

/// `POST /auth/launch` (practitioners and admins, with their bearer token): an EHR launch
/// context for a patient; the `launch` value goes to the app's launch URL.
async fn launch(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let claims = match bearer_claims(&st, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !matches!(
        Role::parse(&claims.role),
        Some(Role::Practitioner | Role::Admin)
    ) {
        return oauth_error(OAuthError {
            status: 403,
            error: "insufficient_scope",
            description: "launch contexts are made by practitioners and admins".into(),
        });
    }
    let Some(patient) = body["patient"]
        .as_str()
        .map(|p| p.trim_start_matches("Patient/").to_string())
    else {
        return oauth_error(OAuthError {
            status: 400,
            error: "invalid_request",
            description: "patient is required".into(),
        });
    };
    let encounter = body["encounter"]
        .as_str()
        .map(|e| e.trim_start_matches("Encounter/").to_string());
    match st.auth.create_launch(&patient, encounter.as_deref()).await {
        Ok(l) => no_store(Json(json!({"launch": l})).into_response()),
        Err(e) => oauth_error(e),
    }
}
