"""The authorization code flow toward an upstream's authorization server, refresh and revocation (Deputy as the
user's OAuth client; MCP 2026-07-28 "Authorization Flow Steps").

:meth:`AuthorizationClient.start`: ``response_type=code``, ``client_id``, the server's redirect URI (its own,
RFC 9700 §4.4.2: :mod:`.redirect_uris`), fresh 256-bit
``state`` (RFC 6749 §10.12) and PKCE verifier (RFC 7636 §4.1; only its S256 challenge is sent, §4.2), ``resource``
exactly as the protected resource metadata published it (RFC 8707 §2; MCP "Resource Parameter Implementation") and
the scopes discovery chose, when there are any. The caller keeps the :class:`PendingConnection` by ``state``.

:meth:`AuthorizationClient.redeem` checks the authorization response, then redeems its code:

1. ``iss`` (RFC 9207 §2.4), when present, must equal the issuer the flow was started with — simple string
   comparison, no normalization (a trailing slash is another issuer) — whether or not the server advertised it;
   when the server advertised ``authorization_response_iss_parameter_supported``, or the client is Deputy's client
   ID metadata document (the same client at every server, so only ``iss`` tells which one answered: RFC 9700
   §4.4.2), it must be present. This comes first, so an error response from another server is not believed either
   (RFC 9700 §4.4, mix-up);
2. ``error`` (RFC 6749 §4.1.2.1) ends the flow with the server's code;
3. the token request (RFC 6749 §4.1.3) carries the code, ``redirect_uri``, ``code_verifier`` and ``resource``,
   with the client authenticated as it was registered (:mod:`deputy.federation.oauth_client`);
4. the response is checked (:mod:`.token_responses`).

:meth:`AuthorizationClient.refresh` (RFC 6749 §6) sends ``resource`` too; a new refresh token replaces the old one
(rotation; the caller keeps the old one only when none came). :meth:`AuthorizationClient.revoke` is RFC 7009 §2.1,
when the server lists a ``revocation_endpoint``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, cast

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from deputy import clock
from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed, TokenProblem, shown
from deputy.connections.model import PendingConnection, UpstreamClient, UpstreamProtection, UpstreamTokens
from deputy.connections.redirect_uris import RedirectUris
from deputy.connections.token_responses import read_tokens
from deputy.connections.upstream_http import JsonAnswer, UpstreamHttp, UpstreamHttpError
from deputy.federation.oauth_client import (
    AuthMethod,
    ClientCredentials,
    SigningKey,
    authenticate_client,
    code_challenge,
    with_query,
)
from deputy.handles import new_handle

TOKEN_MAX_BYTES = 64 * 1024
ERROR_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}


class AuthorizationClient:
    def __init__(self, http: UpstreamHttp, redirect_uris: RedirectUris) -> None:
        self.http = http
        self.redirect_uris = redirect_uris

    def start(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient, *,
              user_id: str, scope: str | None, ttl: int, now: int) -> tuple[str, PendingConnection]:
        """The authorization URL to send the browser to, and the pending connection to keep (by ``state``).

        ``scope`` None asks for the scopes discovery chose (``protection.scopes``); a step-up passes the union of
        the granted and challenged scopes."""
        if scope is None and protection.scopes:
            scope = " ".join(protection.scopes)
        authorization_server = protection.authorization_server
        pending = PendingConnection(state=new_handle(), code_verifier=new_handle(), server=server.name,
                                    user_id=user_id, issuer=authorization_server.issuer, client_id=client.client_id,
                                    redirect_uri=self.redirect_uris.of(server), resource=protection.resource,
                                    scope=scope or None,
                                    expires_at=now + ttl)
        params = {"response_type": "code", "client_id": client.client_id, "redirect_uri": pending.redirect_uri,
                  "state": pending.state, "code_challenge": code_challenge(pending.code_verifier),
                  "code_challenge_method": "S256", "resource": pending.resource}
        if pending.scope:
            params["scope"] = pending.scope
        return with_query(authorization_server.authorization_endpoint, params), pending

    async def redeem(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                     pending: PendingConnection, query: Mapping[str, str]) -> UpstreamTokens:
        """Check the callback (``iss``, ``error``, ``code``; ``state`` was the caller's lookup) and redeem the code."""
        authorization_server = protection.authorization_server
        iss = query.get("iss")
        if iss is not None:
            # RFC 9207 §2.4: exactly the recorded issuer, as strings.
            if not hmac.compare_digest(iss.encode(), pending.issuer.encode()):
                raise ConnectionFailed(server.name, "issuer_mismatch",
                                       f"the response comes from issuer {shown(iss)!r}, not {pending.issuer!r}")
        elif authorization_server.iss_parameter_supported:
            raise ConnectionFailed(server.name, "issuer_missing",
                                   "the authorization server sends iss with its responses (RFC 9207), and this "
                                   "one has none")
        elif client.source == "metadata_document":
            raise ConnectionFailed(server.name, "issuer_missing",
                                   "a connection made with Deputy's client ID metadata document needs iss (RFC 9207) "
                                   "to tell which authorization server answered, and this answer has none")
        if authorization_server.issuer != pending.issuer or client.client_id != pending.client_id:
            raise ConnectionFailed(server.name, "issuer_mismatch",
                                   "the upstream's authorization server changed while the connection was made")
        error = query.get("error")
        if error is not None:
            code = error if error and len(error) <= 64 and set(error) <= ERROR_CODE_CHARS else "invalid"
            described = query.get("error_description")
            raise ConnectionFailed(server.name, "authorization_denied", f"the authorization server answered {code}"
                                   + (f": {shown(described)}" if described else ""), error=code)
        code_value = query.get("code")
        if not code_value:
            raise ConnectionFailed(server.name, "code_missing", "the response carries no code")
        form = {"grant_type": "authorization_code", "code": code_value, "redirect_uri": pending.redirect_uri,
                "code_verifier": pending.code_verifier, "resource": pending.resource}
        answer = await self._token_request(server, protection, client, form)
        return read_tokens(server.name, answer, now=clock.now(), issuer=pending.issuer, resource=pending.resource,
                           asked_scope=pending.scope, refused="token_request_failed")

    async def refresh(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                      refresh_token: str, scope: str | None) -> UpstreamTokens:
        """RFC 6749 §6; a refused refresh raises ConnectionFailed(reason="refresh_refused")."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": protection.resource}
        if scope:
            form["scope"] = scope
        answer = await self._token_request(server, protection, client, form)
        return read_tokens(server.name, answer, now=clock.now(), issuer=protection.authorization_server.issuer,
                           resource=protection.resource, asked_scope=scope, refused="refresh_refused")

    async def revoke(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                     token: str, hint: str) -> None:
        """RFC 7009 when the authorization server offers it; nothing otherwise."""
        endpoint = protection.authorization_server.revocation_endpoint
        if endpoint is None:
            return
        form = {"token": token, "token_type_hint": hint}
        answer = await self._post(server, client, endpoint, protection.authorization_server.token_endpoint, form)
        if answer.status != 200:  # RFC 7009 §2.2: 200 even for a token the server no longer knows
            reason: TokenProblem = "upstream_unavailable" if answer.status >= 500 else "token_request_failed"
            raise ConnectionFailed(server.name, reason, f"the revocation endpoint answered HTTP {answer.status}")

    async def _token_request(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                             form: dict[str, str]) -> JsonAnswer:
        token_endpoint = protection.authorization_server.token_endpoint
        return await self._post(server, client, token_endpoint, token_endpoint, form)

    async def _post(self, server: UpstreamServer, client: UpstreamClient, endpoint: str, token_endpoint: str,
                    form: dict[str, str]) -> JsonAnswer:
        try:
            headers = authenticate_client(_credentials(server, client), token_endpoint, form)
        except ValueError as exc:
            raise ConnectionFailed(server.name, "no_client_authentication", str(exc)) from None
        try:
            return await self.http.post_form(server, endpoint, form, headers, TOKEN_MAX_BYTES)
        except UpstreamHttpError as exc:
            reason: TokenProblem = "token_response_invalid" if exc.kind == "too_large" else "upstream_unavailable"
            raise ConnectionFailed(server.name, reason, exc.message) from None


def _credentials(server: UpstreamServer, client: UpstreamClient) -> ClientCredentials:
    method = client.auth_method
    if method not in ("none", "client_secret_basic", "client_secret_post", "private_key_jwt"):
        raise ValueError(f"unknown client authentication {method!r}")
    key = None
    if method == "private_key_jwt":
        jwk = server.oauth.private_key if server.oauth is not None else None
        if jwk is None:
            raise ValueError("private_key_jwt needs [servers.NAME.oauth] private_key")
        key = signing_key(jwk)
    return ClientCredentials(client.client_id, cast(AuthMethod, method), client.client_secret, key)


def signing_key(jwk: Mapping[str, Any]) -> SigningKey:
    """The configured private JWK as a key to sign ``private_key_jwt`` assertions with (RFC 7523 §2.2): its own
    ``alg``, else the one its curve means (RSA: RS256)."""
    try:
        key = JWKRegistry.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"the private key cannot be used: {type(exc).__name__}") from None
    declared = jwk.get("alg")
    algorithm = declared if isinstance(declared, str) else CURVE_ALGORITHMS.get(str(jwk.get("crv")), "RS256")
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else key.thumbprint()
    return SigningKey(key, algorithm, kid)
