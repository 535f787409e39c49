//! OAuth 2.0 Dynamic Client Registration (RFC 7591), protected (§3): the initial access token
//! is an admin's access token (who may register is `policy::may_register_clients`). The
//! client metadata becomes one of the three SMART client kinds the token endpoint serves:
//! `none` → public, `client_secret_basic` / `client_secret_post` → confidential-symmetric (a
//! secret is issued, returned once and kept only as an argon2id hash), `private_key_jwt` →
//! confidential-asymmetric (the client's `jwks` by value; `jwks_uri` is not fetched).

use serde_json::{json, Value};

use crate::auth::accounts::{create_client, NewClient};
use crate::auth::scope::{Context, Scopes};
use crate::auth::server::{random_token, server_error, OAuthError};
use crate::auth::{now_secs, Auth};

fn invalid(error: &'static str, d: impl Into<String>) -> OAuthError {
    OAuthError {
        status: 400,
        error,
        description: d.into(),
    }
}

/// The client a metadata document asks for, checked (RFC 7591 §2 and §3.2.2 errors).
#[derive(Debug)]
pub struct Requested {
    pub name: String,
    /// public | confidential-symmetric | confidential-asymmetric
    pub kind: &'static str,
    pub auth_method: String,
    pub grant_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub jwks: Option<Value>,
}

fn strings(meta: &Value, field: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match &meta[field] {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    invalid(
                        "invalid_client_metadata",
                        format!("{field} must be strings"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(invalid(
            "invalid_client_metadata",
            format!("{field} must be an array of strings"),
        )),
    }
}

/// An absolute `https` URI (or `http` on a loopback host, RFC 8252 §7.3) without a fragment.
fn redirect_ok(uri: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(uri) else {
        return false;
    };
    if u.fragment().is_some() {
        return false;
    }
    match u.scheme() {
        "https" => true,
        "http" => matches!(
            u.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        ),
        // A native app's private-use scheme (RFC 8252 §7.1): reverse domain name, with a dot.
        s => s.contains('.'),
    }
}

/// Checks a metadata document (RFC 7591 §2) against what this server can serve.
pub fn check(meta: &Value) -> Result<Requested, OAuthError> {
    if !meta.is_object() {
        return Err(invalid(
            "invalid_client_metadata",
            "the body must be a JSON object of client metadata",
        ));
    }
    // RFC 7591 §2: client_secret_basic when absent.
    let auth_method = match &meta["token_endpoint_auth_method"] {
        Value::Null => "client_secret_basic".to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(invalid(
                "invalid_client_metadata",
                "token_endpoint_auth_method must be a string",
            ))
        }
    };
    let kind = match auth_method.as_str() {
        "none" => "public",
        "client_secret_basic" | "client_secret_post" => "confidential-symmetric",
        "private_key_jwt" => "confidential-asymmetric",
        other => {
            return Err(invalid(
                "invalid_client_metadata",
                format!("token_endpoint_auth_method {other} is not supported"),
            ))
        }
    };
    let grant_types =
        strings(meta, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".to_string()]);
    for g in &grant_types {
        match g.as_str() {
            "authorization_code" | "refresh_token" => {}
            "client_credentials" if kind == "confidential-asymmetric" => {}
            "client_credentials" => {
                return Err(invalid(
                    "invalid_client_metadata",
                    "client_credentials (Backend Services) needs private_key_jwt",
                ))
            }
            other => {
                return Err(invalid(
                    "invalid_client_metadata",
                    format!("grant type {other} is not supported"),
                ))
            }
        }
    }
    if let Some(r) = strings(meta, "response_types")? {
        if r.iter().any(|t| t != "code") {
            return Err(invalid(
                "invalid_client_metadata",
                "only the code response type is supported",
            ));
        }
    }
    let redirect_uris = strings(meta, "redirect_uris")?.unwrap_or_default();
    let interactive = grant_types.iter().any(|g| g == "authorization_code");
    if interactive && redirect_uris.is_empty() {
        return Err(invalid(
            "invalid_redirect_uri",
            "authorization_code needs at least one redirect_uri",
        ));
    }
    if let Some(bad) = redirect_uris.iter().find(|u| !redirect_ok(u)) {
        return Err(invalid(
            "invalid_redirect_uri",
            format!("{bad} is not an absolute https (or loopback http) URI without a fragment"),
        ));
    }
    let scope = match &meta["scope"] {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            return Err(invalid(
                "invalid_client_metadata",
                "scope (the scopes the client may ask for) is required",
            ))
        }
    };
    let scopes = Scopes::parse(&scope).map_err(|e| invalid("invalid_client_metadata", e))?;
    if !grant_types.iter().any(|g| g == "client_credentials")
        && scopes
            .resources
            .iter()
            .any(|s| s.context == Context::System)
    {
        return Err(invalid(
            "invalid_client_metadata",
            "system/ scopes are for Backend Services (client_credentials)",
        ));
    }
    let jwks = match (kind, &meta["jwks"]) {
        ("confidential-asymmetric", Value::Object(o))
            if o.get("keys").is_some_and(Value::is_array) =>
        {
            Some(meta["jwks"].clone())
        }
        ("confidential-asymmetric", _) => return Err(invalid(
            "invalid_client_metadata",
            "private_key_jwt needs jwks (a JSON Web Key Set by value; jwks_uri is not supported)",
        )),
        (_, Value::Null) => None,
        _ => {
            return Err(invalid(
                "invalid_client_metadata",
                "jwks is only for private_key_jwt",
            ))
        }
    };
    let name = meta["client_name"].as_str().unwrap_or_default().to_string();
    Ok(Requested {
        name,
        kind,
        auth_method,
        grant_types,
        redirect_uris,
        scope,
        jwks,
    })
}

impl Auth {
    /// Registers the client `meta` asks for; the answer of RFC 7591 §3.2.1 (the secret, for a
    /// symmetric client, appears here once).
    pub async fn register_client(&self, meta: &Value) -> Result<Value, OAuthError> {
        let r = check(meta)?;
        let client_id = uuid::Uuid::new_v4().to_string();
        let secret = (r.kind == "confidential-symmetric").then(random_token);
        let jwks = r.jwks.as_ref().map(Value::to_string);
        let name = if r.name.is_empty() {
            client_id.clone()
        } else {
            r.name.clone()
        };
        create_client(
            &self.store,
            &NewClient {
                client_id: &client_id,
                name: &name,
                kind: r.kind,
                secret: secret.as_deref(),
                jwks: jwks.as_deref(),
                redirect_uris: &r.redirect_uris,
                scopes: &r.scope,
                role: None,
            },
        )
        .await
        // `check` refused every metadata problem `create_client` knows: what fails here is
        // the server's own (storing the client).
        .map_err(server_error)?;
        let mut out = json!({
            "client_id": client_id,
            "client_id_issued_at": now_secs(),
            "client_name": name,
            "token_endpoint_auth_method": r.auth_method,
            "grant_types": r.grant_types,
            "response_types": if r.redirect_uris.is_empty() { json!([]) } else { json!(["code"]) },
            "redirect_uris": r.redirect_uris,
            "scope": r.scope,
        });
        if let Some(s) = secret {
            out["client_secret"] = json!(s);
            out["client_secret_expires_at"] = json!(0);
        }
        if let Some(j) = r.jwks {
            out["jwks"] = j;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(meta: Value) -> &'static str {
        check(&meta).unwrap_err().error
    }

    #[test]
    fn metadata_becomes_a_smart_client_kind() {
        let app = check(
            &json!({"client_name": "Booking app", "token_endpoint_auth_method": "none",
            "redirect_uris": ["https://app.example/cb"], "scope": "launch/patient patient/*.rs"}),
        )
        .unwrap();
        assert_eq!(app.kind, "public");
        assert_eq!(app.grant_types, vec!["authorization_code"]);
        // RFC 7591: client_secret_basic when the method is absent.
        let conf =
            check(&json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "scope": "user/*.rs"}))
                .unwrap();
        assert_eq!(conf.kind, "confidential-symmetric");
        let backend = check(&json!({"token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["client_credentials"], "scope": "system/*.rs",
            "jwks": {"keys": [{"kty": "EC"}]}}))
        .unwrap();
        assert_eq!(backend.kind, "confidential-asymmetric");
        assert!(backend.redirect_uris.is_empty());
    }

    #[test]
    fn what_cannot_be_served_is_refused_with_the_rfc_error() {
        let scope = "patient/*.rs";
        assert_eq!(err(json!([])), "invalid_client_metadata");
        assert_eq!(err(json!({"scope": scope})), "invalid_redirect_uri");
        for uri in [
            "http://app.example/cb",
            "https://app.example/cb#x",
            "cb",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                err(json!({"redirect_uris": [uri], "scope": scope})),
                "invalid_redirect_uri",
                "{uri}"
            );
        }
        let ok = json!(["https://app.example/cb"]);
        assert_eq!(err(json!({"redirect_uris": ok})), "invalid_client_metadata");
        assert_eq!(
            err(json!({"redirect_uris": ok, "scope": "system/*.rs"})),
            "invalid_client_metadata"
        );
        assert_eq!(
            err(json!({"redirect_uris": ok, "scope": scope, "grant_types": ["password"]})),
            "invalid_client_metadata"
        );
        assert_eq!(
            err(
                json!({"redirect_uris": ok, "scope": scope, "grant_types": ["client_credentials"]})
            ),
            "invalid_client_metadata"
        );
        assert_eq!(
            err(
                json!({"scope": "system/*.rs", "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://x/jwks"})
            ),
            "invalid_client_metadata"
        );
        assert_eq!(
            err(
                json!({"redirect_uris": ok, "scope": scope, "token_endpoint_auth_method": "tls_client_auth"})
            ),
            "invalid_client_metadata"
        );
        assert_eq!(
            err(json!({"redirect_uris": ok, "scope": scope, "jwks": {"keys": []}})),
            "invalid_client_metadata"
        );
    }
}
