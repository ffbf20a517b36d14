"""The gateway in front of a ``credentials = "oauth"`` server, set up for tests/unit/test_connection_answer_forms.py
and test_connection_upstream_refusals.py: the user's own token, or where she must connect.

The gateway runs in process (raw ASGI through httpx) with the real HTTP upstream, policy, audit stage and session
binding; the upstream is a real HTTP server on loopback that accepts only the tokens the test says, and the user's
connections are a stand-in with the shape of ``deputy.connections.service.Connections`` (the real one, against a
real authorization server, is in tests/e2e/test_upstream_oauth_gateway.py).

The fixtures (:func:`upstream_server`, :func:`setup`) are used by name: a test module imports them and lists them in
``__all__``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from deputy.audit.log import AuditLog
from deputy.config import UpstreamServer
from deputy.connections.model import ConnectionNeeded
from deputy.gateway.audit_stage import AuditStage
from deputy.gateway.bearer import BearerAuthenticator, Refusal
from deputy.gateway.held_calls import CLIENT_CAPABILITIES
from deputy.gateway.http_upstream import HttpUpstream
from deputy.gateway.origin_check import OriginCheck
from deputy.gateway.policy_lifecycle import PolicyLifecycle
from deputy.gateway.policy_stage import PolicyStage
from deputy.gateway.principal import Principal
from deputy.gateway.proxy import Gateway
from deputy.gateway.sessions import SessionBinder
from deputy.gateway.upstream_credentials import NoCredentials, OAuthCredentials
from deputy.gateway.upstream_pool import UpstreamPool
from deputy.policy import PolicyEngine
from deputy.policy.schema import build_schema
from deputy.telemetry.metrics import Metrics
from tests.support.recording_upstream import RequestRecorder, recording_upstream

PUBLIC = "http://127.0.0.1:8000"
CONNECT_URL = f"{PUBLIC}/connect/ext"
TOOLS = [{"name": name, "inputSchema": {"type": "object", "properties": {}}} for name in
         ("whoami", "admin_op", "secret")]
POLICY = '''
@id("all")
permit (principal, action, resource);

@id("no-secret")
forbid (principal, action == Deputy::Action::"secret", resource);
'''
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Upstream:
    """An MCP server that takes only the bearer tokens in ``valid``; ``admin_op`` wants more scope (403)."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.stateless = False  # answers initialize without a session id
        self.authorizations: list[list[bytes]] = []  # every Authorization field of each request, as received

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.authorizations.append([value for name, value in scope["headers"] if name == b"authorization"])
        headers = dict(scope["headers"])
        token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        if token not in self.valid:
            await self._send(send, 401, {"error": "invalid_token"},
                             [(b"www-authenticate", b'Bearer error="invalid_token", resource_metadata="http://x/prm"')])
            return
        request = json.loads(body) if body else {}
        params = request.get("params") or {}
        if params.get("name") == "admin_op":
            await self._send(send, 403, {"error": "insufficient_scope"},
                             [(b"www-authenticate", b'Bearer error="insufficient_scope", scope="tools:admin"')])
            return
        opens = request.get("method") == "initialize" and not self.stateless
        extra = [(b"mcp-session-id", b"upstream-session-1")] if opens else []
        await self._send(send, 200, {"jsonrpc": "2.0", "id": request.get("id"),
                                     "result": {"token": token, "params": params}}, extra)

    @staticmethod
    async def _send(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]]) -> None:
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": payload})


@dataclass
class FakeConnections:
    """The user's connections, as ``Connections`` answers the gateway: headers, or where to connect."""

    tokens: dict[str, str] = field(default_factory=dict)  # user -> her upstream access token
    broken: set[str] = field(default_factory=set)
    failure: Exception | None = None
    refreshed: dict[str, str] = field(default_factory=dict)  # user -> the token a refresh gives
    asked: list[str] = field(default_factory=list)  # the users headers_for was asked for
    refusals: list[tuple[str, int, str | None]] = field(default_factory=list)
    always_retry: bool = False  # refused() keeps answering "retry with fresh headers"

    def needed(self, reason: str) -> ConnectionNeeded:
        return ConnectionNeeded("ext", CONNECT_URL, reason,  # type: ignore[arg-type]
                                f"Connect your account ({reason}): {CONNECT_URL}")

    async def headers_for(self, server: UpstreamServer,
                          principal: Principal) -> Sequence[tuple[str, str]] | ConnectionNeeded:
        self.asked.append(principal.user)
        if self.failure is not None:
            raise self.failure
        if principal.user in self.broken:
            return self.needed("broken")
        token = self.tokens.get(principal.user)
        return self.needed("not_connected") if token is None else (("Authorization", f"Bearer {token}"),)

    async def refused(self, server: UpstreamServer, principal: Principal, status: int,
                      www_authenticate: str | None, sent: str | None = None) -> ConnectionNeeded | None:
        self.refusals.append((principal.user, status, www_authenticate))
        if self.always_retry:
            return None
        if status == 403:
            return self.needed("insufficient_scope")
        fresh = self.refreshed.pop(principal.user, None)
        if fresh is None:
            self.broken.add(principal.user)
            return self.needed("broken")
        self.tokens[principal.user] = fresh
        return None


class FakeAuthenticator:
    """Bearer ``alice`` / ``agent-for-alice`` / ``robot`` (client credentials: sub is the client)."""

    principals = {
        "alice": Principal("alice", "client-1", frozenset({"t"}), "jti-a", "ext"),
        "robot": Principal("robot", "robot", frozenset({"t"}), "jti-r", "ext"),
    }

    def authenticate(self, server: UpstreamServer, authorization: str | None, query: bytes) -> Principal | Refusal:
        token = (authorization or "").removeprefix("Bearer ")
        principal = self.principals.get(token)
        if principal is None:
            return Refusal(401, "invalid_token", "no", None)
        return Principal(principal.user, principal.agent, principal.scopes, principal.token_id, server.name)


@dataclass
class MemoryLog:
    records: list[dict[str, Any]] = field(default_factory=list)

    async def append(self, record: dict[str, Any], *, linger: bool = False) -> None:
        self.records.append(record)


@dataclass
class Setup:
    client: httpx.AsyncClient
    upstream: Upstream
    recorder: RequestRecorder
    connections: FakeConnections
    log: MemoryLog
    metrics: Metrics
    audit: AuditStage

    async def post(self, message: dict[str, Any], token: str = "alice", server: str = "ext",
                   headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post(f"/mcp/{server}", content=json.dumps(message), headers={
            **ACCEPT, "Authorization": f"Bearer {token}", **(headers or {})})

    def forwarded(self) -> list[dict[str, Any]]:
        """The JSON-RPC messages that reached the upstream, in order."""
        return [json.loads(request.body) for request in self.recorder.seen if request.body]

    async def outcomes(self) -> list[dict[str, Any]]:
        await _settled(self.audit)
        return [record for record in self.log.records if record["type"] == "call.outcome"]


async def _settled(audit: AuditStage) -> None:
    """Until the outcome records appended in the background are in (the stage keeps their tasks)."""
    for task in list(audit._pending):
        await task


def call(tool: str, request_id: int | str = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": {}, **params}}


def with_url_elicitation(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` declaring URL-mode elicitation in its ``_meta`` (MCP 2026-07-28)."""
    message["params"]["_meta"] = {CLIENT_CAPABILITIES: {"elicitation": {"url": {}}}}
    return message


def initialize(url_elicitation: bool) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"elicitation": {"url": {}, "form": {}}} if url_elicitation else {}
    return {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[tuple[str, RequestRecorder, Upstream]]:
    app = Upstream()
    with recording_upstream(app) as (url, recorder):
        yield url, recorder, app


@pytest.fixture
async def setup(upstream_server: tuple[str, RequestRecorder, Upstream], tmp_path: Path) -> AsyncIterator[Setup]:
    url, recorder, app = upstream_server
    recorder.seen.clear()
    app.authorizations.clear()
    app.stateless = False
    app.valid = {"up-alice-1", "up-alice-2"}
    ext = UpstreamServer(name="ext", resource=f"{PUBLIC}/mcp/ext", title="Ext", scopes=("t",), required_scopes=(),
                         url=url, credentials="oauth", policies=tmp_path)
    plain = UpstreamServer(name="plain", resource=f"{PUBLIC}/mcp/plain", title="Plain", scopes=("t",),
                           required_scopes=(), url=url)
    (tmp_path / "ext.cedar").write_text(POLICY)
    lifecycle = PolicyLifecycle(ext, OAuthCredentials(), PUBLIC)
    lifecycle.engine = PolicyEngine(tmp_path, build_schema(TOOLS))

    async def no_client(_client_id: str) -> None:
        return None

    policy = PolicyStage({"ext": lifecycle}, cast(Any, None), PUBLIC, 0, no_client)
    pool = UpstreamPool()
    connections = FakeConnections()
    log = MemoryLog()
    audit = AuditStage(cast(AuditLog, log), "digest")
    metrics = Metrics()
    gateway = Gateway(
        servers={"ext": ext, "plain": plain},
        authenticator=cast(BearerAuthenticator, FakeAuthenticator()),
        upstreams={"ext": HttpUpstream(ext, pool, OAuthCredentials()),
                   "plain": HttpUpstream(plain, pool, NoCredentials())},
        sessions=SessionBinder(b"k" * 32), origin_check=OriginCheck(PUBLIC), audit=audit, policy=policy,
        metrics=metrics, connections=connections)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url=PUBLIC) as client:
        yield Setup(client, app, recorder, connections, log, metrics, audit)
    await pool.close()
