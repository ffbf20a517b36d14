// What the two oidc-provider fixtures share: the test OpenID Provider (op.mjs, tests/support/oidc_op.py) and the
// third-party authorization server for upstream connections (../upstream_oauth_as/as.mjs,
// tests/support/upstream_oauth.py). Node builtins only; each fixture imports oidc-provider itself through
// loadOidcProvider, from OIDC_PROVIDER_DIR (scripts/install-oidc-provider.sh).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// The fixture's CONFIG.json, named by its one argument.
export const readConfig = () => JSON.parse(readFileSync(process.argv[2], 'utf8'));

// oidc-provider's module (default: Provider, errors), from the directory the launcher names.
export async function loadOidcProvider() {
  const packageDir = process.env.OIDC_PROVIDER_DIR;
  const packageJson = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'));
  return import(pathToFileURL(join(packageDir, packageJson.main)).href);
}

// An HTTP server listening on config.host (default 127.0.0.1) and config.port (default 0: any free port);
// the issuer is http://HOST:PORT exactly (no trailing slash, no path).
export async function listen(config) {
  const host = config.host ?? '127.0.0.1';
  const server = createServer();
  await new Promise((resolve) => { server.listen(config.port ?? 0, host, resolve); });
  const { port } = server.address();
  return { server, port, issuer: `http://${host}:${port}` };
}

function signingKey(kid, type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

// The Provider options both fixtures set alike: fresh EC P-256 (ES256) and RSA 2048 (RS256) signing keys at every
// start, our own interaction pages, plain-text errors, no client-based CORS (no browser test needs it).
// Cookies are per host, not per port: two servers on 127.0.0.1 in one browser must not overwrite each other's
// session and interaction cookies, so their names carry `cookiePrefix` and the port.
export function sharedOptions(cookiePrefix, port) {
  const name = `${cookiePrefix}${port}`;
  return {
    jwks: {
      keys: [
        signingKey('ec-1', 'ec', { namedCurve: 'P-256' }, 'ES256'),
        signingKey('rsa-1', 'rsa', { modulusLength: 2048 }, 'RS256'),
      ],
    },
    interactions: { url: (_ctx, found) => `/interaction/${found.uid}` },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      names: { session: `${name}_session`, interaction: `${name}_interaction`, resume: `${name}_resume` },
    },
    clientBasedCORS: () => false,
    renderError: (ctx, out) => {
      ctx.type = 'text/plain';
      ctx.body = `${out.error}: ${out.error_description ?? ''}`;
    },
  };
}

export const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

// An interaction page's failure (SessionNotFound: no or expired interaction cookie, and friends): a plain answer
// naming it.
export function sendInteractionError(res, error) {
  if (!res.headersSent) send(res, error.statusCode ?? 500, 'text/plain', `${error.name}: ${error.message}`);
}

// Print the one line the launcher waits for, and exit when stdin closes: the fixture never outlives the test
// process that started it.
export function announceReady(issuer) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  process.on('SIGTERM', () => process.exit(0));
  console.log(`ready ${issuer}`);
}
