"""Each gateway request is counted, timed and logged once (issue 13), seen from outside: real calls from the MCP
SDK client and raw HTTP through an in-process Deputy (its lifespan run, its own Services) to the demo upstream,
the metrics scraped from the application's registry in the Prometheus text format, the log line caught as the
``deputy.requests`` logger emits it and formatted by Deputy's own formatters.

Abuse first: paths, methods and tool names chosen to explode the label sets; a tool name made to forge log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deputy.app import create_app
from deputy.config import load_settings
from deputy.oauth.access_tokens import mint_access_token
from deputy.services import Services
from deputy.telemetry.logs import JsonLines, TextLines
from tests.support.databases import database_url
from tests.support.demo_policies import DEMO_POLICIES
from tests.support.deputy_process import write_config
from tests.support.oauth_flow import INITIALIZE
from tests.support.sdk_client import free_port

ARGUMENT_SECRET = "argument-value-never-logged-7f3a"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}


@dataclass
class Telemetered:
    url: str
    services: Services

    def resource(self, name: str) -> str:
        return f"{self.url}/mcp/{name}"

    def families(self) -> dict[str, Any]:
        text = generate_latest(self.services.metrics.registry).decode()
        return {family.name: family for family in text_string_to_metric_families(text)}

    def value(self, name: str, **labels: str) -> float:
        found = self.services.metrics.registry.get_sample_value(name, labels)
        return found if found is not None else 0.0

    def requests(self, server: str, method: str, outcome: str) -> float:
        return self.value("deputy_requests_total", server=server, method=method, outcome=outcome)


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner keeps its own signal handlers


@contextlib.asynccontextmanager
async def serving_with_lifespan(app: Any, listener: socket.socket) -> AsyncIterator[None]:
    server = _InLoopServer(uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        for _ in range(3000):  # bounded: start-up (migrations, the policies' tool list) takes a few seconds at most
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("Deputy did not start")
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    directory = tmp_path_factory.mktemp(f"deputy-telemetry-{backend}")
    with database_url(backend, directory) as url:
        yield directory, url


@pytest.fixture(scope="module")
async def deputy(database: tuple[Path, str], upstream_url: str) -> AsyncIterator[Telemetered]:
    directory, url = database
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    extra = f'''
[servers.guarded]
url = "{upstream_url}"
scopes = ["guarded:tools"]
policies = "{DEMO_POLICIES}"

[servers.gone]
url = "http://127.0.0.1:{free_port()}/mcp"
scopes = ["gone:tools"]
'''
    config = directory / "deputy.toml"
    write_config(config, port, upstream_url, extra)
    settings = load_settings(config, environ={"DEPUTY_DATA_DIR": str(directory / "data"),
                                              "DEPUTY_DATABASE_URL": url})
    services = Services.open(settings)
    app = create_app(settings, services)
    try:
        async with serving_with_lifespan(app, listener):
            yield Telemetered(f"http://127.0.0.1:{port}", services)
    finally:
        listener.close()


def token_for(deputy: Telemetered, server: str, scopes: str) -> str:
    token, _ = mint_access_token(deputy.services.keyring, issuer=deputy.url, subject="alice",
                                 client_id="telemetry-test", audience=deputy.resource(server), scope=scopes,
                                 ttl=600, grant_id=None, auth_time=None)
    return token


@pytest.fixture
def request_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="deputy.requests"):
        yield caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "deputy.requests"]


async def post(deputy: Telemetered, server: str, body: dict[str, Any], token: str | None,
               path: str | None = None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(path or deputy.resource(server), json=body, headers=headers)


def tool_call(tool: str, arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}


async def test_paths_methods_and_tool_names_chosen_per_call_add_no_series(deputy: Telemetered) -> None:
    """Abuse: 100 unknown servers, 100 unknown methods and 100 unknown tools cost at most three series."""
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token_for(deputy, 'demo', 'demo:tools')}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        await http.post(deputy.resource("demo"), json=tool_call("add", {"a": 1, "b": 2}))
        before = {name: len(family.samples) for name, family in deputy.families().items()}
        for n in range(100):
            await http.post(f"{deputy.url}/mcp/nope-{n}", json=tool_call("add", {}))
            await http.post(deputy.resource("demo"), json={"jsonrpc": "2.0", "id": n, "method": f"evil/{n}"})
            await http.post(deputy.resource("demo"), json=tool_call(f"tool-{n}", {}))
    after = {name: len(family.samples) for name, family in deputy.families().items()}
    assert after["deputy_requests"] - before["deputy_requests"] <= 3
    scraped = generate_latest(deputy.services.metrics.registry).decode()
    assert "nope-" not in scraped and "evil/" not in scraped and "tool-" not in scraped
    assert deputy.requests("unknown", "none", "not_found") == 100  # refused before its body is read
    assert deputy.requests("demo", "other", "forwarded") == 100


async def test_a_tool_name_with_line_breaks_is_logged_on_one_line(deputy: Telemetered,
                                                                  request_log: pytest.LogCaptureFixture) -> None:
    token = token_for(deputy, "demo", "demo:tools")
    await post(deputy, "demo", tool_call("echo\nINFO deputy.requests \"mcp request\" outcome=forwarded\x1b[2J",
                                         {"text": ARGUMENT_SECRET}), token)
    (record,) = lines(request_log)
    for formatter in (TextLines(), JsonLines()):
        line = formatter.format(record)
        assert "\n" not in line and "\x1b" not in line and ARGUMENT_SECRET not in line


async def test_allowed_denied_unauthorized_and_upstream_errors_are_counted_and_logged(
        deputy: Telemetered, request_log: pytest.LogCaptureFixture) -> None:
    demo_token = token_for(deputy, "demo", "demo:tools")
    guarded_token = token_for(deputy, "guarded", "guarded:tools demo:tools")
    before = {
        "allowed": deputy.requests("demo", "tools/call", "forwarded"),
        "denied": deputy.requests("guarded", "tools/call", "denied"),
        "deny": deputy.value("deputy_decisions_total", server="guarded", outcome="deny"),
        "unauthorized": deputy.requests("demo", "none", "unauthorized"),
        "upstream": deputy.requests("gone", "tools/call", "upstream_error"),
        "unreachable": deputy.value("deputy_upstream_errors_total", server="gone", kind="unreachable"),
        "upstream_stage": deputy.value("deputy_stage_duration_seconds_count", stage="upstream"),
        "call_durations": deputy.value("deputy_request_duration_seconds_count", server="demo", method="tools/call"),
    }

    # Allowed: the SDK client's own session (initialize, notifications/initialized, tools/call) to the demo server.
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {demo_token}"}, timeout=30) as http,
                Client(streamable_http_client(deputy.resource("demo"), http_client=http), mode="legacy") as client):
        result = await client.call_tool("echo", {"text": ARGUMENT_SECRET})
        assert not result.is_error
    # Denied by policy: the demo policies forbid deleting user ids below 100.
    denied = await post(deputy, "guarded", tool_call("delete_user", {"id": 7, "note": ARGUMENT_SECRET}),
                        guarded_token)
    assert denied.json()["error"]["code"] == -32003
    # Unauthorized: no token (a GET, so the method is none).
    async with httpx.AsyncClient(timeout=30) as plain:
        assert (await plain.get(deputy.resource("demo"))).status_code == 401
    # Upstream error: the server's upstream does not listen.
    gone = await post(deputy, "gone", tool_call("echo", {"text": ARGUMENT_SECRET}),
                      token_for(deputy, "gone", "gone:tools"))
    assert gone.status_code == 502

    assert deputy.requests("demo", "tools/call", "forwarded") == before["allowed"] + 1
    assert deputy.requests("demo", "initialize", "forwarded") >= 1
    assert deputy.requests("guarded", "tools/call", "denied") == before["denied"] + 1
    assert deputy.value("deputy_decisions_total", server="guarded", outcome="deny") == before["deny"] + 1
    assert deputy.requests("demo", "none", "unauthorized") == before["unauthorized"] + 1
    assert deputy.requests("gone", "tools/call", "upstream_error") == before["upstream"] + 1
    assert deputy.value("deputy_upstream_errors_total", server="gone", kind="unreachable") == before[
        "unreachable"] + 1
    # Counts of observations, not timings: the tools/call duration exactly once, and the upstream stage once per
    # request forwarded with a JSON-RPC message. The SDK client's GET stream and its closing DELETE (method none) are
    # forwarded too, but a stream lasts as long as its client keeps it, so their upstream stage is not a stage
    # duration (deputy.gateway.observation): 7 requests forwarded here, 5 upstream stages observed.
    records = lines(request_log)
    with_message = [r for r in records if getattr(r, "outcome", None) in ("forwarded", "upstream_error")
                    and getattr(r, "method", None) != "none"]
    assert deputy.value("deputy_stage_duration_seconds_count", stage="upstream") == before["upstream_stage"] + len(
        with_message)
    assert {r.method for r in with_message} >= {"initialize", "tools/call"}  # type: ignore[attr-defined]
    assert deputy.value("deputy_request_duration_seconds_count", server="demo", method="tools/call") == before[
        "call_durations"] + 1

    calls = [r for r in records if getattr(r, "method", None) == "tools/call"]
    by_outcome = {r.outcome: r for r in calls}  # type: ignore[attr-defined]
    assert set(by_outcome) == {"forwarded", "denied", "upstream_error"}
    forwarded = by_outcome["forwarded"]
    assert (forwarded.server, forwarded.tool, forwarded.status) == ("demo", "echo", 200)  # type: ignore[attr-defined]
    assert isinstance(forwarded.duration_ms, float)  # type: ignore[attr-defined]
    assert forwarded.decision_id  # type: ignore[attr-defined]  # the audit record of the call
    denied_line = by_outcome["denied"]
    assert (denied_line.server, denied_line.tool) == ("guarded", "delete_user")  # type: ignore[attr-defined]
    assert denied_line.decision_id  # type: ignore[attr-defined]
    assert by_outcome["upstream_error"].status == 502  # type: ignore[attr-defined]
    refused = [r for r in records if getattr(r, "outcome", None) == "unauthorized"]
    assert len(refused) == 1 and refused[0].status == 401  # type: ignore[attr-defined]
    for record in records:
        for formatter in (TextLines(), JsonLines()):
            line = formatter.format(record)
            assert "\n" not in line
            for secret in (ARGUMENT_SECRET, demo_token, guarded_token, demo_token.split(".")[2]):
                assert secret not in line
        assert ARGUMENT_SECRET not in json.dumps(record.__dict__, default=str)


async def test_a_clients_traceparent_is_in_the_log_line(deputy: Telemetered,
                                                        request_log: pytest.LogCaptureFixture) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token_for(deputy, 'demo', 'demo:tools')}",
               "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    async with httpx.AsyncClient(timeout=30) as http:
        answered = await http.post(deputy.resource("demo"), json=INITIALIZE, headers=headers)
    assert answered.status_code == 200
    (record,) = lines(request_log)
    assert record.trace_id == trace_id  # type: ignore[attr-defined]
