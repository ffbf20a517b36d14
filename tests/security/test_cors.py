"""CORS for browser-based MCP clients (deputy.cors): abuse cases first, then what a browser client needs.

The CORS protocol (Fetch Standard, #http-cors-protocol) is enforced by browsers, so what is checked here is what
Deputy answers: which origin it names, that it never allows credentials, that a refused preflight
allows nothing, that a preflight to ``/mcp/NAME`` is answered before authentication and never
reaches the upstream, and that pages and introspection get no CORS answer at all. The MCP endpoint
is served by a Deputy whose ``gateway.allowed_origins`` lists one browser origin, in front of a
recording upstream that sends CORS fields of its own (which must never reach the client).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deputy.cors import McpCors
from deputy.demo.server import demo_asgi_app
from deputy.gateway.origin_check import OriginCheck
from tests.support.agents import agent_token, agents_config
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import INITIALIZE
from tests.support.recording_upstream import RequestRecorder, recording_upstream

APP = "http://app.example.com:5173"  # the one browser origin the operator allows
FOREIGN = "https://attacker.example"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ALLOW_FIELDS = ("access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
                "access-control-allow-credentials", "access-control-max-age", "access-control-expose-headers")


class UpstreamCors:
    """An upstream that answers every request with CORS fields of its own, as a careless MCP server does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def adding(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"Access-Control-Allow-Origin", b"*"),
                                      (b"access-control-allow-credentials", b"true")]
            await send(message)

        await self.app(scope, receive, adding if scope["type"] == "http" else send)


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[str, RequestRecorder]]:
    """The demo server (stateful, so it issues Mcp-Session-Id) behind the CORS fields and a recorder, in a thread."""
    with recording_upstream(UpstreamCors(demo_asgi_app(json_response=True))) as served:
        yield served


@pytest.fixture(scope="module")
def cors_deputy(backend: str, recorder: tuple[str, RequestRecorder],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-cors-{backend}")
    extra = agents_config(directory) + f'\n[gateway]\nallowed_origins = ["{APP}/"]\n'
    with database_url(backend, directory) as url, running_deputy(directory, url, recorder[0], extra) as running:
        yield running


@pytest.fixture
def upstream(recorder: tuple[str, RequestRecorder]) -> RequestRecorder:
    recorder[1].seen.clear()
    return recorder[1]


async def options(url: str, origin: str | None, method: str = "POST", headers: str | None = None) -> httpx.Response:
    """A CORS preflight as a browser sends it: no credentials, Access-Control-Request-* naming the real request."""
    sent = {"Access-Control-Request-Method": method}
    if origin is not None:
        sent["Origin"] = origin
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.options(url, headers=sent)


async def post_mcp(deputy: RunningDeputy, headers: list[tuple[str, str]]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(deputy.resource("demo"), json=INITIALIZE,
                               headers=[*MCP_HEADERS.items(), *headers])


def allows_nothing(response: httpx.Response) -> None:
    present = [name for name in ALLOW_FIELDS if name in response.headers]
    assert present == [], f"{response.status_code} {present}"


def varies_on_origin(response: httpx.Response) -> None:
    varies = {v.strip().lower() for value in response.headers.get_list("vary") for v in value.split(",")}
    assert "origin" in varies, response.headers


# --- /mcp/NAME: abuse ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [
    FOREIGN, "null", "http://app.example.com:5174", "https://app.example.com:5173", "http://app.example.com",
    "http://app.example.com:5173.attacker.example", "http://evil-app.example.com:5173", "*", "",
])
async def test_a_foreign_origin_is_never_reflected_on_mcp(cors_deputy: RunningDeputy, upstream: RequestRecorder,
                                                          origin: str) -> None:
    """Origin reflection, null origin, an origin differing by port, scheme or suffix: no CORS, and still the 403."""
    token = await agent_token(cors_deputy)
    response = await post_mcp(cors_deputy, [("Origin", origin), ("Authorization", f"Bearer {token}")])
    assert response.status_code == 403, response.text
    allows_nothing(response)
    varies_on_origin(response)
    preflight = await options(cors_deputy.resource("demo"), origin, headers="authorization,content-type")
    assert not 200 <= preflight.status_code < 300
    allows_nothing(preflight)
    assert upstream.seen == []


@pytest.mark.parametrize("origin", ["HTTP://APP.EXAMPLE.COM:5173", "http://App.example.com:5173", f"{APP}/",
                                    f"{APP}/path"])
async def test_an_allowed_origin_written_otherwise_is_not_reflected(cors_deputy: RunningDeputy, origin: str) -> None:
    """Browsers serialize an origin one way (RFC 6454 §6.1); any other spelling is answered with no CORS."""
    response = await post_mcp(cors_deputy, [("Origin", origin)])
    allows_nothing(response)
    preflight = await options(cors_deputy.resource("demo"), origin)
    allows_nothing(preflight)


async def test_two_origin_headers_are_no_allowed_origin(cors_deputy: RunningDeputy) -> None:
    token = await agent_token(cors_deputy)
    for pair in ([APP, FOREIGN], [FOREIGN, APP]):
        response = await post_mcp(cors_deputy, [("Origin", pair[0]), ("Origin", pair[1]),
                                                ("Authorization", f"Bearer {token}")])
        allows_nothing(response)
    async with httpx.AsyncClient(timeout=30) as http:
        preflight = await http.options(cors_deputy.resource("demo"), headers=[
            ("Origin", APP), ("Origin", FOREIGN), ("Access-Control-Request-Method", "POST")])
    allows_nothing(preflight)


@pytest.mark.parametrize(("method", "headers"), [
    ("PUT", None), ("PATCH", "content-type"), ("OPTIONS", None), ("post", None),
    ("POST", "authorization,cookie"), ("POST", "x-forwarded-for"), ("POST", "mcp-param-"),
    ("POST", "dpop,authorization"), ("POST", "authorization,,content-type"),
])
async def test_a_preflight_for_a_method_or_header_not_allowed_allows_nothing(
        cors_deputy: RunningDeputy, upstream: RequestRecorder, method: str, headers: str | None) -> None:
    preflight = await options(cors_deputy.resource("demo"), APP, method, headers)
    assert not 200 <= preflight.status_code < 300
    allows_nothing(preflight)
    varies_on_origin(preflight)
    assert upstream.seen == []


async def test_a_preflight_is_answered_before_authentication_and_never_forwarded(
        cors_deputy: RunningDeputy, upstream: RequestRecorder) -> None:
    """Browsers send no credentials on a preflight (Fetch Standard, "CORS-preflight fetch"): it is not
    challenged, and no upstream sees it."""
    for server in ("demo", "other"):
        preflight = await options(cors_deputy.resource(server), APP, "POST", "authorization,content-type")
        assert preflight.status_code == 204, preflight.text
        assert "www-authenticate" not in preflight.headers
    assert upstream.seen == []


async def test_no_answer_allows_credentials_and_the_upstreams_cors_never_passes(
        cors_deputy: RunningDeputy, upstream: RequestRecorder) -> None:
    """The upstream answers with `Access-Control-Allow-Origin: *` and credentials allowed: Deputy speaks alone."""
    token = await agent_token(cors_deputy)
    response = await post_mcp(cors_deputy, [("Origin", APP), ("Authorization", f"Bearer {token}")])
    assert response.status_code == 200, response.text
    assert len(upstream.seen) == 1 and "origin" not in upstream.seen[0].headers
    assert response.headers.get_list("access-control-allow-origin") == [APP]
    assert "access-control-allow-credentials" not in response.headers


def test_the_origin_check_and_cors_agree_on_an_origin_written_with_its_default_port() -> None:
    """A configured ``https://app.example.com:443/`` is the origin a browser sends as ``https://app.example.com``:
    both guards allow it, and neither allows the configured spelling or an unreadable entry (no empty origin)."""
    configured = ["https://App.Example.com:443/", "http://[::1]:6274", "http://app.example.com:99999"]
    cors = McpCors(_never_called, configured)
    assert cors.origins == {b"https://app.example.com", b"http://[::1]:6274"}
    check = OriginCheck("http://127.0.0.1:8000", configured)
    assert check.allows(b"127.0.0.1:8000", b"https://app.example.com")
    assert check.allows(b"127.0.0.1:8000", b"http://[::1]:6274")
    assert not check.allows(b"127.0.0.1:8000", b"")


async def test_a_request_without_origin_reaches_the_gateway_untouched() -> None:
    """The hot path: no ``Origin``, no CORS work — the gateway gets the very same scope, receive and send."""
    seen: list[tuple[Scope, Receive, Send]] = []

    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(_message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "method": "OPTIONS", "path": "/mcp/demo",
                    "headers": [(b"host", b"127.0.0.1"), (b"access-control-request-method", b"POST")]}
    await McpCors(gateway, [APP])(scope, receive, send)
    assert seen == [(scope, receive, send)]


async def _never_called(_scope: Scope, _receive: Receive, _send: Send) -> None:
    raise AssertionError("not called")


# --- routes with no CORS at all -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/authorize"), ("POST", "/authorize/login"), ("GET", "/authorize/consent"),
    ("POST", "/authorize/consent"), ("GET", "/approvals/nonexistent"), ("POST", "/introspect"),
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/nonexistent"),
])
async def test_pages_and_introspection_get_no_cors(cors_deputy: RunningDeputy, method: str, path: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for origin in (APP, FOREIGN, "null"):
            response = await http.request(method, f"{cors_deputy.url}{path}", headers={"Origin": origin})
            assert not any(name.startswith("access-control-") for name in response.headers), (path, response.headers)
    for origin in (APP, FOREIGN):
        preflight = await options(f"{cors_deputy.url}{path}", origin, method, "content-type")
        assert not 200 <= preflight.status_code < 300
        assert not any(name.startswith("access-control-") for name in preflight.headers), path


# --- public OAuth endpoints: any origin, never credentials --------------------------------------------------------

PUBLIC_GETS = ["/.well-known/oauth-authorization-server", "/.well-known/jwks.json",
               "/.well-known/oauth-protected-resource/mcp/demo"]
PUBLIC_POSTS = ["/token", "/revoke", "/register"]


@pytest.mark.parametrize("path", PUBLIC_GETS + PUBLIC_POSTS)
async def test_public_endpoints_never_reflect_nor_allow_credentials(cors_deputy: RunningDeputy, path: str) -> None:
    method = "GET" if path in PUBLIC_GETS else "POST"
    async with httpx.AsyncClient(timeout=30) as http:
        for origin in (FOREIGN, "null", APP):
            response = await http.request(method, f"{cors_deputy.url}{path}", headers={"Origin": origin})
            assert response.headers.get_list("access-control-allow-origin") == ["*"], response.headers
            assert "access-control-allow-credentials" not in response.headers
            preflight = await options(f"{cors_deputy.url}{path}", origin, method, "content-type")
            assert preflight.status_code == 200
            assert preflight.headers.get_list("access-control-allow-origin") == ["*"]
            assert "access-control-allow-credentials" not in preflight.headers


@pytest.mark.parametrize(("path", "method", "headers"), [
    ("/token", "DELETE", None), ("/token", "POST", "cookie"), ("/token", "POST", "x-requested-with"),
    ("/.well-known/oauth-authorization-server", "POST", None), ("/.well-known/jwks.json", "GET", "authorization"),
    ("/revoke", "PUT", None), ("/register", "PATCH", None), ("/register/some-client", "POST", "x-custom"),
])
async def test_a_refused_preflight_to_a_public_endpoint_allows_nothing(
        cors_deputy: RunningDeputy, path: str, method: str, headers: str | None) -> None:
    preflight = await options(f"{cors_deputy.url}{path}", FOREIGN, method, headers)
    assert not 200 <= preflight.status_code < 300
    allows_nothing(preflight)


# --- what a browser client needs ----------------------------------------------------------------------------------


async def test_an_allowed_origin_may_send_the_transports_headers(cors_deputy: RunningDeputy) -> None:
    """MCP Streamable HTTP (2026-07-28, SEP-2243 headers included) and the session headers of earlier revisions."""
    requested = ("accept,authorization,content-type,last-event-id,mcp-method,mcp-name,mcp-param-region,"
                 "mcp-protocol-version,mcp-session-id")
    for method in ("POST", "GET", "DELETE"):
        preflight = await options(cors_deputy.resource("demo"), APP, method, requested)
        assert preflight.status_code == 204, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        assert method in {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}
        allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert allowed == set(requested.split(","))
        assert 0 < int(preflight.headers["access-control-max-age"]) <= 3600
        assert "access-control-allow-credentials" not in preflight.headers
        varies_on_origin(preflight)


async def test_an_allowed_origin_reads_the_session_and_the_challenge(cors_deputy: RunningDeputy) -> None:
    unauthenticated = await post_mcp(cors_deputy, [("Origin", APP)])
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["access-control-allow-origin"] == APP
    exposed = {h.strip().lower() for h in unauthenticated.headers["access-control-expose-headers"].split(",")}
    assert {"www-authenticate", "mcp-session-id"} <= exposed
    varies_on_origin(unauthenticated)
    token = await agent_token(cors_deputy)
    opened = await post_mcp(cors_deputy, [("Origin", APP), ("Authorization", f"Bearer {token}")])
    assert opened.status_code == 200, opened.text
    assert opened.headers["mcp-session-id"]
    assert opened.headers["access-control-allow-origin"] == APP
    varies_on_origin(opened)


async def test_public_endpoints_answer_a_browser_client(cors_deputy: RunningDeputy) -> None:
    for path in PUBLIC_GETS:
        preflight = await options(f"{cors_deputy.url}{path}", FOREIGN, "GET", "mcp-protocol-version")
        assert preflight.status_code == 200, (path, preflight.text)
    for path, method in (("/register", "POST"), ("/register/some-client", "PUT"), ("/token", "POST")):
        preflight = await options(f"{cors_deputy.url}{path}", FOREIGN, method, "authorization,content-type")
        assert preflight.status_code == 200, (path, preflight.text)
        assert 0 < int(preflight.headers["access-control-max-age"]) <= 3600
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(f"{cors_deputy.url}/token", headers={"Origin": FOREIGN},
                                  data={"grant_type": "client_credentials"}, auth=("agent-secret", "wrong"))
    assert refused.status_code == 401
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
