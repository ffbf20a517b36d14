"""The gateway in front of a ``credentials = "oauth"`` server: the user's own token, or where she must connect.

The gateway runs in process (raw ASGI through httpx) with the real HTTP upstream, policy, audit stage and session
binding; the upstream is a real HTTP server on loopback that accepts only the tokens the test says, and the user's
connections are a stand-in with the shape of ``deputy.connections.service.Connections`` (the real one, against a
real authorization server, is in tests/e2e/test_upstream_oauth_gateway.py). Abuse first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from starlette.types import Receive, Scope, Send

from deputy.audit.log import AuditLog
from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded
from deputy.gateway.audit_stage import AuditStage
from deputy.gateway.bearer import BearerAuthenticator, Refusal
from deputy.gateway.connection_answers import CONNECTION_REQUIRED, URL_ELICITATION_REQUIRED
from deputy.gateway.held_calls import CLIENT_CAPABILITIES
from deputy.gateway.http_upstream import HttpUpstream, UpstreamPool
from deputy.gateway.origin_check import OriginCheck
from deputy.gateway.policy_lifecycle import PolicyLifecycle
from deputy.gateway.policy_stage import PolicyStage
from deputy.gateway.principal import Principal
from deputy.gateway.proxy import Gateway
from deputy.gateway.sessions import SessionBinder
from deputy.gateway.upstream_credentials import NoCredentials, OAuthCredentials
from deputy.policy import POLICY_DENIED, PolicyEngine
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
                      www_authenticate: str | None) -> ConnectionNeeded | None:
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

    async def append(self, record: dict[str, Any]) -> None:
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


# -- abuse -----------------------------------------------------------------------------------------------------


async def test_the_clients_authorization_and_cookies_never_reach_the_upstream(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    response = await setup.post(call("whoami"), headers={"Cookie": "deputy_session=s3cret", "DPoP": "proof",
                                                         "Proxy-Authorization": "Basic eA=="})
    assert response.status_code == 200 and response.json()["result"]["token"] == "up-alice-1", response.text
    [seen] = setup.recorder.seen
    assert setup.upstream.authorizations == [[b"Bearer up-alice-1"]]  # hers at the upstream, and only hers
    assert not {"cookie", "dpop", "proxy-authorization"} & seen.headers.keys()


async def test_a_denied_call_gets_its_denial_not_a_connect_prompt(setup: Setup) -> None:
    response = await setup.post(with_url_elicitation(call("secret")))  # she has no connection either
    error = response.json()["error"]
    assert error["code"] == POLICY_DENIED and "connect_url" not in json.dumps(error), response.text
    assert setup.connections.asked == [] and setup.recorder.seen == []


async def test_a_forged_request_state_is_not_trusted(setup: Setup) -> None:
    """The retry's requestState says nothing: her connection is looked up again, and nothing is forwarded."""
    forged = with_url_elicitation(call("whoami", requestState="deputy-connect:ext",
                                       inputResponses={"deputy_connect": {"action": "accept"}}))
    response = await setup.post(forged)
    assert response.json()["result"]["resultType"] == "input_required", response.text
    assert setup.connections.asked == ["alice"] and setup.recorder.seen == []


async def test_deputys_own_input_is_stripped_and_the_upstreams_kept(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    retry = with_url_elicitation(call("whoami", requestState="deputy-connect:ext", inputResponses={
        "deputy_connect": {"action": "accept"}, "theirs": {"action": "accept", "content": {"x": 1}}}))
    response = await setup.post(retry)
    assert response.json()["result"]["token"] == "up-alice-1", response.text
    [forwarded] = setup.forwarded()
    assert "requestState" not in forwarded["params"]
    assert forwarded["params"]["inputResponses"] == {"theirs": {"action": "accept", "content": {"x": 1}}}


async def test_a_session_cannot_claim_url_elicitation_it_did_not_declare(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    opened = await setup.post(initialize(url_elicitation=False))
    session = opened.headers["mcp-session-id"]
    upstream_id, _, tag = session.rpartition(".")
    setup.connections.broken.add("alice")
    forged = await setup.post(call("whoami"), headers={"Mcp-Session-Id": f"{upstream_id}.u{tag}"})
    assert forged.status_code == 404  # an id Deputy did not issue: unknown session
    plain = await setup.post(call("whoami"), headers={"Mcp-Session-Id": session})
    assert plain.json()["error"]["code"] == CONNECTION_REQUIRED, plain.text


async def test_deputys_own_session_for_a_stateless_upstream_is_bound_and_unforgeable(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    setup.upstream.stateless = True
    assert "mcp-session-id" not in (await setup.post(initialize(url_elicitation=False))).headers  # nothing to keep
    session = (await setup.post(initialize(url_elicitation=True))).headers["mcp-session-id"]
    own_id, _, tag = session.rpartition(".")
    FakeAuthenticator.principals["mallory"] = Principal("mallory", "client-1", frozenset({"t"}), "jti-m", "ext")
    try:
        stolen = await setup.post(call("whoami"), token="mallory", headers={"Mcp-Session-Id": session})
    finally:
        del FakeAuthenticator.principals["mallory"]
    assert stolen.status_code == 404  # another user's session is no session
    for forged in (f"{own_id}.u{tag[1:]}", f"{own_id}.{tag[1:]}", f"x{own_id}.{tag}"):
        assert (await setup.post(call("whoami"), headers={"Mcp-Session-Id": forged})).status_code == 404, forged
    assert (await setup.post(call("whoami"), headers={"Mcp-Session-Id": session})).status_code == 200
    assert all("mcp-session-id" not in request.headers for request in setup.recorder.seen)  # none upstream


async def test_a_token_without_a_user_is_not_sent_to_connect(setup: Setup) -> None:
    response = await setup.post(with_url_elicitation(call("whoami")), token="robot")
    error = response.json()["error"]
    assert error["code"] == CONNECTION_REQUIRED and error["data"] == {"server": "ext", "reason": "no_user"}
    assert setup.connections.asked == [] and setup.recorder.seen == []


async def test_the_upstreams_challenge_is_never_relayed(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"  # the upstream refuses it; no refresh to be had
    response = await setup.post(call("whoami"))
    assert "www-authenticate" not in response.headers
    assert "resource_metadata" not in response.text
    assert response.json()["error"]["data"]["reason"] == "broken", response.text
    assert setup.connections.refusals == [("alice", 401, 'Bearer error="invalid_token", '
                                                         'resource_metadata="http://x/prm"')]


async def test_a_refused_retry_is_not_retried_again(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"
    setup.connections.refreshed["alice"] = "up-alice-also-refused"
    response = await setup.post(call("whoami"))
    assert response.json()["error"]["data"]["reason"] == "broken", response.text
    assert len(setup.recorder.seen) == 2  # the call and its one retry


async def test_the_connections_cannot_make_the_gateway_retry_twice(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"
    setup.connections.always_retry = True
    response = await setup.post(call("whoami"))
    assert response.status_code == 502 and response.json()["error"]["data"] == {"server": "ext"}, response.text
    assert len(setup.recorder.seen) == 2 and len(setup.connections.refusals) == 2


async def test_a_connection_failure_names_no_secret(setup: Setup) -> None:
    setup.connections.failure = ConnectionFailed("ext", "vault_key", "sealed with key abc123 (token tok-999)")
    response = await setup.post(call("whoami"))
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "abc123" not in response.text and "tok-999" not in response.text
    assert response.json()["error"]["data"] == {"server": "ext", "reason": "vault_key"}
    setup.connections.failure = ConnectionFailed("ext", "upstream_unavailable", "connect refused")
    response = await setup.post(call("whoami"))
    assert response.status_code == 502 and "retry-after" not in response.headers
    setup.connections.failure = OperationalError("SELECT sealed FROM upstream_connections", {}, OSError("down"))
    response = await setup.post(call("whoami"))  # her connection cannot be read: fail closed, plainly
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["data"] == {"server": "ext", "reason": "storage_unavailable"}
    assert "SELECT" not in response.text
    assert setup.recorder.seen == []
    setup.connections.failure = RuntimeError("a bug")
    with pytest.raises(RuntimeError):  # not the gateway's to answer as a connection problem
        await setup.post(call("whoami"))


# -- the answers ------------------------------------------------------------------------------------------------


async def test_a_client_with_url_elicitation_gets_input_required(setup: Setup) -> None:
    response = await setup.post(with_url_elicitation(call("whoami", request_id=7)))
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == 7
    result = answer["result"]
    assert result["resultType"] == "input_required" and result["requestState"] == "deputy-connect:ext"
    assert result["inputRequests"] == {"deputy_connect": {"method": "elicitation/create", "params": {
        "mode": "url", "url": CONNECT_URL, "message": f"Connect your account (not_connected): {CONNECT_URL}"}}}


async def test_a_declined_connection_gets_the_plain_error(setup: Setup) -> None:
    declined = with_url_elicitation(call("whoami", requestState="deputy-connect:ext",
                                         inputResponses={"deputy_connect": {"action": "decline"}}))
    error = (await setup.post(declined)).json()["error"]
    assert error["code"] == CONNECTION_REQUIRED
    assert error["data"] == {"server": "ext", "reason": "not_connected", "connect_url": CONNECT_URL}


async def test_an_initialize_declaring_url_elicitation_gets_the_2025_11_25_error(setup: Setup) -> None:
    response = await setup.post(initialize(url_elicitation=True))
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED == -32042
    [elicitation] = error["data"]["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["url"] == CONNECT_URL and elicitation["elicitationId"]
    assert elicitation["message"].startswith("Connect your account")
    assert error["data"]["connect_url"] == CONNECT_URL and error["data"]["reason"] == "not_connected"


async def test_a_session_that_declared_url_elicitation_gets_the_2025_11_25_error(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    opened = await setup.post(initialize(url_elicitation=True))
    assert opened.json()["result"]["token"] == "up-alice-1", opened.text
    session = opened.headers["mcp-session-id"]
    response = await setup.post(call("admin_op"), headers={"Mcp-Session-Id": session})  # 403 insufficient_scope
    error = response.json()["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED and error["data"]["reason"] == "insufficient_scope"
    first = error["data"]["elicitations"][0]["elicitationId"]
    again = (await setup.post(call("admin_op"), headers={"Mcp-Session-Id": session})).json()["error"]
    assert again["data"]["elicitations"][0]["elicitationId"] != first  # each elicitation its own id
    assert setup.connections.refusals[0][1:] == (403, 'Bearer error="insufficient_scope", scope="tools:admin"')


async def test_a_stateless_upstreams_client_that_declared_url_elicitation_gets_the_2025_11_25_error(
        setup: Setup) -> None:
    """No upstream session to remember the declaration in: Deputy's own session remembers it."""
    setup.connections.tokens["alice"] = "up-alice-1"
    setup.upstream.stateless = True
    session = (await setup.post(initialize(url_elicitation=True))).headers["mcp-session-id"]
    error = (await setup.post(call("admin_op"), headers={"Mcp-Session-Id": session})).json()["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED and error["data"]["reason"] == "insufficient_scope", error
    assert error["data"]["elicitations"][0]["url"] == CONNECT_URL


async def test_any_other_client_gets_an_error_with_the_connect_url(setup: Setup) -> None:
    response = await setup.post(call("whoami", request_id="r1"))
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "id": "r1", "error": {
        "code": CONNECTION_REQUIRED, "message": f"Connect your account (not_connected): {CONNECT_URL}",
        "data": {"server": "ext", "reason": "not_connected", "connect_url": CONNECT_URL}}}


async def test_a_notification_or_a_stream_gets_403_with_the_connect_url(setup: Setup) -> None:
    notification = await setup.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    stream = await setup.client.get("/mcp/ext", headers={**ACCEPT, "Authorization": "Bearer alice"})
    for response in (notification, stream):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["data"]["connect_url"] == CONNECT_URL
    assert setup.recorder.seen == []


# -- refresh, delegation, audit, other servers ------------------------------------------------------------------


async def test_a_401_is_retried_once_with_the_refreshed_token(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"
    setup.connections.refreshed["alice"] = "up-alice-2"
    response = await setup.post(call("whoami", request_id=3))
    assert response.json() == {"jsonrpc": "2.0", "id": 3, "result": {
        "token": "up-alice-2", "params": {"name": "whoami", "arguments": {}}}}
    first, retry = setup.recorder.seen
    assert first.body == retry.body
    assert (first.headers["authorization"], retry.headers["authorization"]) == ("Bearer up-alice-stale",
                                                                                "Bearer up-alice-2")


async def test_an_agent_acting_for_alice_uses_her_connection(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    FakeAuthenticator.principals["agent-for-alice"] = Principal(
        "alice", "agent-b", frozenset({"t"}), "jti-b", "ext", actors=(cast(Any, object()),))
    try:
        response = await setup.post(call("whoami"), token="agent-for-alice")
    finally:
        del FakeAuthenticator.principals["agent-for-alice"]
    assert response.json()["result"]["token"] == "up-alice-1", response.text
    assert setup.connections.asked == ["alice"]


async def test_the_outcome_record_says_the_call_was_not_forwarded(setup: Setup) -> None:
    await setup.post(call("whoami"))
    setup.connections.tokens["alice"] = "up-alice-1"
    await setup.post(call("whoami"))
    needed, forwarded = await setup.outcomes()
    assert (needed["not_forwarded"], needed["not_forwarded_reason"]) == ("connection_needed", "not_connected")
    assert "not_forwarded" not in forwarded and "not_forwarded_reason" not in forwarded
    counted = {sample.labels["outcome"]: sample.value for metric in setup.metrics.requests.collect()
               for sample in metric.samples if sample.name == "deputy_requests_total"}
    assert counted == {"connection_needed": 1.0, "forwarded": 1.0}


async def test_other_servers_never_ask_for_a_connection(setup: Setup) -> None:
    setup.upstream.valid.add("")  # the plain server's upstream takes calls without a token
    try:
        response = await setup.post(call("whoami"), server="plain")
    finally:
        setup.upstream.valid.discard("")
    assert response.json()["result"]["token"] == "", response.text
    assert setup.connections.asked == []
    assert "authorization" not in setup.recorder.seen[0].headers
