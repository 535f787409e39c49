//! The authorization server's tables (migrations `0006_auth`): signing keys, clients, users,
//! grants (codes and refresh tokens) and seen/revoked token ids. Plain SQL with `$n`
//! placeholders, valid on SQLite and PostgreSQL.

use sqlx::Row;

use super::{SqlStore, StoreError, StoreResult};

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub private_pkcs8: String,
    pub public_jwk: String,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    pub kind: String,
    pub secret_hash: Option<String>,
    pub jwks: Option<String>,
    pub redirect_uris: String,
    pub scopes: String,
    pub role: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub totp_secret: Option<String>,
    pub recovery_codes: Option<String>,
    pub failed_logins: i64,
    pub locked_until: i64,
}

#[derive(Debug, Clone)]
pub struct GrantRow {
    pub kind: String,
    pub family: String,
    pub client_id: String,
    pub grant_json: String,
    pub expires: i64,
    pub used: bool,
    pub revoked: bool,
}

fn is_unique(e: &sqlx::Error) -> bool {
    super::is_unique_violation(e)
}

impl SqlStore {
    pub async fn auth_keys(&self) -> StoreResult<Vec<KeyRow>> {
        let rows = sqlx::query(
            "SELECT kid, alg, private_pkcs8, public_jwk, created FROM auth_keys \
             WHERE retired IS NULL ORDER BY created DESC, kid",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRow {
                    kid: r.try_get(0)?,
                    alg: r.try_get(1)?,
                    private_pkcs8: r.try_get(2)?,
                    public_jwk: r.try_get(3)?,
                    created: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub async fn auth_key_insert(&self, k: &KeyRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_keys (kid, alg, private_pkcs8, public_jwk, created) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_pkcs8)
        .bind(&k.public_jwk)
        .bind(k.created)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Retires every key of `alg` older than `keep_kid` (they stop verifying).
    pub async fn auth_keys_retire_except(
        &self,
        alg: &str,
        keep: &[String],
        at: i64,
    ) -> StoreResult<u64> {
        let rows = sqlx::query("SELECT kid FROM auth_keys WHERE alg = $1 AND retired IS NULL")
            .bind(alg)
            .fetch_all(self.pool())
            .await?;
        let mut n = 0;
        for r in rows {
            let kid: String = r.try_get(0)?;
            if keep.contains(&kid) {
                continue;
            }
            n += sqlx::query("UPDATE auth_keys SET retired = $1 WHERE kid = $2")
                .bind(at)
                .bind(&kid)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    pub async fn auth_client(&self, client_id: &str) -> StoreResult<Option<ClientRow>> {
        let row = sqlx::query(
            "SELECT client_id, name, kind, secret_hash, jwks, redirect_uris, scopes, role \
             FROM auth_clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(ClientRow {
                client_id: r.try_get(0)?,
                name: r.try_get(1)?,
                kind: r.try_get(2)?,
                secret_hash: r.try_get(3)?,
                jwks: r.try_get(4)?,
                redirect_uris: r.try_get(5)?,
                scopes: r.try_get(6)?,
                role: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Inserts or replaces a client.
    pub async fn auth_client_put(&self, c: &ClientRow, created: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_clients WHERE client_id = $1")
            .bind(&c.client_id)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO auth_clients (client_id, name, kind, secret_hash, jwks, redirect_uris, \
             scopes, role, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.client_id)
        .bind(&c.name)
        .bind(&c.kind)
        .bind(&c.secret_hash)
        .bind(&c.jwks)
        .bind(&c.redirect_uris)
        .bind(&c.scopes)
        .bind(&c.role)
        .bind(created)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn auth_user(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query(
            "SELECT username, password_hash, role, fhir_user, totp_secret, recovery_codes, \
             failed_logins, locked_until FROM auth_users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(UserRow {
                username: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                role: r.try_get(2)?,
                fhir_user: r.try_get(3)?,
                totp_secret: r.try_get(4)?,
                recovery_codes: r.try_get(5)?,
                failed_logins: r.try_get(6)?,
                locked_until: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Inserts or replaces a user.
    pub async fn auth_user_put(&self, u: &UserRow, created: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_users WHERE username = $1")
            .bind(&u.username)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO auth_users (username, password_hash, role, fhir_user, totp_secret, \
             recovery_codes, failed_logins, locked_until, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(&u.role)
        .bind(&u.fhir_user)
        .bind(&u.totp_secret)
        .bind(&u.recovery_codes)
        .bind(u.failed_logins)
        .bind(u.locked_until)
        .bind(created)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records the outcome of a login attempt's counters.
    pub async fn auth_user_set_login_state(
        &self,
        username: &str,
        failed_logins: i64,
        locked_until: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE auth_users SET failed_logins = $1, locked_until = $2 WHERE username = $3",
        )
        .bind(failed_logins)
        .bind(locked_until)
        .bind(username)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn auth_user_set_mfa(
        &self,
        username: &str,
        totp_secret: Option<&str>,
        recovery_codes: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE auth_users SET totp_secret = $1, recovery_codes = $2 WHERE username = $3",
        )
        .bind(totp_secret)
        .bind(recovery_codes)
        .bind(username)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn auth_grant_insert(&self, handle_hash: &str, g: &GrantRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_grants (handle_hash, kind, family, client_id, grant_json, expires) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(handle_hash)
        .bind(&g.kind)
        .bind(&g.family)
        .bind(&g.client_id)
        .bind(&g.grant_json)
        .bind(g.expires)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn auth_grant(&self, handle_hash: &str) -> StoreResult<Option<GrantRow>> {
        let row = sqlx::query(
            "SELECT kind, family, client_id, grant_json, expires, used, revoked \
             FROM auth_grants WHERE handle_hash = $1",
        )
        .bind(handle_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(GrantRow {
                kind: r.try_get(0)?,
                family: r.try_get(1)?,
                client_id: r.try_get(2)?,
                grant_json: r.try_get(3)?,
                expires: r.try_get(4)?,
                used: r.try_get::<i64, _>(5)? != 0,
                revoked: r.try_get::<i64, _>(6)? != 0,
            })
        })
        .transpose()
    }

    /// Marks a grant used; `false` when it already was (a second use: a replay).
    pub async fn auth_grant_use(&self, handle_hash: &str) -> StoreResult<bool> {
        let n = sqlx::query("UPDATE auth_grants SET used = 1 WHERE handle_hash = $1 AND used = 0")
            .bind(handle_hash)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Revokes every grant of a family (refresh-token reuse, revocation).
    pub async fn auth_family_revoke(&self, family: &str) -> StoreResult<u64> {
        Ok(
            sqlx::query("UPDATE auth_grants SET revoked = 1 WHERE family = $1")
                .bind(family)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// The access tokens (jti, expiry) issued from a family's codes and refresh tokens.
    pub async fn auth_family_access(&self, family: &str) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT grant_json, expires FROM auth_grants WHERE family = $1 AND kind = $2",
        )
        .bind(family)
        .bind("access")
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Records a token id; `false` when it was already recorded (a replayed assertion).
    pub async fn auth_jti_record(&self, jti: &str, kind: &str, expires: i64) -> StoreResult<bool> {
        let r = sqlx::query("INSERT INTO auth_jti (jti, kind, expires) VALUES ($1, $2, $3)")
            .bind(format!("{kind}:{jti}"))
            .bind(kind)
            .bind(expires)
            .execute(self.pool())
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique(&e) => Ok(false),
            Err(e) => Err(StoreError::Db(e)),
        }
    }

    /// Revoked access-token ids not yet expired, with their expiry.
    pub async fn auth_revoked_jtis(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT jti, expires FROM auth_jti WHERE kind = $1 AND expires >= $2")
                .bind("revoked")
                .bind(now)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get(0)?;
                let jti = key.strip_prefix("revoked:").unwrap_or(&key).to_string();
                Ok((jti, r.try_get(1)?))
            })
            .collect()
    }

    /// Forgets token ids and grants past their expiry.
    pub async fn auth_sweep(&self, now: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_jti WHERE expires < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM auth_grants WHERE expires < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
