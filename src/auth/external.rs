//! Access tokens of an external OpenID Connect provider (`--oidc-issuer`), accepted beside our
//! own. Its keys come from its discovery document (`{issuer}/.well-known/openid-configuration`,
//! whose `issuer` must be the configured one exactly) and its `jwks_uri`, fetched at the first
//! token that needs them and kept by `kid`. A token naming an unknown `kid` makes us fetch the
//! JWKS again (the provider may have rotated) — at most once per [`REFETCH_EVERY`], so a flood
//! of made-up kids cannot hammer the provider — and is refused if the kid is still unknown.
//! The keys are also re-read when older than [`MAX_KEY_AGE`], so a key the provider withdrew
//! stops verifying.
//!
//! Accepted: RS256, RS384, ES256, ES384, each only with a key of its kind (RSA; EC P-256 / P-384)
//! and, when the JWK names its `alg`, only that one. Never `none`, never HS*. Checked: issuer,
//! audience, `exp`, `nbf` (5 s leeway), `sub`. The claims become our [`AccessClaims`] (role,
//! `fhirUser`, patient, scopes), so that from there on an external token is judged exactly like
//! one of ours (`Auth::principal`, the policy, revocation by `jti`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::policy::Role;
use crate::auth::{invalid_token, AccessClaims};
use crate::config::OidcConfig;
use crate::fhir::error::{FhirError, FhirResult};

/// Least time between two JWKS fetches caused by unknown kids (and between retries after a
/// failed fetch).
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// Keys older than this are fetched again before use (withdrawn keys stop verifying).
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Largest discovery document or JWKS read.
const MAX_BODY: usize = 256 * 1024;
/// The signing algorithms accepted.
const ALGS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// The FHIR types a `fhirUser` may name (SMART App Launch).
const USER_TYPES: [&str; 5] = [
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Person",
];

/// A verification key and the algorithms it may verify.
#[derive(Clone)]
struct Key {
    algs: Vec<Algorithm>,
    decoding: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Key>,
    /// When the keys were last fetched successfully.
    loaded: Option<Instant>,
}

/// What serialises and paces the fetches.
#[derive(Default)]
struct Fetching {
    /// From the discovery document; discovered again after a failed JWKS fetch.
    jwks_uri: Option<String>,
    /// The last fetch caused by an unknown kid.
    last_unknown_kid: Option<Instant>,
    /// The last failed fetch.
    last_failure: Option<Instant>,
}

/// The external identity provider.
pub struct ExternalIdp {
    pub issuer: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    fetching: tokio::sync::Mutex<Fetching>,
}

/// `https://…`, or `http://` on a loopback host (development and tests).
fn acceptable_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

fn elapsed(t: Option<Instant>, d: Duration) -> bool {
    t.is_none_or(|t| t.elapsed() >= d)
}

fn unavailable() -> FhirError {
    FhirError::Internal("the external identity provider's keys are unavailable".into())
}

impl ExternalIdp {
    /// `fhir_base` is our FHIR base URL (the default audience); `our_issuer`, our own `iss`.
    pub fn new(config: &OidcConfig, fhir_base: &str, our_issuer: &str) -> anyhow::Result<Self> {
        let issuer = config.issuer.clone();
        if !acceptable_url(&issuer) {
            anyhow::bail!(
                "--oidc-issuer {issuer}: must be an https URL (http only on a loopback address)"
            );
        }
        if issuer.trim_end_matches('/') == our_issuer.trim_end_matches('/') {
            anyhow::bail!("--oidc-issuer {issuer}: that is this server's own issuer");
        }
        for (flag, claim) in [
            ("--oidc-role-claim", &config.role_claim),
            ("--oidc-fhir-user-claim", &config.fhir_user_claim),
            ("--oidc-scope-claim", &config.scope_claim),
        ] {
            if claim.is_empty() {
                anyhow::bail!("{flag} must not be empty");
            }
        }
        let audience = config
            .audience
            .clone()
            .unwrap_or_else(|| fhir_base.trim_end_matches('/').to_string());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fhir-scheduler/", env!("CARGO_PKG_VERSION")))
            .build()?;
        tracing::info!(%issuer, %audience, "access tokens of an external identity provider accepted");
        Ok(Self {
            issuer,
            audience,
            config: config.clone(),
            http,
            keys: Default::default(),
            fetching: Default::default(),
        })
    }

    /// Does the token claim to come from this provider? Reads the payload unverified, only to
    /// route the token to the right verifier.
    pub fn claims_issuer(&self, token: &str) -> bool {
        let Some(payload) = token.split('.').nth(1) else {
            return false;
        };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
            return false;
        };
        #[derive(serde::Deserialize)]
        struct Peek {
            iss: Option<Value>,
        }
        serde_json::from_slice::<Peek>(&bytes)
            .ok()
            .and_then(|p| p.iss)
            .is_some_and(|iss| iss.as_str() == Some(self.issuer.as_str()))
    }

    /// Verifies one of the provider's access tokens; its claims as ours.
    pub async fn verify(&self, token: &str) -> FhirResult<AccessClaims> {
        let header = decode_header(token).map_err(|_| invalid_token("malformed token"))?;
        if !ALGS.contains(&header.alg) {
            return Err(invalid_token("unexpected signing algorithm"));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid_token("the token names no key"))?;
        let key = self.key(&kid).await?;
        if !key.algs.contains(&header.alg) {
            return Err(invalid_token("the signing algorithm does not fit the key"));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        let data = decode::<Map<String, Value>>(token, &key.decoding, &v)
            .map_err(|e| super::jwt_rejection(&e))?;
        let token_hash = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        map_claims(
            &self.config,
            &self.issuer,
            &self.audience,
            &data.claims,
            &token_hash,
        )
        .map_err(invalid_token)
    }

    /// The key `kid`, fetching the JWKS when we have none yet, when ours are old, or when the
    /// kid is unknown (paced by `REFETCH_EVERY`).
    async fn key(&self, kid: &str) -> FhirResult<Key> {
        let (have, fresh) = self.cached(kid);
        if let (Some(k), true) = (&have, fresh) {
            return Ok(k.clone());
        }
        let mut f = match (have, self.fetching.try_lock()) {
            (_, Ok(f)) => f,
            // A known key while another request refreshes the (old) keys: use it meanwhile.
            (Some(k), Err(_)) => return Ok(k),
            (None, Err(_)) => self.fetching.lock().await,
        };
        // Another request may have fetched while this one waited.
        let (have, fresh) = self.cached(kid);
        if let (Some(k), true) = (&have, fresh) {
            return Ok(k.clone());
        }
        let loaded = self.keys.read().map_err(|_| unavailable())?.loaded;
        let fetch = if loaded.is_none() || (have.is_some() && !fresh) {
            // First use, or keys too old: retried no faster than REFETCH_EVERY after a failure.
            elapsed(f.last_failure, REFETCH_EVERY)
        } else if have.is_none() && elapsed(f.last_unknown_kid, REFETCH_EVERY) {
            // Unknown kid: the provider may have rotated. Once per REFETCH_EVERY at most.
            f.last_unknown_kid = Some(Instant::now());
            true
        } else {
            false
        };
        if fetch {
            if let Err(e) = self.fetch(&mut f).await {
                tracing::warn!(issuer = %self.issuer, error = %e,
                    "cannot read the external identity provider's keys");
                f.last_failure = Some(Instant::now());
                f.jwks_uri = None;
            }
        }
        let keys = self.keys.read().map_err(|_| unavailable())?;
        if keys.loaded.is_none() {
            return Err(unavailable());
        }
        // Old keys that cannot be refreshed right now keep verifying: the provider being down
        // does not log everybody out. A key the refreshed set lacks is refused.
        keys.by_kid
            .get(kid)
            .cloned()
            .ok_or_else(|| invalid_token("unknown signing key"))
    }

    /// The key `kid` if we have it, and whether our keys are younger than `MAX_KEY_AGE`.
    fn cached(&self, kid: &str) -> (Option<Key>, bool) {
        match self.keys.read() {
            Ok(keys) => (
                keys.by_kid.get(kid).cloned(),
                !elapsed(keys.loaded, MAX_KEY_AGE),
            ),
            Err(_) => (None, false),
        }
    }

    /// Discovery (when the JWKS location is not known yet), then the JWKS.
    async fn fetch(&self, f: &mut Fetching) -> Result<(), String> {
        let jwks_uri = match &f.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let doc = self.get_json(&url).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
                    return Err(format!(
                        "the discovery document's issuer {} is not the configured {}",
                        doc.get("issuer").unwrap_or(&Value::Null),
                        self.issuer
                    ));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("the discovery document names no jwks_uri")?;
                if !acceptable_url(uri) {
                    return Err(format!("jwks_uri {uri} is not https"));
                }
                f.jwks_uri = Some(uri.to_string());
                uri.to_string()
            }
        };
        let jwks = self.get_json(&jwks_uri).await?;
        let keys = parse_jwks(&jwks)?;
        tracing::info!(issuer = %self.issuer, keys = keys.len(),
            "external identity provider's keys read");
        let mut set = self.keys.write().map_err(|_| "key cache unusable")?;
        set.by_kid = keys;
        set.loaded = Some(Instant::now());
        Ok(())
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let mut resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(format!("GET {url}: the answer is over {MAX_BODY} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }
}

/// The usable signature keys of a JWK Set, by kid. Keys without a kid, for another use, of
/// another kind or malformed are left out.
fn parse_jwks(jwks: &Value) -> Result<HashMap<String, Key>, String> {
    let list = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no keys array")?;
    let mut out = HashMap::new();
    for jwk in list {
        let Some(kid) = jwk.get("kid").and_then(Value::as_str) else {
            continue;
        };
        match parse_jwk(jwk) {
            Ok(Some(k)) => {
                out.insert(kid.to_string(), k);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(kid, error = %e, "external JWK skipped"),
        }
    }
    Ok(out)
}

/// One JWK as a verification key; `None` for a key not meant for (or not usable for) verifying
/// the accepted algorithms.
fn parse_jwk(jwk: &Value) -> Result<Option<Key>, String> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|o| o == "verify") {
            return Ok(None);
        }
    }
    let b64len = |name: &str| -> Result<usize, String> {
        let v = s(name).ok_or_else(|| format!("no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(v)
            .map(|b| b.len())
            .map_err(|_| format!("{name} is not base64url"))
    };
    let (kind_algs, decoding) = match (s("kty"), s("crv")) {
        (Some("RSA"), _) => {
            if b64len("n")? < 256 {
                return Err("RSA keys under 2048 bits are not accepted".into());
            }
            b64len("e")?;
            let key = DecodingKey::from_rsa_components(
                s("n").unwrap_or_default(),
                s("e").unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
            (vec![Algorithm::RS256, Algorithm::RS384], key)
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (alg, len) = if crv == "P-256" {
                (Algorithm::ES256, 32)
            } else {
                (Algorithm::ES384, 48)
            };
            if b64len("x")? != len || b64len("y")? != len {
                return Err(format!("coordinates of the wrong size for {crv}"));
            }
            let key = DecodingKey::from_ec_components(
                s("x").unwrap_or_default(),
                s("y").unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
            (vec![alg], key)
        }
        _ => return Ok(None),
    };
    let algs = match s("alg") {
        None => kind_algs,
        Some(named) => match kind_algs
            .into_iter()
            .find(|a| named.parse::<Algorithm>().is_ok_and(|n| n == *a))
        {
            Some(a) => vec![a],
            // An alg we do not accept, or one that does not fit the key.
            None => return Ok(None),
        },
    };
    Ok(Some(Key { algs, decoding }))
}

/// The claim `name`: top-level first; else, for a dotted name, the path through nested
/// objects (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// A string, or the strings of an array.
fn strings(v: &Value) -> Result<Vec<&str>, String> {
    match v {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().ok_or_else(|| "not a string".to_string()))
            .collect(),
        _ => Err("not a string or an array of strings".into()),
    }
}

/// A FHIR id (R4: 1–64 of A-Z a-z 0-9 - .).
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// `fhirUser` as a reference relative to our base (`Patient/123`): it may be given so or as an
/// absolute URL on our base (as SMART's id_token carries it); one on another server is refused.
fn fhir_user(raw: &str, fhir_base: &str) -> Result<String, String> {
    let rel = match raw.strip_prefix(fhir_base.trim_end_matches('/')) {
        Some(r) => r
            .strip_prefix('/')
            .ok_or_else(|| format!("fhirUser {raw} is not on this server"))?,
        None if raw.contains("://") => return Err(format!("fhirUser {raw} is not on this server")),
        None => raw,
    };
    match rel.split_once('/') {
        Some((t, id)) if USER_TYPES.contains(&t) && is_id(id) => Ok(rel.to_string()),
        _ => Err(format!("fhirUser {raw} is not a Patient, Practitioner, PractitionerRole, RelatedPerson or Person")),
    }
}

/// The verified claims of an external token as ours. `token_hash` names a token without `jti`
/// (for revocation). The kid, signature, issuer, audience and lifetime are already checked.
fn map_claims(
    cfg: &OidcConfig,
    issuer: &str,
    audience: &str,
    c: &Map<String, Value>,
    token_hash: &str,
) -> Result<AccessClaims, String> {
    let int = |name: &str| -> Result<Option<i64>, String> {
        match c.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("the {name} claim is not a number of seconds")),
        }
    };
    let sub = c
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("the token has no subject")?;
    let exp = int("exp")?.ok_or("the token has no expiry")?;
    let iat = int("iat")?.unwrap_or(0);
    let nbf = int("nbf")?.unwrap_or(0);
    // Revocation is by jti: the provider's, under its issuer (its ids are unique to it only),
    // or the token's hash when it has none.
    let jti = match c.get("jti").and_then(Value::as_str) {
        Some(j) if !j.is_empty() => format!("{issuer}#{j}"),
        _ => format!("{issuer}#sha256:{token_hash}"),
    };

    let role_claim = claim(c, &cfg.role_claim)
        .ok_or_else(|| format!("the token has no role (claim {})", cfg.role_claim))?;
    let known: Vec<&str> = strings(role_claim)
        .map_err(|e| format!("the role claim is {e}"))?
        .into_iter()
        .filter(|r| Role::parse(r).is_some())
        .collect();
    let role = match known.as_slice() {
        [one] => Role::parse(one).ok_or("unknown role")?,
        [] => {
            return Err(format!(
                "the token has no known role (claim {})",
                cfg.role_claim
            ))
        }
        _ => return Err("the token has more than one role".into()),
    };

    let scope_value = claim(c, &cfg.scope_claim).or_else(|| c.get("scp"));
    let scope = match scope_value {
        None => String::new(),
        Some(v) => {
            let parts = strings(v).map_err(|e| format!("the scope claim is {e}"))?;
            if let Value::Array(_) = v {
                if parts
                    .iter()
                    .any(|s| s.is_empty() || s.contains(char::is_whitespace))
                {
                    return Err("a scope in the scope array is empty or has spaces".into());
                }
            }
            parts.join(" ")
        }
    };

    let fhir_user = match claim(c, &cfg.fhir_user_claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) => Some(fhir_user(f, audience)?),
        Some(_) => return Err("the fhirUser claim is not a string".into()),
    };
    if role == Role::Patient
        && !fhir_user
            .as_deref()
            .is_some_and(|f| f.starts_with("Patient/"))
    {
        return Err("a patient's token must name their Patient in fhirUser".into());
    }
    let patient = match c.get("patient") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => {
            let id = p.strip_prefix("Patient/").unwrap_or(p);
            if !is_id(id) {
                return Err("the patient claim is not a Patient id".into());
            }
            Some(id.to_string())
        }
        Some(_) => return Err("the patient claim is not a string".into()),
    };
    let client_id = ["client_id", "azp"]
        .iter()
        .find_map(|n| c.get(*n).and_then(Value::as_str))
        .unwrap_or("external")
        .to_string();

    Ok(AccessClaims {
        iss: issuer.to_string(),
        sub: sub.to_string(),
        aud: audience.to_string(),
        exp,
        iat,
        nbf,
        jti,
        scope,
        client_id,
        role: role.as_str().to_string(),
        fhir_user,
        patient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = "https://ehr.example/fhir";
    const ISS: &str = "https://idp.example";

    fn map(c: Value) -> Result<AccessClaims, String> {
        let cfg = OidcConfig::new(ISS);
        map_claims(&cfg, ISS, BASE, c.as_object().unwrap(), "h")
    }

    fn base() -> Value {
        json!({"iss": ISS, "aud": BASE, "sub": "u1", "exp": 2_000_000_000i64,
               "iat": 1_000, "fhir_scheduler_role": "admin", "scope": "user/*.rs"})
    }

    fn with(extra: Value) -> Value {
        let mut v = base();
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    #[test]
    fn claims_map_to_ours() {
        let c = map(with(json!({"jti": "j1", "client_id": "app"}))).unwrap();
        assert_eq!(c.role, "admin");
        assert_eq!(c.scope, "user/*.rs");
        assert_eq!(c.jti, format!("{ISS}#j1"));
        assert_eq!(c.client_id, "app");
        assert_eq!(c.aud, BASE);
        // No jti: the token's hash stands for it (revocation still works).
        assert_eq!(map(base()).unwrap().jti, format!("{ISS}#sha256:h"));
        assert_eq!(map(with(json!({"azp": "spa"}))).unwrap().client_id, "spa");
    }

    #[test]
    fn scopes_from_a_string_an_array_or_scp() {
        let arr = map(with(json!({"scope": ["patient/*.rs", "openid"]}))).unwrap();
        assert_eq!(arr.scope, "patient/*.rs openid");
        let scp = map(with(json!({"scope": null, "scp": ["user/*.cruds"]}))).unwrap();
        assert_eq!(scp.scope, "user/*.cruds");
        assert!(map(with(json!({"scope": ["a b"]}))).is_err());
        assert!(map(with(json!({"scope": 3}))).is_err());
        assert_eq!(map(with(json!({"scope": null}))).unwrap().scope, "");
    }

    #[test]
    fn roles_one_known_value() {
        assert!(map(with(json!({"fhir_scheduler_role": null}))).is_err());
        assert!(map(with(json!({"fhir_scheduler_role": "root"}))).is_err());
        assert!(map(with(json!({"fhir_scheduler_role": ["admin", "patient"]}))).is_err());
        let one = map(with(
            json!({"fhir_scheduler_role": ["offline_access", "system"]}),
        ))
        .unwrap();
        assert_eq!(one.role, "system");
        // A nested claim by its dotted path (Keycloak's realm roles).
        let mut cfg = OidcConfig::new(ISS);
        cfg.role_claim = "realm_access.roles".into();
        let c = with(json!({"fhir_scheduler_role": null,
            "realm_access": {"roles": ["default-roles", "practitioner"]},
            "fhirUser": "Practitioner/p1"}));
        let m = map_claims(&cfg, ISS, BASE, c.as_object().unwrap(), "h").unwrap();
        assert_eq!(m.role, "practitioner");
        assert_eq!(m.fhir_user.as_deref(), Some("Practitioner/p1"));
    }

    #[test]
    fn fhir_user_relative_or_on_our_base_only() {
        let p = |f: &str| {
            map(with(
                json!({"fhir_scheduler_role": "patient", "fhirUser": f}),
            ))
            .map(|c| c.fhir_user)
        };
        assert_eq!(p("Patient/a").unwrap().as_deref(), Some("Patient/a"));
        assert_eq!(
            p(&format!("{BASE}/Patient/a")).unwrap().as_deref(),
            Some("Patient/a")
        );
        assert!(p("https://other.example/fhir/Patient/a").is_err());
        assert!(p(&format!("{BASE}Patient/a")).is_err());
        assert!(p("Observation/a").is_err());
        assert!(p("Patient/a/b").is_err());
        // A patient without their Patient is refused, not left unconfined.
        assert!(p("Practitioner/x").is_err());
        assert!(map(with(json!({"fhir_scheduler_role": "patient"}))).is_err());
    }

    #[test]
    fn patient_context_and_numbers() {
        let c = map(with(json!({"patient": "Patient/p9"}))).unwrap();
        assert_eq!(c.patient.as_deref(), Some("p9"));
        assert!(map(with(json!({"patient": "p 9"}))).is_err());
        assert!(map(with(json!({"sub": ""}))).is_err());
        assert!(map(with(json!({"nbf": "soon"}))).is_err());
    }

    #[test]
    fn urls_must_be_https_but_on_loopback() {
        assert!(acceptable_url("https://idp.example"));
        assert!(acceptable_url("http://127.0.0.1:8080"));
        assert!(acceptable_url("http://localhost/realms/x"));
        assert!(acceptable_url("http://[::1]:9000/"));
        assert!(!acceptable_url("http://idp.example"));
        assert!(!acceptable_url("http://127.0.0.1.evil.example/"));
        assert!(!acceptable_url("http://localhost@evil.example/"));
        assert!(!acceptable_url("ftp://idp.example"));
    }

    #[test]
    fn jwks_keys_fit_their_algorithms() {
        let p256 = |alg: Option<&str>| {
            let mut k = json!({"kty": "EC", "crv": "P-256", "kid": "e",
                "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])});
            if let Some(a) = alg {
                k["alg"] = json!(a);
            }
            k
        };
        assert_eq!(
            parse_jwk(&p256(None)).unwrap().unwrap().algs,
            vec![Algorithm::ES256]
        );
        assert!(parse_jwk(&p256(Some("ES384"))).unwrap().is_none());
        assert!(parse_jwk(&p256(Some("HS256"))).unwrap().is_none());
        let mut enc = p256(None);
        enc["use"] = json!("enc");
        assert!(parse_jwk(&enc).unwrap().is_none());
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s"});
        assert!(parse_jwk(&oct).unwrap().is_none());
        let rsa = |bytes: usize, alg: Option<&str>| {
            let mut k = json!({"kty": "RSA", "kid": "r", "e": "AQAB",
                "n": URL_SAFE_NO_PAD.encode(vec![0xc5u8; bytes])});
            if let Some(a) = alg {
                k["alg"] = json!(a);
            }
            k
        };
        assert_eq!(
            parse_jwk(&rsa(256, None)).unwrap().unwrap().algs,
            vec![Algorithm::RS256, Algorithm::RS384]
        );
        assert_eq!(
            parse_jwk(&rsa(256, Some("RS384"))).unwrap().unwrap().algs,
            vec![Algorithm::RS384]
        );
        assert!(parse_jwk(&rsa(256, Some("PS256"))).unwrap().is_none());
        assert!(parse_jwk(&rsa(128, None)).is_err(), "1024-bit RSA");
        let set = parse_jwks(&json!({"keys": [p256(None), oct, {"kty": "EC"}]})).unwrap();
        assert_eq!(set.keys().collect::<Vec<_>>(), vec!["e"]);
    }
}
