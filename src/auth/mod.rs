//! Who is calling and what they may do. `tokens`: our access tokens (JWT, ES256, keys in
//! `keys`); `scope`: SMART scopes; `policy`: THE access decisions (pure); `reach`: what a
//! practitioner's rules refer to, loaded per request. The HTTP layer calls
//! [`Auth::authenticate`] once per request and runs the request inside the returned guard
//! (`fhir::access`); nothing else decides access.

pub mod accounts;
pub mod keys;
pub mod policy;
pub mod reach;
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
    /// Practitioners' reach, reused for a few seconds (it costs three searches to load).
    reach_cache:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, policy::Reach)>>,
}

/// How long a loaded reach is reused: a patient newly booked with a practitioner becomes
/// visible to them at most this late.
const REACH_TTL: std::time::Duration = std::time::Duration::from_secs(10);

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn invalid_token(msg: impl Into<String>) -> FhirError {
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
    ) -> anyhow::Result<Self> {
        let keys = keys::KeyRing::load(&store, now_secs()).await?;
        let audience = fhir_base.trim_end_matches('/').to_string();
        let issuer = audience
            .strip_suffix("/fhir")
            .unwrap_or(&audience)
            .to_string();
        Ok(Self {
            store,
            fhir,
            keys,
            issuer,
            audience,
            enabled,
            reach_cache: Default::default(),
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

    /// Verifies one of our access tokens: algorithm, key id, signature, issuer, audience,
    /// lifetime, revocation.
    pub async fn verify(&self, token: &str) -> FhirResult<AccessClaims> {
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
        let data = decode::<AccessClaims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid_token(match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet",
                K::InvalidAudience => "the token is for another audience",
                K::InvalidIssuer => "the token is from another issuer",
                K::InvalidSignature => "bad signature",
                _ => "invalid token",
            })
        })?;
        if self
            .store
            .auth_jti_seen(&data.claims.jti, "revoked")
            .await?
        {
            return Err(invalid_token("the token has been revoked"));
        }
        Ok(data.claims)
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
