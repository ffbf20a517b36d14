// A third-party OAuth authorization server for MCP resources, for Deputy's upstream-connection tests:
// panva's `oidc-provider` (installed into .cache/oidc-provider by scripts/install-oidc-provider.sh), Node 22.
//
//   OIDC_PROVIDER_DIR=.cache/oidc-provider/node_modules/oidc-provider node as.mjs CONFIG.json
//
// CONFIG.json (written by tests/support/upstream_oauth.py):
//   host              the address to listen on (default 127.0.0.1); the issuer is http://HOST:PORT exactly
//   access_token_ttl  seconds an access token lives (default 300)
//   accounts          optional {login: {password, sub?}}; default alice and bob, password = login name
//
// What it is, by oidc-provider's own code:
//   - RFC 8414 metadata at /.well-known/oauth-authorization-server (the same document oidc-provider serves
//     at /.well-known/openid-configuration), with code_challenge_methods_supported ["S256"] and
//     authorization_response_iss_parameter_supported (RFC 9207: every authorization response carries iss).
//   - RFC 8707 resource indicators: any http(s) `resource` is a resource server whose access tokens are
//     ES256 JWTs (RFC 9068) with aud = that resource and scope within "tools:read tools:admin".
//   - RFC 7591 open dynamic registration at /reg; PKCE S256 required of every client (RFC 7636).
//   - Refresh tokens for every client allowed the refresh_token grant, rotated on each use (RFC 9700 §4.14.2).
//   - RFC 7009 revocation at /token/revocation.
//
// Interactions are our own two pages so a plain HTTP client can walk them: GET /interaction/UID is the
// login page (form posting username and password to /interaction/UID/login, button#sign-in; cancel form to
// /interaction/UID/abort, button#cancel) and then the consent page (form posting to /interaction/UID/confirm,
// button#allow; form to /interaction/UID/abort, button#deny: the client gets error=access_denied).
//
// GET /_fixture/stats answers what the tests count: {token_requests, revoked: [sha256 hex of each token
// revoked]}; the tokens themselves are never kept. Prints "ready http://HOST:PORT" once listening and exits
// when stdin closes, so it never outlives the test process that started it.
import { createHash } from 'node:crypto';

import {
  announceReady, escape, listen, loadOidcProvider, readConfig, readForm, send, sendInteractionError, sharedOptions,
} from '../oidc_provider/shared.mjs';

const config = readConfig();
const { default: Provider, errors } = await loadOidcProvider();

const RESOURCE_SCOPES = 'tools:read tools:admin';
const accessTokenTTL = config.access_token_ttl ?? 300;
const accounts = new Map(Object.entries(config.accounts ?? { alice: {}, bob: {} }).map(
  ([login, account]) => [login, { password: login, sub: login, ...account }],
));
const stats = { token_requests: 0, revoked: [] };

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)} - upstream AS</title></head>`
    + `<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, error) {
  const alert = error ? `<p role="alert" class="error">${escape(error)}</p>` : '';
  return page('Sign in', `${alert}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label>Username <input name="username" required></label>
<label>Password <input name="password" type="password" required></label>
<button id="sign-in" type="submit">Sign in</button></form>
<form method="post" action="/interaction/${escape(uid)}/abort"><button id="cancel" type="submit">Cancel</button></form>`);
}

function consentPage(uid, details) {
  const resources = Object.entries(details.prompt.details.missingResourceScopes ?? {})
    .map(([resource, scopes]) => `<li>${escape(resource)}: ${escape(scopes.join(' '))}</li>`).join('');
  return page('Allow access?', `<p>${escape(details.params.client_id)} asks for:</p><ul>${resources}</ul>
<form method="post" action="/interaction/${escape(uid)}/confirm"><button id="allow" type="submit">Allow</button></form>
<form method="post" action="/interaction/${escape(uid)}/abort"><button id="deny" type="submit">Deny</button></form>`);
}

// Consent grants exactly what the prompt found missing: OIDC scopes and claims, and per resource its scopes.
async function grantMissing(provider, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  return grant.save();
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction cookie does not match');
  const prompt = details.prompt.name;
  if (req.method === 'GET' && action === undefined) {
    if (prompt === 'login') return send(res, 200, 'text/html; charset=utf-8', loginPage(uid));
    if (prompt === 'consent') return send(res, 200, 'text/html; charset=utf-8', consentPage(uid, details));
    return send(res, 501, 'text/plain', `no page for ${prompt}`);
  }
  if (req.method !== 'POST') return send(res, 405, 'text/plain', 'method not allowed');
  if (action === '/abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the user refused',
    }, { mergeWithLastSubmission: false });
  }
  if (action === '/confirm' && prompt === 'consent') {
    const grantId = await grantMissing(provider, details);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action !== '/login' || prompt !== 'login') return send(res, 400, 'text/plain', `not now: ${action}`);
  const form = await readForm(req);
  const account = accounts.get(form.get('username') ?? '');
  if (!account || form.get('password') !== account.password) {
    return send(res, 401, 'text/html; charset=utf-8', loginPage(uid, 'Wrong username or password.'));
  }
  return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, {
    mergeWithLastSubmission: false,
  });
}

function isResourceUrl(indicator) {
  try {
    const url = new URL(indicator);
    return (url.protocol === 'http:' || url.protocol === 'https:') && !url.hash;
  } catch {
    return false;
  }
}

const { server, port, issuer } = await listen(config);

const provider = new Provider(issuer, {
  ...sharedOptions('as', port),
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  // The resource scopes are listed too so that the metadata's scopes_supported names them.
  scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES.split(' ')],
  claims: { openid: ['sub'] },
  responseTypes: ['code'],
  pkce: { required: () => true },
  // A client allowed the refresh_token grant always gets one (oidc-provider's default wants offline_access
  // with prompt=consent), it outlives the AS session, and every use rotates it.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  rotateRefreshToken: () => true,
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (!isResourceUrl(indicator)) throw new errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPES,
          audience: indicator,
          accessTokenTTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});

provider.on('server_error', (_ctx, error) => console.error(error));

// Counted after oidc-provider answered: every token-endpoint request, and the digest of each token a
// successful RFC 7009 request named.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'POST') return;
  if (ctx.path === '/token') stats.token_requests += 1;
  const token = ctx.oidc?.params?.token;
  if (ctx.path === '/token/revocation' && ctx.status === 200 && typeof token === 'string') {
    stats.revoked.push(createHash('sha256').update(token).digest('hex'));
  }
});

const providerCallback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/confirm|\/abort)?$/;
server.on('request', (req, res) => {
  const { pathname } = new URL(req.url, issuer);
  if (pathname === '/_fixture/stats') return send(res, 200, 'application/json', JSON.stringify(stats));
  if (pathname === '/.well-known/oauth-authorization-server') req.url = '/.well-known/openid-configuration';
  const match = INTERACTION.exec(pathname);
  if (!match) return providerCallback(req, res);
  return interaction(provider, req, res, match[1], match[2]).catch((error) => sendInteractionError(res, error));
});

announceReady(issuer);
