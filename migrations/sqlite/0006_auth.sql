-- The embedded authorization server's state. Secrets are stored hashed (argon2id for
-- passwords and client secrets, SHA-256 for codes and refresh tokens); signing keys as PKCS#8.

-- Signing keys: the newest unretired one signs, every unretired one verifies (rotation by kid).
CREATE TABLE auth_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_pkcs8 TEXT NOT NULL,   -- base64
    public_jwk TEXT NOT NULL,      -- JSON
    created BIGINT NOT NULL,       -- unix microseconds
    retired BIGINT                 -- unix seconds; NULL while in use
);

-- Registered client applications.
CREATE TABLE auth_clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,            -- public | confidential-symmetric | confidential-asymmetric
    secret_hash TEXT,              -- confidential-symmetric
    jwks TEXT,                     -- confidential-asymmetric: JSON Web Key Set
    redirect_uris TEXT NOT NULL,   -- JSON array
    scopes TEXT NOT NULL,          -- what the client may be granted
    role TEXT,                     -- backend services: the role their tokens carry
    created BIGINT NOT NULL
);

-- Users who sign in at the login page.
CREATE TABLE auth_users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,            -- patient | practitioner | admin
    fhir_user TEXT,                -- Patient/x, Practitioner/y
    totp_secret TEXT,              -- base32; NULL until enrolled
    recovery_codes TEXT,           -- JSON array of SHA-256 hashes
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL
);

-- Authorization codes (single use) and refresh tokens (rotated; reuse revokes the family).
CREATE TABLE auth_grants (
    handle_hash TEXT PRIMARY KEY,  -- SHA-256 of the code or refresh token
    kind TEXT NOT NULL,            -- code | refresh
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    grant_json TEXT NOT NULL,      -- subject, role, scopes, patient, redirect_uri, challenge …
    expires BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX auth_grants_family ON auth_grants (family);

-- Seen `jti`s of client assertions (replay refusal) and revoked access tokens, until expiry.
CREATE TABLE auth_jti (
    jti TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- assertion | revoked
    expires BIGINT NOT NULL
);
