//! Who is calling and what they may do. `tokens`: our access tokens (JWT, ES256, keys in
//! `keys`); `scope`: SMART scopes; `policy`: THE access decisions (pure); `reach`: what a
//! practitioner's rules refer to, loaded per request. The HTTP layer calls
//! [`Auth::authenticate`] once per request and runs the request inside the returned guard
//! (`fhir::access`); nothing else decides access. `external`: access tokens of an external
//! OpenID Connect provider (`--oidc-issuer`), accepted beside ours and mapped to the same claims.

pub mod accounts;
pub mod external;
pub mod keys;
pub mod policy;
pub mod reach;
pub mod registration;
pub mod scope;
pub mod server;

use std::sync::Arc;

use jsonwebtoken::{decode, decode_header, encode, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::fhir::access::{Guard, System};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::Fhir;
use crate::store::SqlStore;

pub use policy::{Policy, Principal, Role};
pub use scope::Scopes;

/// Longest life of an access token we issue (SMART Backend Services: at most 300 s for those).
pub const MAX_ACCESS_TTL: i64 = 3600;

/// The claims of our access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
    pub role: String,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

/// An authenticated caller: the guard the request runs inside, and who it is (for the audit
/// record; `None` with `--auth off`).
pub struct Caller {
    pub guard: Arc<dyn Guard>,
    pub principal: Option<Principal>,
}

/// The authorization side of the server.
pub struct Auth {
    pub store: Arc<SqlStore>,
    pub fhir: Arc<Fhir>,
    pub keys: keys::KeyRing,
    /// Our issuer (`iss`): the server's public origin, e.g. `https://ehr.example.org`.
    pub issuer: String,
    /// The audience our tokens are for (`aud`): the FHIR base URL.
    pub audience: String,
    /// `false` only with `--auth off` (local development).
    pub enabled: bool,
    /// An external identity provider whose tokens are accepted too (`--oidc-issuer`).
    pub external: Option<external::ExternalIdp>,
    /// Practitioners' reach, reused for a few seconds (it costs three searches to load).
    reach_cache:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, policy::Reach)>>,
    /// Revoked access-token ids, as last read from the database (see `REVOKED_SYNC`).
    revoked: std::sync::RwLock<Revoked>,
    /// Held while one request re-reads the revoked ids; the others use the copy they have.
    revoked_sync: tokio::sync::Mutex<()>,
    /// Tokens verified before (an ECDSA verification per request cost more than the request).
    verified: std::sync::Mutex<std::collections::HashMap<String, AccessClaims>>,
}

/// Most tokens remembered as verified; the cache starts over when full.
const VERIFIED_CACHE: usize = 10_000;

/// Revoked jtis (with their tokens' expiry) and when they were read.
#[derive(Default)]
struct Revoked {
    jtis: std::collections::HashMap<String, i64>,
    synced: Option<std::time::Instant>,
}

/// How stale the revoked-token list may be. A token revoked through this process is refused at
/// once; one revoked through another process sharing the database, at most this late. Reading
/// the list on every request cost a query per request.
const REVOKED_SYNC: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a loaded reach is reused: a patient newly booked with a practitioner becomes
/// visible to them at most this late.
const REACH_TTL: std::time::Duration = std::time::Duration::from_secs(10);

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn poisoned() -> FhirError {
    FhirError::Internal("the revoked-token list is unusable".into())
}

/// Why a JWT failed validation, as the 401 the caller gets (ours and an external IdP's alike).
pub(crate) fn jwt_rejection(e: &jsonwebtoken::errors::Error) -> FhirError {
    use jsonwebtoken::errors::ErrorKind as K;
    invalid_token(match e.kind() {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet",
        K::InvalidAudience => "the token is for another audience",
        K::InvalidIssuer => "the token is from another issuer",
        K::InvalidSignature => "bad signature",
        K::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "invalid token",
    })
}

pub(crate) fn invalid_token(msg: impl Into<String>) -> FhirError {
    FhirError::Unauthorized {
        message: msg.into(),
        error: Some("invalid_token"),
    }
}

impl Auth {
    pub async fn new(
        store: Arc<SqlStore>,
        fhir: Arc<Fhir>,
        fhir_base: &str,
        enabled: bool,
        oidc: Option<&crate::config::OidcConfig>,
    ) -> anyhow::Result<Self> {
        let keys = keys::KeyRing::load(&store, now_secs()).await?;
        let audience = fhir_base.trim_end_matches('/').to_string();
        let issuer = audience
            .strip_suffix("/fhir")
            .unwrap_or(&audience)
            .to_string();
        let external = oidc
            .map(|o| external::ExternalIdp::new(o, &audience, &issuer))
            .transpose()?;
        Ok(Self {
            store,
            fhir,
            keys,
            issuer,
            audience,
            enabled,
            external,
            reach_cache: Default::default(),
            revoked: Default::default(),
            revoked_sync: Default::default(),
            verified: Default::default(),
        })
    }

    /// Signs an access token for `p`, valid `ttl` seconds from now.
    pub fn mint(&self, p: &Principal, ttl: i64) -> FhirResult<(String, AccessClaims)> {
        let (kid, key) = self
            .keys
            .signer()
            .ok_or_else(|| FhirError::Internal("no signing key".into()))?;
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: p.subject.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.clamp(1, MAX_ACCESS_TTL),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: p.scopes.to_scope_string(),
            client_id: p.client_id.clone(),
            role: p.role.as_str().to_string(),
            fhir_user: p.fhir_user.clone(),
            patient: p.patient.clone(),
        };
        let mut header = Header::new(keys::ALG);
        header.kid = Some(kid);
        header.typ = Some("at+jwt".into());
        let token = encode(&header, &claims, &key)
            .map_err(|e| FhirError::Internal(format!("signing: {e}")))?;
        Ok((token, claims))
    }

    /// Signs claims as they are (operators' tooling and tests of the verifier).
    pub fn sign_claims(&self, claims: &AccessClaims) -> FhirResult<String> {
        let (kid, key) = self
            .keys
            .signer()
            .ok_or_else(|| FhirError::Internal("no signing key".into()))?;
        let mut header = Header::new(keys::ALG);
        header.kid = Some(kid);
        encode(&header, claims, &key).map_err(|e| FhirError::Internal(format!("signing: {e}")))
    }

    /// Verifies an access token — one of ours, or one of the external identity provider's
    /// (`external`) when it claims to be from there: algorithm, key id, signature, issuer,
    /// audience, lifetime, revocation.
    pub async fn verify(&self, token: &str) -> FhirResult<AccessClaims> {
        if let Some(claims) = self.verified_before(token) {
            if self.is_revoked(&claims.jti).await? {
                return Err(invalid_token("the token has been revoked"));
            }
            return Ok(claims);
        }
        let claims = match &self.external {
            // The unverified `iss` only picks the verifier; the verifier checks it again.
            Some(idp) if idp.claims_issuer(token) => idp.verify(token).await?,
            _ => self.verify_signed(token).await?,
        };
        if self.is_revoked(&claims.jti).await? {
            return Err(invalid_token("the token has been revoked"));
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE {
                cache.clear();
            }
            cache.insert(token.to_string(), claims.clone());
        }
        Ok(claims)
    }

    /// The claims of a token whose signature and claims this process already checked, while it
    /// is still within its lifetime. Keyed by the whole token: a different token, even one
    /// differing in its signature only, is checked from scratch.
    fn verified_before(&self, token: &str) -> Option<AccessClaims> {
        let cache = self.verified.lock().ok()?;
        let c = cache.get(token)?;
        let now = now_secs();
        (c.nbf <= now + 5 && now < c.exp + 5).then(|| c.clone())
    }

    async fn verify_signed(&self, token: &str) -> FhirResult<AccessClaims> {
        let header = decode_header(token).map_err(|_| invalid_token("malformed token"))?;
        if header.alg != keys::ALG {
            return Err(invalid_token("unexpected signing algorithm"));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid_token("the token names no key"))?;
        let key = match self.keys.verifier(&kid) {
            Some(k) => k,
            None => {
                // Another process may have rotated: look again once.
                self.keys.reload(&self.store).await?;
                self.keys
                    .verifier(&kid)
                    .ok_or_else(|| invalid_token("unknown signing key"))?
            }
        };
        let mut v = Validation::new(keys::ALG);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        v.validate_nbf = true;
        v.leeway = 5;
        let data = decode::<AccessClaims>(token, &key, &v).map_err(|e| jwt_rejection(&e))?;
        Ok(data.claims)
    }

    /// Revokes the access token with this id (valid until `exp`), here at once and in other
    /// processes within `REVOKED_SYNC`.
    pub async fn revoke_jti(&self, jti: &str, exp: i64) -> FhirResult<()> {
        self.store.auth_jti_record(jti, "revoked", exp + 60).await?;
        if let Ok(mut r) = self.revoked.write() {
            r.jtis.insert(jti.to_string(), exp + 60);
        }
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> FhirResult<bool> {
        let fresh = |r: &Revoked| r.synced.is_some_and(|t| t.elapsed() < REVOKED_SYNC);
        {
            let r = self.revoked.read().map_err(|_| poisoned())?;
            if fresh(&r) {
                return Ok(r.jtis.contains_key(jti));
            }
        }
        let _one = self.revoked_sync.lock().await;
        if !fresh(&*self.revoked.read().map_err(|_| poisoned())?) {
            let now = now_secs();
            let jtis = self.store.auth_revoked_jtis(now).await?;
            let mut r = self.revoked.write().map_err(|_| poisoned())?;
            // Keep what this process revoked meanwhile (its row is already stored).
            r.jtis.retain(|_, exp| *exp >= now);
            r.jtis.extend(jtis);
            r.synced = Some(std::time::Instant::now());
        }
        let r = self.revoked.read().map_err(|_| poisoned())?;
        Ok(r.jtis.contains_key(jti))
    }

    /// The principal a verified token speaks for.
    pub fn principal(claims: &AccessClaims) -> FhirResult<Principal> {
        let role = Role::parse(&claims.role).ok_or_else(|| invalid_token("unknown role"))?;
        let scopes = Scopes::parse(&claims.scope).map_err(invalid_token)?;
        let patient = match role {
            // A patient user is always confined to themself, whatever the token says.
            Role::Patient => claims
                .fhir_user
                .as_deref()
                .and_then(|f| f.strip_prefix("Patient/"))
                .map(String::from),
            _ => claims.patient.clone(),
        };
        Ok(Principal {
            subject: claims.sub.clone(),
            client_id: claims.client_id.clone(),
            role,
            fhir_user: claims.fhir_user.clone(),
            patient,
            scopes,
        })
    }

    /// The caller of a request with this `Authorization` header value (or none).
    pub async fn authenticate(&self, authorization: Option<&str>) -> FhirResult<Caller> {
        if !self.enabled {
            return Ok(Caller {
                guard: Arc::new(System),
                principal: None,
            });
        }
        let header = authorization.ok_or_else(|| FhirError::Unauthorized {
            message: "a bearer token is required".into(),
            error: None,
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| FhirError::Unauthorized {
                message: "the Authorization header must be 'Bearer <token>'".into(),
                error: Some("invalid_request"),
            })?;
        let claims = self.verify(token).await?;
        let principal = Self::principal(&claims)?;
        let reach = self.reach(&principal).await?;
        Ok(Caller {
            guard: Arc::new(Policy::new(principal.clone(), reach)),
            principal: Some(principal),
        })
    }

    async fn reach(&self, p: &Principal) -> FhirResult<policy::Reach> {
        if p.role != Role::Practitioner {
            return Ok(policy::Reach::default());
        }
        let key = p.fhir_user.clone().unwrap_or_default();
        if let Ok(cache) = self.reach_cache.lock() {
            if let Some((at, r)) = cache.get(&key) {
                if at.elapsed() < REACH_TTL {
                    return Ok(r.clone());
                }
            }
        }
        let r = reach::load(&self.fhir, p).await?;
        if let Ok(mut cache) = self.reach_cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, (std::time::Instant::now(), r.clone()));
        }
        Ok(r)
    }
}
