//! The server's signing keys: ES256 (P-256) key pairs created at first start and kept in the
//! database, so every server process sharing it signs and verifies alike. Rotation adds a new
//! key that signs from then on; older keys keep verifying (by `kid`) until retired, so nobody
//! is logged out by a rotation.

use std::sync::RwLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::store::auth::KeyRow;
use crate::store::{SqlStore, StoreResult};

pub const ALG: Algorithm = Algorithm::ES256;
const ALG_NAME: &str = "ES256";

/// One usable key.
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

/// The keys in use; the first signs.
pub struct KeyRing {
    keys: RwLock<Vec<Key>>,
}

fn key_from_row(r: &KeyRow) -> Result<Key, String> {
    let der = STANDARD
        .decode(&r.private_pkcs8)
        .map_err(|e| format!("key {}: {e}", r.kid))?;
    let jwk: Value = serde_json::from_str(&r.public_jwk).map_err(|e| e.to_string())?;
    let x = jwk["x"].as_str().unwrap_or_default();
    let y = jwk["y"].as_str().unwrap_or_default();
    let decoding = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
    Ok(Key {
        kid: r.kid.clone(),
        encoding: EncodingKey::from_ec_der(&der),
        decoding,
        jwk,
    })
}

/// Creates a new P-256 key pair as a stored row.
pub fn new_key_row(now: i64) -> Result<KeyRow, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "key generation failed".to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "generated key unreadable".to_string())?;
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    if point.len() != 65 {
        return Err("unexpected public key encoding".into());
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": ALG_NAME, "use": "sig"});
    Ok(KeyRow {
        kid,
        alg: ALG_NAME.into(),
        private_pkcs8: STANDARD.encode(pkcs8.as_ref()),
        public_jwk: jwk.to_string(),
        // Microseconds: the newest key signs, even when two are made within a second.
        created: now.max(chrono::Utc::now().timestamp_micros()),
    })
}

impl KeyRing {
    /// Loads the keys in use, creating the first one if there is none.
    pub async fn load(store: &SqlStore, now: i64) -> StoreResult<Self> {
        let mut rows = store.auth_keys().await?;
        if rows.is_empty() {
            let row = new_key_row(now).map_err(crate::store::StoreError::other)?;
            store.auth_key_insert(&row).await?;
            // Another process may have raced us: use whatever is there now.
            rows = store.auth_keys().await?;
        }
        let ring = KeyRing {
            keys: RwLock::new(Vec::new()),
        };
        ring.replace(&rows);
        Ok(ring)
    }

    fn replace(&self, rows: &[KeyRow]) {
        let keys: Vec<Key> = rows
            .iter()
            .filter(|r| r.alg == ALG_NAME)
            .filter_map(|r| match key_from_row(r) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::error!(kid = %r.kid, error = %e, "unusable signing key skipped");
                    None
                }
            })
            .collect();
        if let Ok(mut w) = self.keys.write() {
            *w = keys;
        }
    }

    /// Re-reads the keys (after a rotation by another process).
    pub async fn reload(&self, store: &SqlStore) -> StoreResult<()> {
        let rows = store.auth_keys().await?;
        self.replace(&rows);
        Ok(())
    }

    /// The signing key: its kid and encoding key.
    pub fn signer(&self) -> Option<(String, EncodingKey)> {
        let keys = self.keys.read().ok()?;
        keys.first().map(|k| (k.kid.clone(), k.encoding.clone()))
    }

    pub fn verifier(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().ok()?;
        keys.iter()
            .find(|k| k.kid == kid)
            .map(|k| k.decoding.clone())
    }

    /// The public keys as a JSON Web Key Set.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .read()
            .map(|k| k.iter().map(|k| k.jwk.clone()).collect())
            .unwrap_or_default();
        json!({ "keys": keys })
    }
}

/// Adds a new signing key; keys older than the previous one are retired. Returns the new kid.
pub async fn rotate(store: &SqlStore, now: i64) -> StoreResult<String> {
    let row = new_key_row(now).map_err(crate::store::StoreError::other)?;
    let previous = store.auth_keys().await?;
    store.auth_key_insert(&row).await?;
    let mut keep = vec![row.kid.clone()];
    if let Some(p) = previous.iter().find(|k| k.alg == ALG_NAME) {
        keep.push(p.kid.clone());
    }
    store.auth_keys_retire_except(ALG_NAME, &keep, now).await?;
    Ok(row.kid)
}
