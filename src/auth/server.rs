//! The embedded authorization server (SMART App Launch 2.x, OAuth 2.0): the authorization-code
//! flow with PKCE (S256 only) through login, TOTP and consent; the token endpoint
//! (authorization_code, refresh_token with rotation and reuse detection, client_credentials
//! with `private_key_jwt` for Backend Services); introspection (RFC 7662) and revocation
//! (RFC 7009). No HTTP here: `api::oauth` turns these results into pages, redirects and JSON.
//!
//! Between the steps of a login the state travels in a signed, short-lived `tx` token (our key,
//! an audience of its own, so it can never pass as an access token).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::accounts::verify_secret;
use crate::auth::policy::{Principal, Role};
use crate::auth::scope::{Context, Scopes};
use crate::auth::{keys, now_secs, Auth};
use crate::store::auth::{ClientRow, GrantRow, UserRow};

/// An OAuth 2.0 error (RFC 6749 §5.2): rendered as JSON, never as an OperationOutcome.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

fn oauth(status: u16, error: &'static str, d: impl Into<String>) -> OAuthError {
    OAuthError {
        status,
        error,
        description: d.into(),
    }
}

fn bad_request(d: impl Into<String>) -> OAuthError {
    oauth(400, "invalid_request", d)
}

fn invalid_grant(d: impl Into<String>) -> OAuthError {
    oauth(400, "invalid_grant", d)
}

fn invalid_client(d: impl Into<String>) -> OAuthError {
    oauth(401, "invalid_client", d)
}

pub(crate) fn server_error(e: impl std::fmt::Display) -> OAuthError {
    tracing::error!(error = %e, "authorization server failure");
    oauth(500, "server_error", "internal error")
}

pub type OAuthResult<T> = Result<T, OAuthError>;

/// Access tokens of user flows live this long; Backend Services' at most 300 s.
pub const USER_TOKEN_TTL: i64 = 900;
pub const BACKEND_TOKEN_TTL: i64 = 300;
const CODE_TTL: i64 = 60;
const REFRESH_TTL: i64 = 30 * 24 * 3600;
const TX_TTL: i64 = 600;
/// Hashed against when the user does not exist, so that answer takes as long as a wrong
/// password (no user enumeration by timing).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// Failed logins before the account locks; the lock then doubles with every further failure.
const LOCK_AFTER: i64 = 5;

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // SystemRandom fails only if the OS has no randomness; nothing can be issued then.
    if SystemRandom::new().fill(&mut b).is_err() {
        panic!("the operating system's random source failed");
    }
    URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256_b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(s.as_bytes()))
}

/// Where a login is, carried between its pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTx {
    pub aud: String,
    pub exp: i64,
    pub stage: String,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    pub challenge: String,
    #[serde(default)]
    pub nonce: Option<String>,
    /// The patient of an EHR launch.
    #[serde(default)]
    pub launch_patient: Option<String>,
    /// The encounter of an EHR launch (an id in the EHR; passed through to the token response).
    #[serde(default)]
    pub launch_encounter: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// A TOTP secret being enrolled (base32), shown to the user on the enrolment page.
    #[serde(default)]
    pub enrol_secret: Option<String>,
}

/// What a code or refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub subject: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub scope: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub nonce: Option<String>,
    /// EHR launch: the patient came from the EHR's context.
    pub launched: bool,
    /// EHR launch: the encounter in the EHR's context.
    #[serde(default)]
    pub encounter: Option<String>,
}

/// The next page of a login.
pub enum Step {
    /// Ask for the second factor.
    Totp(LoginTx),
    /// Enrol a TOTP authenticator first (practitioners and admins): show the otpauth URI.
    Enrol { tx: LoginTx, otpauth: String },
    /// Ask for consent to these scopes.
    Consent(LoginTx),
}

/// The parameters of `GET /auth/authorize`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub launch: Option<String>,
    pub nonce: Option<String>,
}

/// A failed authorization request: either shown to the user (the redirect URI can't be
/// trusted) or sent back to the client's redirect URI.
pub enum AuthorizeError {
    Show(String),
    Redirect(String),
}

fn redirect_with(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", ser.finish())
}

impl Auth {
    fn tx_audience(&self) -> String {
        format!("{}/auth/tx", self.issuer)
    }

    pub fn seal(&self, tx: &LoginTx) -> OAuthResult<String> {
        let (kid, key) = self.keys.signer().ok_or_else(|| server_error("no key"))?;
        let mut h = Header::new(keys::ALG);
        h.kid = Some(kid);
        encode(&h, tx, &key).map_err(server_error)
    }

    pub fn open(&self, sealed: &str, stage: &str) -> OAuthResult<LoginTx> {
        let bad = || bad_request("the login session is invalid or has expired; start again");
        let h = decode_header(sealed).map_err(|_| bad())?;
        let key = h.kid.and_then(|k| self.keys.verifier(&k)).ok_or_else(bad)?;
        let mut v = Validation::new(keys::ALG);
        v.set_audience(&[self.tx_audience()]);
        v.set_required_spec_claims(&["exp", "aud"]);
        let tx = decode::<LoginTx>(sealed, &key, &v)
            .map_err(|_| bad())?
            .claims;
        if tx.stage != stage {
            return Err(bad());
        }
        Ok(tx)
    }

    async fn client(&self, client_id: &str) -> OAuthResult<ClientRow> {
        self.store
            .auth_client(client_id)
            .await
            .map_err(server_error)?
            .ok_or_else(|| invalid_client("unknown client"))
    }

    /// Checks an authorization request and starts a login.
    pub async fn authorize(
        &self,
        p: &AuthorizeParams,
        request_base: &str,
    ) -> Result<LoginTx, AuthorizeError> {
        let client_id = p
            .client_id
            .as_deref()
            .ok_or_else(|| AuthorizeError::Show("client_id is required".into()))?;
        let client = match self.store.auth_client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(AuthorizeError::Show("unknown client".into())),
            Err(e) => return Err(AuthorizeError::Show(server_error(e).description)),
        };
        let registered: Vec<String> =
            serde_json::from_str(&client.redirect_uris).unwrap_or_default();
        let redirect_uri = match p.redirect_uri.as_deref() {
            Some(r) if registered.iter().any(|x| x == r) => r.to_string(),
            Some(_) => {
                return Err(AuthorizeError::Show(
                    "redirect_uri is not registered for this client".into(),
                ))
            }
            None if registered.len() == 1 => registered[0].clone(),
            None => return Err(AuthorizeError::Show("redirect_uri is required".into())),
        };
        let state = p.state.clone().unwrap_or_default();
        let fail = |error: &str, d: &str| {
            let mut pairs = vec![("error", error), ("error_description", d)];
            if !state.is_empty() {
                pairs.push(("state", state.as_str()));
            }
            AuthorizeError::Redirect(redirect_with(&redirect_uri, &pairs))
        };
        if p.response_type.as_deref() != Some("code") {
            return Err(fail(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        if state.is_empty() {
            return Err(fail("invalid_request", "state is required"));
        }
        let aud = p.aud.as_deref().unwrap_or_default().trim_end_matches('/');
        if aud != self.audience && aud != request_base.trim_end_matches('/') {
            return Err(fail(
                "invalid_request",
                "aud must be this server's FHIR base URL",
            ));
        }
        match (
            p.code_challenge.as_deref(),
            p.code_challenge_method.as_deref(),
        ) {
            (Some(c), Some("S256")) if c.len() >= 43 => {}
            (_, Some("plain")) => {
                return Err(fail(
                    "invalid_request",
                    "PKCE method plain is not accepted; use S256",
                ))
            }
            _ => return Err(fail("invalid_request", "PKCE with S256 is required")),
        }
        let asked = Scopes::parse(p.scope.as_deref().unwrap_or_default())
            .map_err(|e| fail("invalid_scope", &e))?;
        let allowed = Scopes::parse(&client.scopes).unwrap_or_default();
        let granted = asked.narrowed_to(&allowed);
        let (launch_patient, launch_encounter) = match p.launch.as_deref() {
            None => (None, None),
            Some(l) => {
                let g = self
                    .store
                    .auth_grant(&sha256_b64(l))
                    .await
                    .ok()
                    .flatten()
                    .filter(|g| g.kind == "launch" && g.expires > now_secs() && !g.revoked);
                match g.and_then(|g| serde_json::from_str::<Value>(&g.grant_json).ok()) {
                    Some(v) => (
                        v["patient"].as_str().map(String::from),
                        v["encounter"].as_str().map(String::from),
                    ),
                    None => return Err(fail("invalid_request", "unknown or expired launch")),
                }
            }
        };
        Ok(LoginTx {
            aud: self.tx_audience(),
            exp: now_secs() + TX_TTL,
            stage: "login".into(),
            client_id: client.client_id.clone(),
            client_name: client.name.clone(),
            redirect_uri,
            scope: granted.to_scope_string(),
            state,
            challenge: p.code_challenge.clone().unwrap_or_default(),
            nonce: p.nonce.clone(),
            launch_patient,
            launch_encounter,
            username: None,
            enrol_secret: None,
        })
    }

    /// Checks a password (with lockout and backoff) and says what comes next.
    pub async fn login(
        &self,
        mut tx: LoginTx,
        username: &str,
        password: &str,
    ) -> OAuthResult<Step> {
        let now = now_secs();
        let user = self.store.auth_user(username).await.map_err(server_error)?;
        let Some(user) = user else {
            // Same work and answer as a wrong password: no user enumeration.
            verify_secret(password, DUMMY_HASH);
            return Err(oauth(401, "access_denied", "wrong username or password"));
        };
        if user.locked_until > now {
            return Err(oauth(
                429,
                "access_denied",
                format!(
                    "too many failed attempts; try again in {} s",
                    user.locked_until - now
                ),
            ));
        }
        if !verify_secret(password, &user.password_hash) {
            self.fail_login(&user, now).await?;
            return Err(oauth(401, "access_denied", "wrong username or password"));
        }
        self.store
            .auth_user_set_login_state(username, 0, 0)
            .await
            .map_err(server_error)?;
        tx.username = Some(username.to_string());
        let role = Role::parse(&user.role).unwrap_or(Role::Patient);
        let needs_mfa = matches!(role, Role::Practitioner | Role::Admin);
        tx.exp = now + TX_TTL;
        match (&user.totp_secret, needs_mfa) {
            (Some(_), _) => {
                tx.stage = "mfa".into();
                Ok(Step::Totp(tx))
            }
            (None, true) => {
                let secret = totp_rs::Secret::generate_secret().to_encoded().to_string();
                let otpauth = totp(&secret, username)?.get_url();
                tx.stage = "enrol".into();
                tx.enrol_secret = Some(secret);
                Ok(Step::Enrol { tx, otpauth })
            }
            (None, false) => {
                tx.stage = "consent".into();
                Ok(Step::Consent(tx))
            }
        }
    }

    async fn fail_login(&self, user: &UserRow, now: i64) -> OAuthResult<()> {
        let failed = user.failed_logins + 1;
        let locked_until = if failed >= LOCK_AFTER {
            let exp = (failed - LOCK_AFTER).min(7) as u32;
            now + 30 * 2i64.pow(exp)
        } else {
            0
        };
        self.store
            .auth_user_set_login_state(&user.username, failed, locked_until)
            .await
            .map_err(server_error)
    }

    /// Checks the second factor (a TOTP code or a recovery code), or completes enrolment.
    /// Returns the consent step and, on enrolment, the recovery codes to show once.
    pub async fn second_factor(
        &self,
        tx: LoginTx,
        code: &str,
    ) -> OAuthResult<(LoginTx, Option<Vec<String>>)> {
        let now = now_secs();
        let username = tx.username.clone().unwrap_or_default();
        let user = self
            .store
            .auth_user(&username)
            .await
            .map_err(server_error)?
            .ok_or_else(|| bad_request("unknown user"))?;
        if user.locked_until > now {
            return Err(oauth(
                429,
                "access_denied",
                "too many failed attempts; wait",
            ));
        }
        let code = code.trim();
        let mut recovery_shown = None;
        let ok = if tx.stage == "enrol" {
            let secret = tx.enrol_secret.clone().unwrap_or_default();
            let ok = totp(&secret, &username)?
                .check_current(code)
                .unwrap_or(false);
            if ok {
                let codes: Vec<String> = (0..8).map(|_| random_token()[..10].to_string()).collect();
                let hashes: Vec<String> = codes.iter().map(|c| sha256_b64(c)).collect();
                self.store
                    .auth_user_set_mfa(&username, Some(&secret), Some(&json!(hashes).to_string()))
                    .await
                    .map_err(server_error)?;
                recovery_shown = Some(codes);
            }
            ok
        } else {
            let secret = user.totp_secret.clone().unwrap_or_default();
            if totp(&secret, &username)?
                .check_current(code)
                .unwrap_or(false)
            {
                true
            } else {
                // A recovery code works once.
                let mut hashes: Vec<String> = user
                    .recovery_codes
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or_default();
                let h = sha256_b64(code);
                match hashes.iter().position(|x| *x == h) {
                    Some(i) => {
                        hashes.remove(i);
                        self.store
                            .auth_user_set_mfa(
                                &username,
                                Some(&secret),
                                Some(&json!(hashes).to_string()),
                            )
                            .await
                            .map_err(server_error)?;
                        true
                    }
                    None => false,
                }
            }
        };
        if !ok {
            self.fail_login(&user, now).await?;
            return Err(oauth(401, "access_denied", "wrong code"));
        }
        let mut tx = tx;
        tx.stage = "consent".into();
        tx.enrol_secret = None;
        tx.exp = now + TX_TTL;
        Ok((tx, recovery_shown))
    }

    /// The patients a practitioner or admin may pick for a standalone launch asking
    /// `launch/patient` (SMART: the server establishes the patient context), as `(id, name)`;
    /// `None` when no picker is needed (a patient user, an EHR launch, no `launch/patient`).
    /// A practitioner picks among the patients booked with them, an admin among the first 100.
    pub async fn patient_choices(
        &self,
        tx: &LoginTx,
    ) -> OAuthResult<Option<Vec<(String, String)>>> {
        let wants = tx.scope.split_whitespace().any(|s| s == "launch/patient");
        if !wants || tx.launch_patient.is_some() {
            return Ok(None);
        }
        let user = self
            .store
            .auth_user(tx.username.as_deref().unwrap_or_default())
            .await
            .map_err(server_error)?
            .ok_or_else(|| bad_request("unknown user"))?;
        let role = Role::parse(&user.role).unwrap_or(Role::Patient);
        let ids: Vec<String> = match role {
            Role::Patient | Role::System => return Ok(None),
            Role::Practitioner => {
                let p = Principal {
                    subject: user.username.clone(),
                    client_id: tx.client_id.clone(),
                    role,
                    fhir_user: user.fhir_user.clone(),
                    patient: None,
                    scopes: Scopes::default(),
                };
                let mut ids: Vec<String> = super::reach::load(&self.fhir, &p)
                    .await
                    .map_err(server_error)?
                    .patients
                    .into_iter()
                    .collect();
                ids.sort();
                ids.truncate(100);
                ids
            }
            Role::Admin => crate::fhir::access::as_system(self.fhir.find_rows("Patient", &[], 100))
                .await
                .map_err(server_error)?
                .into_iter()
                .map(|r| r.id)
                .collect(),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let name =
                match crate::fhir::access::as_system(self.fhir.store.read("Patient", &id)).await {
                    Ok(Some(s)) if !s.deleted => serde_json::from_str::<Value>(&s.body)
                        .ok()
                        .and_then(|b| {
                            let n = &b["name"][0];
                            let given = n["given"][0].as_str().unwrap_or_default();
                            let family = n["family"].as_str().unwrap_or_default();
                            let full = format!("{given} {family}").trim().to_string();
                            (!full.is_empty()).then_some(full)
                        })
                        .unwrap_or_else(|| format!("Patient/{id}")),
                    _ => continue,
                };
            out.push((id, name));
        }
        Ok(Some(out))
    }

    /// The user approved (or denied): the redirect back to the client. `picked` is the patient
    /// chosen on the consent page when [`Auth::patient_choices`] asked for one.
    pub async fn consent(
        &self,
        tx: LoginTx,
        approve: bool,
        picked: Option<&str>,
    ) -> OAuthResult<String> {
        if !approve {
            return Ok(redirect_with(
                &tx.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user declined"),
                    ("state", &tx.state),
                ],
            ));
        }
        let username = tx.username.clone().unwrap_or_default();
        let user = self
            .store
            .auth_user(&username)
            .await
            .map_err(server_error)?
            .ok_or_else(|| bad_request("unknown user"))?;
        let patient = match Role::parse(&user.role) {
            Some(Role::Patient) => user
                .fhir_user
                .as_deref()
                .and_then(|f| f.strip_prefix("Patient/"))
                .map(String::from),
            _ => match self.patient_choices(&tx).await? {
                // A standalone launch: the patient the user picked, among those offered.
                Some(choices) => {
                    let id = picked
                        .filter(|p| choices.iter().any(|(id, _)| id == p))
                        .ok_or_else(|| bad_request("choose one of the patients offered"))?;
                    Some(id.to_string())
                }
                None => tx.launch_patient.clone(),
            },
        };
        let grant = Grant {
            subject: username,
            role: user.role.clone(),
            fhir_user: user.fhir_user.clone(),
            patient,
            scope: tx.scope.clone(),
            redirect_uri: tx.redirect_uri.clone(),
            challenge: tx.challenge.clone(),
            nonce: tx.nonce.clone(),
            launched: tx.launch_patient.is_some(),
            encounter: tx.launch_encounter.clone(),
        };
        let code = random_token();
        self.store
            .auth_grant_insert(
                &sha256_b64(&code),
                &GrantRow {
                    kind: "code".into(),
                    family: uuid::Uuid::new_v4().to_string(),
                    client_id: tx.client_id.clone(),
                    grant_json: serde_json::to_string(&grant).map_err(server_error)?,
                    expires: now_secs() + CODE_TTL,
                    used: false,
                    revoked: false,
                },
            )
            .await
            .map_err(server_error)?;
        Ok(redirect_with(
            &tx.redirect_uri,
            &[("code", &code), ("state", &tx.state)],
        ))
    }

    /// Creates an EHR launch context (`launch` parameter) for `patient` (and `encounter`).
    pub async fn create_launch(
        &self,
        patient: &str,
        encounter: Option<&str>,
    ) -> OAuthResult<String> {
        let launch = random_token();
        self.store
            .auth_grant_insert(
                &sha256_b64(&launch),
                &GrantRow {
                    kind: "launch".into(),
                    family: uuid::Uuid::new_v4().to_string(),
                    client_id: String::new(),
                    grant_json: json!({"patient": patient, "encounter": encounter}).to_string(),
                    expires: now_secs() + 3600,
                    used: false,
                    revoked: false,
                },
            )
            .await
            .map_err(server_error)?;
        Ok(launch)
    }

    /// Authenticates the client at the token endpoint.
    async fn client_auth(
        &self,
        form: &TokenForm,
        basic: Option<(String, String)>,
        token_url: &str,
    ) -> OAuthResult<ClientRow> {
        if let Some(assertion) = &form.client_assertion {
            if form.client_assertion_type.as_deref()
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return Err(invalid_client("unsupported client_assertion_type"));
            }
            return self.verify_assertion(assertion, token_url).await;
        }
        let (id, secret) = match (basic, &form.client_id, &form.client_secret) {
            (Some((id, s)), _, _) => (id, Some(s)),
            (None, Some(id), s) => (id.clone(), s.clone()),
            _ => return Err(invalid_client("client authentication is required")),
        };
        let client = self.client(&id).await?;
        match (client.kind.as_str(), secret) {
            ("public", None) => Ok(client),
            ("confidential-symmetric", Some(s))
                if client
                    .secret_hash
                    .as_deref()
                    .is_some_and(|h| verify_secret(&s, h)) =>
            {
                Ok(client)
            }
            _ => Err(invalid_client("client authentication failed")),
        }
    }

    /// SMART Backend Services: a JWT signed by the client's key (RS384 or ES384), for us.
    async fn verify_assertion(&self, assertion: &str, token_url: &str) -> OAuthResult<ClientRow> {
        #[derive(Deserialize)]
        struct A {
            iss: String,
            sub: String,
            exp: i64,
            jti: String,
        }
        let h =
            decode_header(assertion).map_err(|_| invalid_client("malformed client assertion"))?;
        if !matches!(h.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(invalid_client("client assertions must be RS384 or ES384"));
        }
        // Who claims to be calling: read unverified, then verify with that client's keys.
        let claimed: Value = assertion
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid_client("malformed client assertion"))?;
        let client_id = claimed["iss"].as_str().unwrap_or_default();
        let client = self.client(client_id).await?;
        if client.kind != "confidential-asymmetric" {
            return Err(invalid_client(
                "this client does not authenticate with keys",
            ));
        }
        let jwks: jsonwebtoken::jwk::JwkSet = client
            .jwks
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .ok_or_else(|| invalid_client("the client has no usable key set"))?;
        let jwk = match &h.kid {
            Some(kid) => jwks.find(kid),
            None => None,
        }
        .ok_or_else(|| invalid_client("no key of the client matches the assertion's kid"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid_client("unusable client key"))?;
        let mut v = Validation::new(h.alg);
        v.set_audience(&[token_url]);
        v.set_issuer(&[client_id]);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud", "jti"]);
        v.leeway = 5;
        let a = decode::<A>(assertion, &key, &v)
            .map_err(|e| invalid_client(format!("client assertion rejected: {e}")))?
            .claims;
        let now = now_secs();
        if a.sub != a.iss {
            return Err(invalid_client("iss and sub must both be the client_id"));
        }
        if a.exp > now + 300 + 5 {
            return Err(invalid_client(
                "client assertions may live at most 5 minutes",
            ));
        }
        if !self
            .store
            .auth_jti_record(&format!("{}:{}", a.iss, a.jti), "assertion", a.exp + 60)
            .await
            .map_err(server_error)?
        {
            return Err(invalid_client("this assertion's jti was already used"));
        }
        Ok(client)
    }

    /// `POST /auth/token`.
    pub async fn token(
        &self,
        form: &TokenForm,
        basic: Option<(String, String)>,
        token_url: &str,
    ) -> OAuthResult<Value> {
        match form.grant_type.as_deref() {
            Some("authorization_code") => {
                let client = self.client_auth(form, basic, token_url).await?;
                self.exchange_code(&client, form).await
            }
            Some("refresh_token") => {
                let client = self.client_auth(form, basic, token_url).await?;
                self.refresh(&client, form).await
            }
            Some("client_credentials") => {
                let client = self.client_auth(form, basic, token_url).await?;
                if client.kind == "public" {
                    return Err(oauth(
                        400,
                        "unauthorized_client",
                        "public clients cannot use client_credentials",
                    ));
                }
                let asked = Scopes::parse(form.scope.as_deref().unwrap_or_default())
                    .map_err(|e| oauth(400, "invalid_scope", e))?;
                let granted = asked.narrowed_to(&Scopes::parse(&client.scopes).unwrap_or_default());
                if granted
                    .resources
                    .iter()
                    .any(|s| s.context != Context::System)
                    || granted.resources.is_empty()
                {
                    return Err(oauth(
                        400,
                        "invalid_scope",
                        "Backend Services get system/ scopes the client was registered for",
                    ));
                }
                let role = client
                    .role
                    .as_deref()
                    .and_then(Role::parse)
                    .unwrap_or(Role::System);
                let p = Principal {
                    subject: client.client_id.clone(),
                    client_id: client.client_id.clone(),
                    role,
                    fhir_user: None,
                    patient: None,
                    scopes: granted,
                };
                let (token, claims) = self.mint(&p, BACKEND_TOKEN_TTL).map_err(server_error)?;
                Ok(json!({"access_token": token, "token_type": "Bearer",
                    "expires_in": claims.exp - claims.iat, "scope": claims.scope}))
            }
            Some(_) => Err(oauth(
                400,
                "unsupported_grant_type",
                "unsupported grant_type",
            )),
            None => Err(bad_request("grant_type is required")),
        }
    }

    /// Spends a code or refresh token of `client`: single use — a second use revokes everything
    /// its family produced (RFC 6749 §4.1.2, refresh-token rotation) — and unexpired.
    async fn spend(
        &self,
        handle: &str,
        kind: &str,
        client: &ClientRow,
    ) -> OAuthResult<(GrantRow, Grant)> {
        let what = if kind == "code" {
            "code"
        } else {
            "refresh token"
        };
        let h = sha256_b64(handle);
        let row = self
            .store
            .auth_grant(&h)
            .await
            .map_err(server_error)?
            .filter(|g| g.kind == kind)
            .ok_or_else(|| invalid_grant(format!("unknown {what}")))?;
        if row.client_id != client.client_id {
            return Err(invalid_grant(format!(
                "the {what} was issued to another client"
            )));
        }
        if row.revoked {
            return Err(invalid_grant(format!("the {what} has been revoked")));
        }
        if !self.store.auth_grant_use(&h).await.map_err(server_error)? {
            // Someone has a copy: revoke the whole family, access tokens included.
            self.revoke_family(&row.family).await?;
            return Err(invalid_grant(format!(
                "the {what} was already used; what it granted is revoked"
            )));
        }
        if row.expires < now_secs() {
            return Err(invalid_grant(format!("the {what} has expired")));
        }
        let g: Grant = serde_json::from_str(&row.grant_json).map_err(server_error)?;
        Ok((row, g))
    }

    async fn exchange_code(&self, client: &ClientRow, form: &TokenForm) -> OAuthResult<Value> {
        let code = form
            .code
            .as_deref()
            .ok_or_else(|| bad_request("code is required"))?;
        let (row, g) = self.spend(code, "code", client).await?;
        if form.redirect_uri.as_deref() != Some(g.redirect_uri.as_str()) {
            return Err(invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        let verifier = form
            .code_verifier
            .as_deref()
            .ok_or_else(|| invalid_grant("code_verifier is required"))?;
        if sha256_b64(verifier) != g.challenge {
            return Err(invalid_grant("PKCE verification failed"));
        }
        self.issue(client, &g, &row.family, true).await
    }

    async fn refresh(&self, client: &ClientRow, form: &TokenForm) -> OAuthResult<Value> {
        let rt = form
            .refresh_token
            .as_deref()
            .ok_or_else(|| bad_request("refresh_token is required"))?;
        let (row, mut g) = self.spend(rt, "refresh", client).await?;
        if let Some(s) = form.scope.as_deref() {
            let asked = Scopes::parse(s).map_err(|e| oauth(400, "invalid_scope", e))?;
            g.scope = asked
                .narrowed_to(&Scopes::parse(&g.scope).unwrap_or_default())
                .to_scope_string();
        }
        self.issue(client, &g, &row.family, false).await
    }

    /// The token response of the user flows.
    async fn issue(
        &self,
        client: &ClientRow,
        g: &Grant,
        family: &str,
        first: bool,
    ) -> OAuthResult<Value> {
        let scopes = Scopes::parse(&g.scope).map_err(server_error)?;
        let role = Role::parse(&g.role).unwrap_or(Role::Patient);
        let p = Principal {
            subject: g.subject.clone(),
            client_id: client.client_id.clone(),
            role,
            fhir_user: g.fhir_user.clone(),
            patient: g.patient.clone(),
            scopes: scopes.clone(),
        };
        let (token, claims) = self.mint(&p, USER_TOKEN_TTL).map_err(server_error)?;
        // Remembered with its family, so revoking the family revokes this token too.
        self.store
            .auth_grant_insert(
                &format!("access:{}", claims.jti),
                &GrantRow {
                    kind: "access".into(),
                    family: family.to_string(),
                    client_id: client.client_id.clone(),
                    grant_json: claims.jti.clone(),
                    expires: claims.exp,
                    used: true,
                    revoked: false,
                },
            )
            .await
            .map_err(server_error)?;
        let mut out = json!({"access_token": token, "token_type": "Bearer",
            "expires_in": claims.exp - claims.iat, "scope": claims.scope});
        if let Some(pid) = &g.patient {
            out["patient"] = json!(pid);
            // A standalone launch has no EHR banner around the app.
            out["need_patient_banner"] = json!(!g.launched);
        }
        if let Some(e) = &g.encounter {
            if scopes.has("launch") || scopes.has("launch/encounter") {
                out["encounter"] = json!(e);
            }
        }
        if scopes.has("openid") && (scopes.has("fhirUser") || scopes.has("profile")) {
            out["id_token"] = json!(self.id_token(client, g, first)?);
        }
        if scopes.has("offline_access") || scopes.has("online_access") {
            let rt = random_token();
            self.store
                .auth_grant_insert(
                    &sha256_b64(&rt),
                    &GrantRow {
                        kind: "refresh".into(),
                        family: family.to_string(),
                        client_id: client.client_id.clone(),
                        grant_json: serde_json::to_string(g).map_err(server_error)?,
                        expires: now_secs() + REFRESH_TTL,
                        used: false,
                        revoked: false,
                    },
                )
                .await
                .map_err(server_error)?;
            out["refresh_token"] = json!(rt);
        }
        Ok(out)
    }

    fn id_token(&self, client: &ClientRow, g: &Grant, first: bool) -> OAuthResult<String> {
        let (kid, key) = self.keys.signer().ok_or_else(|| server_error("no key"))?;
        let now = now_secs();
        let mut claims = json!({"iss": self.issuer, "sub": g.subject, "aud": client.client_id,
            "iat": now, "exp": now + USER_TOKEN_TTL});
        if let Some(f) = &g.fhir_user {
            claims["fhirUser"] = json!(format!("{}/{f}", self.audience));
        }
        if let (Some(n), true) = (&g.nonce, first) {
            claims["nonce"] = json!(n);
        }
        let mut h = Header::new(keys::ALG);
        h.kid = Some(kid);
        encode(&h, &claims, &key).map_err(server_error)
    }

    /// RFC 7662. `active: false` for anything not valid now.
    pub async fn introspect(&self, token: &str) -> Value {
        if let Ok(c) = self.verify(token).await {
            let mut v = json!({"active": true, "scope": c.scope, "client_id": c.client_id,
                "sub": c.sub, "exp": c.exp, "iat": c.iat, "iss": c.iss, "aud": c.aud,
                "token_type": "Bearer"});
            if let Some(f) = c.fhir_user {
                v["fhirUser"] = json!(f);
            }
            if let Some(p) = c.patient {
                v["patient"] = json!(p);
            }
            return v;
        }
        if let Ok(Some(g)) = self.store.auth_grant(&sha256_b64(token)).await {
            if g.kind == "refresh" && !g.used && !g.revoked && g.expires > now_secs() {
                let grant: Option<Grant> = serde_json::from_str(&g.grant_json).ok();
                return json!({"active": true, "client_id": g.client_id, "exp": g.expires,
                    "scope": grant.as_ref().map(|x| x.scope.clone()),
                    "sub": grant.map(|x| x.subject), "token_type": "refresh_token"});
            }
        }
        json!({"active": false})
    }

    /// RFC 7009: revoke an access token (by its jti) or a refresh token (its whole family).
    pub async fn revoke(&self, token: &str) -> OAuthResult<()> {
        if let Ok(c) = self.verify(token).await {
            self.revoke_jti(&c.jti, c.exp).await.map_err(server_error)?;
            return Ok(());
        }
        if let Ok(Some(g)) = self.store.auth_grant(&sha256_b64(token)).await {
            self.revoke_family(&g.family).await?;
        }
        Ok(())
    }

    /// Revokes every code and refresh token of a family and every access token issued from
    /// them (RFC 6749 §4.1.2: a reused code; RFC 7009 §2.1: a revoked refresh token).
    async fn revoke_family(&self, family: &str) -> OAuthResult<()> {
        self.store
            .auth_family_revoke(family)
            .await
            .map_err(server_error)?;
        for (jti, exp) in self
            .store
            .auth_family_access(family)
            .await
            .map_err(server_error)?
        {
            self.revoke_jti(&jti, exp).await.map_err(server_error)?;
        }
        Ok(())
    }
}

fn totp(secret_b32: &str, account: &str) -> OAuthResult<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .map_err(|_| server_error("bad TOTP secret"))?;
    let account: String = account.chars().filter(|c| *c != ':').collect();
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some("fhir-scheduler".into()),
        account,
    )
    .map_err(server_error)
}

/// The current TOTP code for a base32 secret (tests and the enrolment check use it).
pub fn totp_now(secret_b32: &str) -> Option<String> {
    totp(secret_b32, "x").ok()?.generate_current().ok()
}

/// The form of `POST /auth/token`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_parses_so_unknown_users_cost_a_real_hash() {
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
