// A real OpenID Provider for Deputy's federation tests: panva's `oidc-provider` (OpenID-certified),
// installed into .cache/oidc-provider by scripts/install-oidc-provider.sh, run with Node 22.
//
//   OIDC_PROVIDER_DIR=.cache/oidc-provider/node_modules/oidc-provider node op.mjs CONFIG.json
//
// CONFIG.json (written by tests/support/oidc_op.py):
//   host     the address to listen on (default 127.0.0.1); port: default 0, any free port.
//            The issuer is http://HOST:PORT exactly (no trailing slash, no path).
//   clients  oidc-provider client metadata: client_id, client_secret, redirect_uris,
//            token_endpoint_auth_method (client_secret_basic, client_secret_post, private_key_jwt
//            with `jwks`), id_token_signed_response_alg (RS256 default, or ES256)...
//   accounts optional, replaces the two below: {login: {password, sub?, email, name, groups, ...}}
//   groups   "scope" (default): `groups` is released only for the `groups` scope, as Okta's
//            custom groups scope does; "always": it is in every ID token, as Entra ID and
//            Keycloak's default mapper do. Either way the claim is in the ID token itself
//            (conformIdTokenClaims off), not only at userinfo.
//
// What the OP enforces, by its own code: authorization code flow only, PKCE S256 required for
// every client (RFC 7636; oidc-provider 9 supports no `plain`), RFC 9207 `iss` in every
// authorization response (oidc-provider 9 always sends it and says so in discovery), the
// OpenID Connect Core 1.0 ID token checks of its certified implementation.
//
// Interactions are our own minimal pages, not oidc-provider's devInteractions: those accept any
// login with any password and print debug dumps; a test OP must refuse a wrong password and know
// only its accounts. The login page (GET /interaction/UID) has a form posting `username` and
// `password` to /interaction/UID/login (button#sign-in) and a form posting to /interaction/UID/abort
// (button#cancel: the RP gets error=access_denied). A wrong password answers 401 with the form again.
// Consent is given automatically (loadExistingGrant grants what was asked), as an organisation's
// IdP does for its own first-party applications, so a sign-in is one form.
//
// Signing keys (EC P-256 for ES256, RSA 2048 for RS256) are generated at every start.
// On listening it prints exactly one line to stdout: "ready http://HOST:PORT". It exits when
// stdin closes, so an OP never outlives the test process that started it.
import {
  announceReady, escape, listen, loadOidcProvider, readConfig, readForm, send, sendInteractionError, sharedOptions,
} from './shared.mjs';

const config = readConfig();
const { default: Provider } = await loadOidcProvider();

const DEFAULT_ACCOUNTS = {
  alice: {
    password: 'alice-password', email: 'alice@example.com', email_verified: true,
    name: 'Alice Liddell', groups: ['finance', 'staff'],
  },
  bob: {
    password: 'bob-password', email: 'bob@example.org', email_verified: true,
    name: 'Bob Marley', groups: ['engineering'],
  },
};

// login name -> account; `sub` defaults to the login name, so two OPs both have a `sub` "alice":
// exactly the collision an RP must survive by keying users on (issuer, sub).
const accounts = new Map(Object.entries(config.accounts ?? DEFAULT_ACCOUNTS).map(
  ([login, account]) => [login, { preferred_username: login, sub: login, ...account }],
));
const accountsBySub = new Map([...accounts.values()].map((account) => [account.sub, account]));

// Consent without a page: grant the scopes and claims this request asked for (the OP still
// releases only claims its `claims` table maps to those scopes).
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
  grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
  if (oidc.requestParamClaims.size) grant.addOIDCClaims([...oidc.requestParamClaims]);
  await grant.save();
  return grant;
}

async function findAccount(_ctx, sub) {
  const account = accountsBySub.get(sub);
  if (!account) return undefined;
  const { password: _password, ...claims } = account;
  return { accountId: sub, claims: async () => claims };
}

function loginPage(uid, params, error) {
  const alert = error ? `<p role="alert" class="error">${escape(error)}</p>` : '';
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in - test OP</title></head><body>
<h1>Sign in</h1>${alert}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label>Username <input name="username" required value="${escape(params.login_hint ?? '')}"></label>
<label>Password <input name="password" type="password" required></label>
<button id="sign-in" type="submit">Sign in</button></form>
<form method="post" action="/interaction/${escape(uid)}/abort"><button id="cancel" type="submit">Cancel</button></form>
</body></html>`;
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction cookie does not match');
  if (details.prompt.name !== 'login') return send(res, 501, 'text/plain', `no page for ${details.prompt.name}`);
  if (req.method === 'GET' && action === undefined) {
    return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, details.params));
  }
  if (req.method !== 'POST') return send(res, 405, 'text/plain', 'method not allowed');
  if (action === '/abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the user cancelled the sign-in',
    }, { mergeWithLastSubmission: false });
  }
  const form = await readForm(req);
  const account = accounts.get(form.get('username') ?? '');
  if (!account || form.get('password') !== account.password) {
    return send(res, 401, 'text/html; charset=utf-8', loginPage(uid, details.params, 'Wrong username or password.'));
  }
  return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, {
    mergeWithLastSubmission: false,
  });
}

const { server, port, issuer } = await listen(config);

const groupsClaim = ['groups'];
const provider = new Provider(issuer, {
  ...sharedOptions('op', port),
  clients: config.clients ?? [],
  findAccount,
  loadExistingGrant,
  claims: {
    openid: config.groups === 'always' ? ['sub', ...groupsClaim] : ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: groupsClaim,
  },
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    claimsParameter: { enabled: true },
  },
});

// A 500 from the OP is a fixture bug: its stack trace goes to stderr, which the launcher keeps.
provider.on('server_error', (_ctx, error) => console.error(error));

const providerCallback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/abort)?$/;
server.on('request', (req, res) => {
  const match = INTERACTION.exec(new URL(req.url, issuer).pathname);
  if (!match) return providerCallback(req, res);
  return interaction(provider, req, res, match[1], match[2]).catch((error) => sendInteractionError(res, error));
});

announceReady(issuer);
