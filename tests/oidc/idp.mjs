// A real OpenID Connect provider (npm `oidc-provider`) for the external-IdP tests
// (tests/api/oidc.rs). It issues JWT access tokens (RFC 9068) through the client_credentials
// grant with resource indicators (RFC 8707): the `resource` parameter becomes the token's `aud`.
//
//   node tests/oidc/idp.mjs        listens on 127.0.0.1, a free port; prints one JSON line
//                                   {"issuer": "http://127.0.0.1:PORT"} when ready
//
// Clients (secret: "secret" for all; HTTP Basic) and the claims their tokens carry:
//   admin-es256, admin-es384, admin-rs256, admin-rs384   role admin, signed with that alg
//   admin-hs256     role admin, signed HS256 with a shared secret (the server must refuse it)
//   patient-a       role patient, fhirUser Patient/oidc-a, signed ES256
//   no-role         no role claim
//
// Test-only endpoints (not part of any IdP):
//   POST /__rotate   a new ES256 key is put first in the JWKS: it signs from now on, and its
//                    kid appears in the JWKS only now (the provider is rebuilt with the new key
//                    set, as a deployment rotates keys by reloading)
//   GET  /__stats    {"discovery": n, "jwks": n}: how often each was fetched
//
// The process exits when its stdin closes, so a test that dies leaves no IdP behind.

import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

const ROLE_CLAIM = 'fhir_scheduler_role';
const ADMIN_SCOPES = 'user/*.cruds system/*.cruds';
const HS_SECRET = crypto.randomBytes(32);

const CLIENTS = {
  'admin-es256': { alg: 'ES256', scope: ADMIN_SCOPES, claims: { [ROLE_CLAIM]: 'admin' } },
  'admin-es384': { alg: 'ES384', scope: ADMIN_SCOPES, claims: { [ROLE_CLAIM]: 'admin' } },
  'admin-rs256': { alg: 'RS256', scope: ADMIN_SCOPES, claims: { [ROLE_CLAIM]: 'admin' } },
  'admin-rs384': { alg: 'RS384', scope: ADMIN_SCOPES, claims: { [ROLE_CLAIM]: 'admin' } },
  'admin-hs256': { alg: 'HS256', scope: ADMIN_SCOPES, claims: { [ROLE_CLAIM]: 'admin' } },
  'patient-a': {
    alg: 'ES256',
    scope: 'patient/*.rs',
    claims: { [ROLE_CLAIM]: 'patient', fhirUser: 'Patient/oidc-a' },
  },
  'no-role': { alg: 'ES256', scope: ADMIN_SCOPES, claims: {} },
};

async function privateJwk(alg, extra = {}) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomUUID()}`, ...extra };
}

// One key per algorithm family and size; the first key matching an alg signs.
let keys = [
  await privateJwk('ES256'),
  await privateJwk('ES384'),
  await privateJwk('RS256'),
  await privateJwk('RS384'),
];

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: Object.keys(CLIENTS).map((id) => ({
      client_id: id,
      client_secret: 'secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // Any resource the test asks for becomes the token's audience (so a test can get a
        // genuine token for another audience); the client decides its scopes and alg.
        async getResourceServerInfo(_ctx, resourceIndicator, client) {
          const c = CLIENTS[client.clientId];
          const sign = c.alg === 'HS256' ? { alg: 'HS256', key: HS_SECRET } : { alg: c.alg };
          return {
            scope: c.scope,
            audience: resourceIndicator,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign },
          };
        },
      },
    },
    async extraTokenClaims(_ctx, token) {
      return CLIENTS[token.clientId]?.claims;
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('idp server_error', err));
  return provider;
}

const stats = { discovery: 0, jwks: 0 };
let handler = null;
let issuer = null;

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/__stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  if (path === '/__rotate' && req.method === 'POST') {
    const key = await privateJwk('ES256');
    keys = [key, ...keys];
    handler = buildProvider(issuer).callback();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kid: key.kid }));
    return;
  }
  if (path === '/.well-known/openid-configuration') stats.discovery += 1;
  if (path === '/jwks') stats.jwks += 1;
  handler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  handler = buildProvider(issuer).callback();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
