"""A third-party OAuth authorization server and an MCP server that accepts only its tokens, as a test fixture.

What Deputy must act as a client toward (issue 15): an MCP server protected the way the MCP
authorization specification describes, whose tokens come from a real authorization server.

* :class:`UpstreamAuthServer`: panva's ``oidc-provider`` (``tests/support/upstream_oauth_as/as.mjs``,
  started by :func:`tests.support.oidc_op.node_server`) with RFC 8414 metadata, RFC 7591 registration,
  RFC 8707 resource indicators (ES256 JWT access tokens, RFC 9068, whose ``aud`` is the resource),
  PKCE S256 required, RFC 9207 ``iss``, rotated refresh tokens and RFC 7009 revocation. Accounts alice
  and bob, password = login name. :meth:`UpstreamAuthServer.approve` walks its login and consent pages
  with httpx and returns the redirect back to the client without following it.
* :class:`ProtectedUpstream`: the official MCP Python SDK's server as an RFC 9728 protected resource:
  its protected resource metadata names the AS; without a valid token it answers ``401`` with
  ``WWW-Authenticate: Bearer resource_metadata=..., scope="tools:read"`` (RFC 6750 §3, RFC 9728 §5.1).
  Its :class:`JwtAccessTokenVerifier` checks signature (the AS's JWKS), ``typ`` ``at+jwt``, ``iss``,
  ``aud`` = its resource and ``exp`` with joserfc. Tools: ``whoami`` (the token's ``sub``), ``add``,
  ``admin_op`` (needs ``tools:admin``: ``403`` ``insufficient_scope`` otherwise, RFC 6750 §3.1).

The contract other tests use is /tmp/deputy/FIXTURE_API.md: :func:`upstream_oauth` and the module-scope
pytest fixture :func:`oauth_upstream`. :func:`connect_account` (and its steps) is a person connecting her
account through a running Deputy's pages over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.oidc_op import node_server, sign_in_at_op
from tests.support.recording_upstream import RequestRecorder
from tests.support.sdk_client import Form, free_port, page_text, parse_forms

AS_SCRIPT = Path(__file__).with_name("upstream_oauth_as") / "as.mjs"
BASE_SCOPE = "tools:read"
ADMIN_SCOPE = "tools:admin"


def token_digest(token: str) -> str:
    """How the AS names a revoked token: its SHA-256, hex (the token itself is never kept)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class UpstreamAuthServer:
    """The running authorization server; ``issuer`` is exactly the ``issuer`` its metadata carries."""

    issuer: str
    log_path: Path

    def approve(self, authorization_url: str, login: str = "alice", *, consent: bool = True) -> str:
        """Sign in as ``login`` (password = login) and allow (or deny) at the consent page, in a fresh
        cookie jar; return the final redirect's Location (code, state, iss, or error=access_denied)."""
        with httpx.Client(timeout=10) as client:
            return sign_in_at_op(client, authorization_url, login, login, consent=consent).url

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.issuer}/_fixture/stats", timeout=10).raise_for_status().json()
        return stats

    def revoked_tokens(self) -> list[str]:
        """SHA-256 hex digests of the tokens revoked at its RFC 7009 endpoint, in order."""
        return list(self._stats()["revoked"])

    def token_requests(self) -> int:
        """How many requests its token endpoint served (whatever the grant, whatever the answer)."""
        return int(self._stats()["token_requests"])

    def claims_of(self, token: str) -> dict[str, Any]:
        """The claims of an access token this AS issued, its signature checked against the AS's JWKS (any other
        token raises joserfc's error)."""
        metadata = httpx.get(f"{self.issuer}/.well-known/oauth-authorization-server", timeout=10).json()
        keys = KeySet.import_key_set(httpx.get(metadata["jwks_uri"], timeout=10).json())
        claims: dict[str, Any] = jwt.decode(token, keys, algorithms=["ES256"]).claims
        return claims

    def log(self) -> str:
        """What the AS wrote to stderr (a crash's stack trace)."""
        return self.log_path.read_text(errors="replace")


@dataclass(frozen=True)
class ProtectedUpstream:
    """The running MCP server; ``resource`` (== ``url``) is the ``aud`` its tokens must carry."""

    url: str
    resource: str
    recorder: RequestRecorder
    verifier: JwtAccessTokenVerifier

    def refuse(self, token: str) -> None:
        """From now on answer ``token`` 401 ``invalid_token`` as if it had expired or been revoked here: what a
        resource server may do at any time before ``exp`` (RFC 6750 §3.1), so a client must refresh and retry."""
        self.verifier.refused.add(token_digest(token))

    @property
    def resource_metadata_url(self) -> str:
        """RFC 9728 §3.1: the well-known path inserted before the resource's path."""
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource)))

    def seen_authorizations(self) -> list[str]:
        """Every Authorization header that reached it, in order (requests without one are left out)."""
        return [seen.headers["authorization"] for seen in self.recorder.seen if "authorization" in seen.headers]

    def seen_tokens(self) -> list[str]:
        """The bearer tokens it received, in order (any other Authorization scheme fails the assertion)."""
        seen = self.seen_authorizations()
        assert all(header.startswith("Bearer ") for header in seen), seen
        return [header.removeprefix("Bearer ") for header in seen]


class JwtAccessTokenVerifier:
    """The SDK's ``TokenVerifier`` for RFC 9068 JWT access tokens from one issuer for one resource."""

    def __init__(self, issuer: str, resource: str) -> None:
        self.issuer = issuer
        self.resource = resource
        self.refused: set[str] = set()  # digests of tokens refused although valid (ProtectedUpstream.refuse)
        self._keys: KeySet | None = None

    async def _key_set(self) -> KeySet:
        if self._keys is None:  # the AS's keys live as long as it does
            async with httpx.AsyncClient(timeout=10) as client:
                metadata = (await client.get(f"{self.issuer}/.well-known/oauth-authorization-server")).json()
                self._keys = KeySet.import_key_set((await client.get(metadata["jwks_uri"])).json())
        return self._keys

    async def verify_token(self, token: str) -> AccessToken | None:
        if token_digest(token) in self.refused:
            return None
        try:
            decoded = jwt.decode(token, await self._key_set(), algorithms=["ES256"])
            if decoded.header.get("typ", "").lower() not in {"at+jwt", "application/at+jwt"}:
                return None  # RFC 9068 §4: an ID token or another JWT is not an access token
            JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.resource},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self.resource,
            subject=str(claims["sub"]),
        )


def build_protected_server(issuer: str, resource: str, verifier: JwtAccessTokenVerifier) -> MCPServer:
    server = MCPServer(
        "upstream-oauth-fixture",
        token_verifier=verifier,
        # Validated from strings, so the path-less issuer keeps its exact form in the PRM (no trailing "/").
        auth=AuthSettings.model_validate({
            "issuer_url": issuer,
            "resource_server_url": resource,
            "required_scopes": [BASE_SCOPE],
            "validate_token_resource": True,
        }),
    )

    @server.tool()
    def whoami() -> str:
        """The subject of the access token this call carried."""
        token = get_access_token()
        return "" if token is None else token.subject or ""

    @server.tool()
    def add(a: int, b: int) -> int:
        """a + b."""
        return a + b

    @server.tool()
    def admin_op() -> str:
        """Reached only with the tools:admin scope (the ScopeGate answers 403 before)."""
        return "admin ok"

    return server


class ScopeGate:
    """The HTTP layer the SDK leaves to the server: per-tool scopes and the ``scope`` of a challenge.

    A ``tools/call`` of ``admin_op`` with a valid token lacking ``tools:admin`` gets ``403``
    ``insufficient_scope`` naming the scopes it needs (RFC 6750 §3.1, the MCP spec's step-up); the SDK's
    ``401`` gets ``scope="tools:read"`` added, as the MCP spec's scope selection reads it from there.
    """

    def __init__(self, app: ASGIApp, verifier: JwtAccessTokenVerifier, resource_metadata_url: str) -> None:
        self.app = app
        self.verifier = verifier
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, self._with_scope(send))
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(chunks)
        if await self._lacks_admin(scope, body):
            await self._forbidden(send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, self._with_scope(send))

    async def _lacks_admin(self, scope: Scope, body: bytes) -> bool:
        try:
            request = json.loads(body)
        except ValueError:
            return False
        if not isinstance(request, dict) or request.get("method") != "tools/call":
            return False
        if (request.get("params") or {}).get("name") != "admin_op":
            return False
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization", "")
        if not authorization.lower().startswith("bearer "):
            return False  # the SDK answers 401
        token = await self.verifier.verify_token(authorization[7:])
        return token is not None and ADMIN_SCOPE not in token.scopes

    async def _forbidden(self, send: Send) -> None:
        challenge = (
            f'Bearer error="insufficient_scope", scope="{BASE_SCOPE} {ADMIN_SCOPE}", '
            f'resource_metadata="{self.resource_metadata_url}"'
        )
        body = json.dumps({"error": "insufficient_scope"}).encode()
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]})
        await send({"type": "http.response.body", "body": body})

    def _with_scope(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                message = {**message, "headers": [
                    (k, v + f', scope="{BASE_SCOPE}"'.encode())
                    if k.lower() == b"www-authenticate" and b"scope=" not in v else (k, v)
                    for k, v in message["headers"]
                ]}
            await send(message)

        return sending


@contextlib.contextmanager
def _serving_in_thread(app: ASGIApp, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn offers no event to wait on from another thread
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the protected upstream did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def upstream_oauth(access_token_ttl: int = 300, *, logins: Sequence[str] = ("alice", "bob")
                   ) -> Iterator[tuple[UpstreamAuthServer, ProtectedUpstream]]:
    """Start the AS (whose accounts are ``logins``, password = login, ``sub`` = login) and the protected MCP
    server; skips (fails under CI=true) without Node or oidc-provider."""
    config = {"host": "127.0.0.1", "access_token_ttl": access_token_ttl,
              "accounts": {login: {"password": login} for login in logins}}
    with node_server(AS_SCRIPT, config, name="upstream AS") as (issuer, _process, log_path):
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        verifier = JwtAccessTokenVerifier(issuer, url)
        app = build_protected_server(issuer, url, verifier).streamable_http_app(stateless_http=True,
                                                                                json_response=True)
        # The recorder outermost: it sees what the scope gate refuses too.
        gate = ScopeGate(app, verifier, str(build_resource_metadata_url(AnyHttpUrl(url))))
        upstream = ProtectedUpstream(url, url, RequestRecorder(gate), verifier)
        with _serving_in_thread(upstream.recorder, port):
            yield UpstreamAuthServer(issuer, log_path), upstream


@pytest.fixture(scope="module")
def oauth_upstream() -> Iterator[tuple[UpstreamAuthServer, ProtectedUpstream]]:
    """One AS and protected upstream for a test module (access tokens live 300 s)."""
    with upstream_oauth() as pair:
        yield pair


# ----------------------------------------------------------------------------- a person connecting, over HTTP


async def connect_form(browser: httpx.AsyncClient, connect_url: str, username: str, password: str) -> Form:
    """Open Deputy's connect page in ``browser`` (cookie-keeping, never following redirects), signing in to Deputy
    first when it asks; its Connect form (with the CSRF field)."""
    page = await browser.get(connect_url)
    assert page.status_code == 200, page_text(page.text)
    form = parse_forms(page.text)[0]
    if form.has_password():
        signed = await browser.post(form.resolve_action(connect_url), data=form.data(username=username,
                                                                                     password=password))
        assert signed.status_code == 303, page_text(signed.text)
        assert signed.headers["location"] == urlsplit(connect_url).path
        page = await browser.get(connect_url)
        assert page.status_code == 200, page_text(page.text)
        form = parse_forms(page.text)[0]
    assert not form.has_password() and "csrf_token" in form.fields, page_text(page.text)
    return form


async def start_connecting(browser: httpx.AsyncClient, deputy_url: str, server: str, auth: UpstreamAuthServer,
                           username: str, password: str) -> str:
    """Press Connect on ``{deputy_url}/connect/{server}``; the authorization URL at ``auth`` Deputy sends her to."""
    connect_url = f"{deputy_url}/connect/{server}"
    form = await connect_form(browser, connect_url, username, password)
    started = await browser.post(form.resolve_action(connect_url), data=form.data())
    assert started.status_code == 303, page_text(started.text)
    location: str = started.headers["location"]
    assert location.startswith(auth.issuer + "/"), location
    return location


async def connect_account(deputy_url: str, server: str, auth: UpstreamAuthServer, username: str,
                          password: str) -> None:
    """The whole connection, as her browser does it: Deputy's sign-in, Connect, the AS's login and consent as
    the account named like her (:meth:`UpstreamAuthServer.approve`), the callback with Deputy's cookies."""
    async with httpx.AsyncClient(timeout=30) as browser:
        authorization_url = await start_connecting(browser, deputy_url, server, auth, username, password)
        callback = await asyncio.to_thread(auth.approve, authorization_url, username)
        assert callback.startswith(f"{deputy_url}/connect/callback/{server}?"), callback
        finished = await browser.get(callback)
        assert finished.status_code == 303, page_text(finished.text)
        assert finished.headers["location"] == "/connections"
