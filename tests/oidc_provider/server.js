// A real OpenID Provider (panva/oidc-provider) for cookieguard's tests, with refresh-token
// rotation always on. TEST ONLY: the /test/* routes below mint tokens without a browser and
// inject faults; they exist in this server alone and must never be copied into a real IdP.
//
// Usage: node server.js [port]   (port 0 or absent = ephemeral)
// Env:   OIDC_PORT, OIDC_ACCESS_TOKEN_TTL (seconds, default 60), OIDC_REFRESH_TOKEN_TTL
//        (seconds, default 14 days), OIDC_LOGIN_CLIENT (JSON {client_id, client_secret,
//        redirect_uris}: a confidential client for browser logins by authorization code, see
//        below; absent: no browser login at all, as before).
// Once listening it prints exactly one JSON line on stdout:
//   {"ready":true,"port":N,"issuer":"http://127.0.0.1:N", ...}
// Everything else (oidc-provider's warnings) goes to stderr.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const accessTokenTTL = Number(process.env.OIDC_ACCESS_TOKEN_TTL ?? 60);
const refreshTokenTTL = Number(process.env.OIDC_REFRESH_TOKEN_TTL ?? 14 * 24 * 3600);

// Access tokens are opaque unless the grant names this resource; then they are JWTs
// (`typ: at+jwt`, `aud` = the resource), as an API-audience setup at Auth0/Okta would give.
const API_RESOURCE = 'https://api.cookieguard.test';
const API_SCOPE = 'api:read';

// The secrets contain characters that RFC 6749 2.3.1 requires to be form-urlencoded before
// base64 in client_secret_basic: a client that skips that step fails against this server.
const CLIENTS = [
  {
    client_id: 'cookieguard-basic',
    client_secret: 'basic-s3cret:with %+&=/ chars',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    client_id: 'cookieguard-post',
    client_secret: 'post-s3cret:with %+&=/ chars',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    client_id: 'cookieguard-public',
    token_endpoint_auth_method: 'none',
  },
].map((client) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
  ...client,
}));

// A browser login (authorization code) for an app under test, e.g. examples/nextjs-authjs: TEST
// ONLY, the interaction signs in the account named by `login_hint` (default "alice") and grants
// the requested scopes without any page, so a browser test only follows redirects.
const LOGIN_CLIENT = process.env.OIDC_LOGIN_CLIENT ? JSON.parse(process.env.OIDC_LOGIN_CLIENT) : null;
if (LOGIN_CLIENT) {
  CLIENTS.push({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...LOGIN_CLIENT,
  });
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `test-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };
}

function newStats() {
  return {
    token_requests: 0, // every POST /token, whatever its grant type or outcome
    refresh_requests: 0, // grant_type=refresh_token requests that reached the grant handler or failed in it
    refresh_success: 0,
    invalid_grant: 0,
    grants_revoked: 0, // reuse detection fires this (the whole grant goes, new refresh token included)
    errors: {}, // token endpoint error code -> count
    faults_injected: 0,
  };
}

let stats = newStats();
// Fault injection for the proxy's end-to-end tests: the next `times` token requests answer
// `status` (after `delay_ms`) without reaching the provider, so no refresh token is spent.
let fault = null;

const server = http.createServer();
await new Promise((resolve) => { server.listen(port, '127.0.0.1', resolve); });
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

// Accounts minted with a `preferred_username` (OIDC Core 5.1's `profile` claim).
const handles = new Map();

const provider = new Provider(issuer, {
  clients: CLIENTS,
  jwks: { keys: [signingKey()] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const handle = handles.get(sub);
        return { sub, email: `${sub}@example.test`, email_verified: true, ...(handle ? { preferred_username: handle } : {}) };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', API_SCOPE],
  rotateRefreshToken: true,
  async issueRefreshToken() { return true; },
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? accessTokenTTL,
    IdToken: accessTokenTTL,
    RefreshToken: refreshTokenTTL,
    Grant: refreshTokenTTL,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      // A refresh without a `resource` parameter (what cookieguard sends) keeps the audience
      // the grant was minted for, so a JWT-minted session keeps getting JWT access tokens.
      useGrantedResource: async () => true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (resourceIndicator !== API_RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: API_SCOPE,
          audience: API_RESOURCE,
          accessTokenTTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});

provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') {
    stats.refresh_requests += 1;
    stats.refresh_success += 1;
  }
});
provider.on('grant.error', (ctx, err) => {
  const code = err.error ?? 'unknown';
  stats.errors[code] = (stats.errors[code] ?? 0) + 1;
  if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refresh_requests += 1;
  if (code === 'invalid_grant') stats.invalid_grant += 1;
});
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

// Creates what a browser login would leave behind: a Grant and a RefreshToken in the
// provider's own models (plus an access token and an id token), without any interaction.
// `preferred_username`: the account has one (as Keycloak's users do) and the grant has the
// `profile` scope, so the id tokens, this one and every refreshed one, carry it beside `email`.
async function mint({ account_id: accountId = 'alice', client_id: clientId = 'cookieguard-basic', resource = false, preferred_username: handle = null }) {
  const client = await provider.Client.find(clientId);
  if (!client) throw new Error('unknown client_id');
  if (handle) handles.set(accountId, handle);
  const resourceIndicator = resource === true ? API_RESOURCE : (resource || undefined);
  const oidcScope = handle ? 'openid offline_access email profile' : 'openid offline_access email';
  const scope = resourceIndicator ? `${oidcScope} ${API_SCOPE}` : oidcScope;

  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope(oidcScope);
  if (resourceIndicator) grant.addResourceScope(resourceIndicator, API_SCOPE);
  const grantId = await grant.save();

  const authTime = Math.floor(Date.now() / 1000);
  const refreshToken = new provider.RefreshToken({
    accountId, client, grantId, scope, gty: 'authorization_code', authTime, rotations: 0,
    ...(resourceIndicator ? { resource: resourceIndicator } : {}),
  });
  const refreshTokenValue = await refreshToken.save();

  const accessToken = new provider.AccessToken({ accountId, client, grantId, gty: 'authorization_code' });
  if (resourceIndicator) {
    accessToken.resourceServer = new provider.ResourceServer(resourceIndicator, {
      scope: API_SCOPE, audience: resourceIndicator, accessTokenTTL, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } },
    });
    accessToken.scope = API_SCOPE;
  } else {
    accessToken.scope = 'openid email';
  }
  const accessTokenValue = await accessToken.save();

  const idClaims = { sub: accountId, email: `${accountId}@example.test`, auth_time: authTime };
  const idToken = new provider.IdToken(handle ? { ...idClaims, preferred_username: handle } : idClaims, { client });
  idToken.scope = handle ? 'openid email profile' : 'openid email';
  const idTokenValue = await idToken.issue({ use: 'idtoken' });

  return {
    refresh_token: refreshTokenValue,
    access_token: accessTokenValue,
    id_token: idTokenValue,
    expires_in: accessTokenTTL,
    grant_id: grantId,
  };
}

const providerCallback = provider.callback();

async function autoInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const accountId = typeof params.login_hint === 'string' && params.login_hint ? params.login_hint : 'alice';
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path === '/test/mint' && req.method === 'POST') {
      sendJson(res, 200, await mint(await readJson(req)));
      return;
    }
    if (path === '/test/stats' && req.method === 'GET') {
      sendJson(res, 200, stats);
      return;
    }
    if (path === '/test/reset' && req.method === 'POST') {
      stats = newStats();
      fault = null;
      sendJson(res, 200, { reset: true });
      return;
    }
    if (path === '/test/fault' && req.method === 'POST') {
      const { status = 503, delay_ms: delayMs = 0, times = 1, body = '{"error":"temporarily_unavailable"}' } = await readJson(req);
      fault = times > 0 ? { status, delayMs, times, body } : null;
      sendJson(res, 200, { fault });
      return;
    }
  } catch (err) {
    sendJson(res, 400, { error: 'test_route_error', message: String(err?.message ?? err) });
    return;
  }

  if (LOGIN_CLIENT && path.startsWith('/interaction/') && req.method === 'GET') {
    try {
      await autoInteraction(req, res);
    } catch (err) {
      sendJson(res, 400, { error: 'interaction_error', message: String(err?.message ?? err) });
    }
    return;
  }

  if (path === '/token' && req.method === 'POST') {
    stats.token_requests += 1;
    if (fault) {
      const current = fault;
      current.times -= 1;
      if (current.times <= 0) fault = null;
      stats.faults_injected += 1;
      if (current.delayMs) await new Promise((resolve) => { setTimeout(resolve, current.delayMs); });
      if (!res.destroyed) {
        res.writeHead(current.status, { 'content-type': 'application/json' });
        res.end(current.body);
      }
      return;
    }
  }
  providerCallback(req, res);
});

process.on('SIGTERM', () => { server.close(); process.exit(0); });
process.on('SIGINT', () => { server.close(); process.exit(0); });

process.stdout.write(`${JSON.stringify({
  ready: true,
  port: actualPort,
  issuer,
  token_endpoint: `${issuer}/token`,
  api_resource: API_RESOURCE,
  access_token_ttl: accessTokenTTL,
  login_client: LOGIN_CLIENT ? LOGIN_CLIENT.client_id : null,
  clients: CLIENTS.filter((client) => client !== CLIENTS.find((c) => c.client_id === LOGIN_CLIENT?.client_id)).map(({ client_id: id, client_secret: secret, token_endpoint_auth_method: auth }) => ({ client_id: id, client_secret: secret ?? null, token_endpoint_auth_method: auth })),
})}\n`);
