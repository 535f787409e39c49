//! Users and client applications, as an admin registers them (`fhir-scheduler admin …`).
//! Passwords and client secrets are stored as argon2id hashes only.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde_json::Value;

use crate::auth::now_secs;
use crate::auth::policy::Role;
use crate::auth::scope::Scopes;
use crate::store::auth::{ClientRow, UserRow};
use crate::store::SqlStore;

pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// Constant-time verification against a stored argon2 hash.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Registers (or replaces) a user.
pub async fn create_user(
    store: &SqlStore,
    username: &str,
    password: &str,
    role: Role,
    fhir_user: Option<&str>,
) -> anyhow::Result<()> {
    if role == Role::System {
        anyhow::bail!("users are patients, practitioners or admins");
    }
    if password.chars().count() < 8 {
        anyhow::bail!("a password has at least 8 characters");
    }
    if let Some(f) = fhir_user {
        let ok = match role {
            Role::Patient => f.starts_with("Patient/"),
            Role::Practitioner => f.starts_with("Practitioner/"),
            _ => f.starts_with("Practitioner/") || f.starts_with("Patient/"),
        };
        if !ok {
            anyhow::bail!("--fhir-user {f} does not fit the role {}", role.as_str());
        }
    } else if role != Role::Admin {
        anyhow::bail!("a {} needs --fhir-user", role.as_str());
    }
    let row = UserRow {
        username: username.to_string(),
        password_hash: hash_secret(password)?,
        role: role.as_str().to_string(),
        fhir_user: fhir_user.map(String::from),
        totp_secret: None,
        recovery_codes: None,
        failed_logins: 0,
        locked_until: 0,
    };
    store.auth_user_put(&row, now_secs()).await?;
    Ok(())
}

/// What `create_client` registers.
pub struct NewClient<'a> {
    pub client_id: &'a str,
    pub name: &'a str,
    /// public | confidential-symmetric | confidential-asymmetric
    pub kind: &'a str,
    pub secret: Option<&'a str>,
    /// A JSON Web Key Set (confidential-asymmetric).
    pub jwks: Option<&'a str>,
    pub redirect_uris: &'a [String],
    pub scopes: &'a str,
    /// The role a backend service's tokens carry.
    pub role: Option<Role>,
}

pub async fn create_client(store: &SqlStore, c: &NewClient<'_>) -> anyhow::Result<()> {
    Scopes::parse(c.scopes).map_err(|e| anyhow::anyhow!(e))?;
    let secret_hash = match (c.kind, c.secret) {
        ("confidential-symmetric", Some(s)) if s.len() >= 16 => Some(hash_secret(s)?),
        ("confidential-symmetric", _) => {
            anyhow::bail!("a confidential-symmetric client needs a --secret of 16+ characters")
        }
        (_, Some(_)) => anyhow::bail!("only confidential-symmetric clients have a secret"),
        _ => None,
    };
    let jwks = match (c.kind, c.jwks) {
        ("confidential-asymmetric", Some(j)) => {
            let v: Value =
                serde_json::from_str(j).map_err(|e| anyhow::anyhow!("--jwks is not JSON: {e}"))?;
            if !v["keys"].is_array() {
                anyhow::bail!("--jwks must be a JSON Web Key Set ({{\"keys\": [...]}})");
            }
            Some(v.to_string())
        }
        ("confidential-asymmetric", None) => {
            anyhow::bail!("a confidential-asymmetric client needs --jwks")
        }
        (_, Some(_)) => anyhow::bail!("only confidential-asymmetric clients have a JWKS"),
        ("public", None) => None,
        ("confidential-symmetric", None) => None,
        (k, None) => anyhow::bail!("unknown client kind {k}"),
    };
    let row = ClientRow {
        client_id: c.client_id.to_string(),
        name: c.name.to_string(),
        kind: c.kind.to_string(),
        secret_hash,
        jwks,
        redirect_uris: serde_json::to_string(c.redirect_uris)?,
        scopes: c.scopes.to_string(),
        role: c.role.map(|r| r.as_str().to_string()),
    };
    store.auth_client_put(&row, now_secs()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_against_their_hash() {
        let h = hash_secret("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret("correct horse battery", &h));
        assert!(!verify_secret("correct horse batterY", &h));
        assert!(!verify_secret("x", "not a hash"));
    }
}
