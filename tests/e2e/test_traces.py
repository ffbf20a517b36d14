"""Traces end to end (issue 13, item 2): real Deputy processes exporting to a real OTLP/HTTP receiver.

A Deputy started with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at :mod:`tests.support.otlp_receiver`, in front of the
demo MCP server behind a recorder (:mod:`tests.support.recording_upstream`), the demo policies guarding it. A
``tools/call`` with a client ``traceparent`` must come out as the client's trace: the request span a child of the
client's span, with ``authenticate``/``decide``/``audit``/``upstream`` children; the upstream must be sent a
``traceparent`` naming Deputy's upstream span, never the client's header; and the call's audit records (read from the
database, not through Deputy) must carry the trace id — for an allowed call and for a denied one. A Deputy with
tracing off still puts a client's trace id in the record and passes the trace on; one whose collector is down still
answers every call.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.audit_log import Leaf, read_log
from tests.support.databases import database_url
from tests.support.demo_policies import DEMO_POLICIES
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import tokens_for_alice
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support.recording_upstream import RecordedRequest, RequestRecorder, recording_upstream

POLICY_DENIED = -32003
CLIENT_SPAN = "00f067aa0ba902b7"
STAGE_NAMES = {"authenticate", "decide", "audit", "upstream"}


@dataclass
class Traced:
    deputy: RunningDeputy
    recorder: RequestRecorder
    receiver: OtlpReceiver | None
    token: str = ""


def guarded(recorded_url: str) -> str:
    return f'''
[servers.guarded]
url = "{recorded_url}"
scopes = ["demo:tools"]
policies = "{DEMO_POLICIES}"
'''


class RawHeaders:
    """Behind the recorder (whose headers are a dict, the last of a repeated name winning): every request's header
    lines as they came, in the recorder's order, so a header sent twice is seen twice."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[list[tuple[bytes, bytes]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(list(scope["headers"]))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, RequestRecorder]]:
    with recording_upstream() as running:
        running[1].app = RawHeaders(running[1].app)
        yield running


def header_lines(recorder: RequestRecorder, request: RecordedRequest, name: bytes) -> list[bytes]:
    assert isinstance(recorder.app, RawHeaders)
    return [value for key, value in recorder.app.seen[recorder.seen.index(request)] if key.lower() == name]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[str, OtlpReceiver]]:
    with otlp_receiver() as running:
        yield running


@contextmanager
def start(directory: Path, upstream: tuple[str, RequestRecorder], environ: dict[str, str]
          ) -> Iterator[tuple[RunningDeputy, RequestRecorder]]:
    """A Deputy on SQLite in front of the recording upstream, its environment extended by ``environ``."""
    recorded_url, recorder = upstream
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        with database_url("sqlite", directory) as url, running_deputy(directory, url, recorded_url,
                                                                      guarded(recorded_url)) as deputy:
            patch.undo()
            yield deputy, recorder


@pytest.fixture(scope="module")
def tracing_deputy(upstream: tuple[str, RequestRecorder], collector: tuple[str, OtlpReceiver],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    collector_url, receiver = collector
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector_url, "OTEL_BSP_SCHEDULE_DELAY": "50",
               "OTEL_SERVICE_NAME": "deputy-e2e"}
    with start(tmp_path_factory.mktemp("deputy-traces"), upstream, environ) as (deputy, recorder):
        yield Traced(deputy, recorder, receiver)


@pytest.fixture(scope="module")
def untracing_deputy(upstream: tuple[str, RequestRecorder],
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """Tracing off: no OTEL_* endpoint at all (and none inherited from the test run's environment)."""
    environ = {"OTEL_SDK_DISABLED": "true"}
    with start(tmp_path_factory.mktemp("deputy-untraced"), upstream, environ) as (deputy, recorder):
        yield Traced(deputy, recorder, None)


@pytest.fixture(scope="module")
async def traced(tracing_deputy: Traced) -> Traced:
    tracing_deputy.token, _ = await tokens_for_alice(tracing_deputy.deputy, tracing_deputy.deputy.resource("guarded"))
    return tracing_deputy


@pytest.fixture(scope="module")
async def untraced(untracing_deputy: Traced) -> Traced:
    untracing_deputy.token, _ = await tokens_for_alice(untracing_deputy.deputy,
                                                       untracing_deputy.deputy.resource("guarded"))
    return untracing_deputy


def new_trace_id() -> str:
    """A fresh trace id, as a client would make one."""
    return secrets.token_hex(16)


async def call(traced: Traced, tool: str, arguments: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    sent = {"Authorization": f"Bearer {traced.token}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18", **headers}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(traced.deputy.resource("guarded"), content=json.dumps(body), headers=sent)


def forwarded(recorder: RequestRecorder, marker: str) -> list[RecordedRequest]:
    """The requests the upstream received whose body holds ``marker``."""
    return [request for request in list(recorder.seen) if marker.encode() in request.body]


async def records_of(deputy: RunningDeputy, trace_id: str, types: set[str]) -> dict[str, Leaf]:
    """The audit records carrying ``trace_id``, by type, once one of each of ``types`` is in the log."""

    async def found() -> dict[str, Leaf]:
        leaves = [leaf for leaf in (await read_log(deputy.database_url)).leaves
                  if leaf.record.get("trace_id") == trace_id]
        by_type = {leaf.record["type"]: leaf for leaf in leaves}
        assert types <= set(by_type), f"records with trace {trace_id}: {[leaf.record for leaf in leaves]}"
        return by_type

    return await eventually(found)


async def test_an_allowed_call_is_one_trace_from_client_to_upstream_and_audit(traced: Traced) -> None:
    assert traced.receiver is not None
    trace_id = new_trace_id()
    client = f"00-{trace_id}-{CLIENT_SPAN}-01"
    marker = f"traced {trace_id}"
    answer = await call(traced, "echo", {"text": marker}, {"traceparent": client, "tracestate": "vendor=kept"})
    assert answer.status_code == 200 and "result" in answer.json(), answer.text

    spans = {span.name: span for span in traced.receiver.trace(trace_id, 5)}
    request = spans["tools/call echo"]
    assert request.parent_span_id == CLIENT_SPAN
    assert request.attributes["deputy.server"] == "guarded" and request.attributes["deputy.outcome"] == "forwarded"
    assert request.resource["service.name"] == "deputy-e2e"
    assert set(spans) >= STAGE_NAMES
    for name in STAGE_NAMES:
        assert spans[name].parent_span_id == request.span_id, name
        assert request.start_ns <= spans[name].start_ns <= spans[name].end_ns <= request.end_ns, name

    (sent,) = forwarded(traced.recorder, marker)
    assert sent.headers["traceparent"] == f"00-{trace_id}-{spans['upstream'].span_id}-01"
    assert sent.headers["traceparent"] != client
    assert sent.headers["tracestate"] == "vendor=kept"
    assert header_lines(traced.recorder, sent, b"traceparent") == [sent.headers["traceparent"].encode()]
    assert header_lines(traced.recorder, sent, b"tracestate") == [b"vendor=kept"]

    records = await records_of(traced.deputy, trace_id, {"decision", "call.outcome"})
    assert records["decision"].record["tool"] == "echo" and records["decision"].record["outcome"] == "allow"
    assert records["call.outcome"].record["decision_id"] == records["decision"].record["decision_id"]


async def test_a_denied_call_is_found_from_its_trace_and_back(traced: Traced) -> None:
    assert traced.receiver is not None
    trace_id = new_trace_id()
    answer = await call(traced, "delete_user", {"id": 5, "reason": trace_id},
                        {"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"})
    assert answer.status_code == 200 and answer.json()["error"]["code"] == POLICY_DENIED, answer.text

    records = await records_of(traced.deputy, trace_id, {"decision"})
    denial = records["decision"].record
    assert denial["outcome"] == "deny" and denial["tool"] == "delete_user"
    # From the record to its trace: the span with the record's trace id says what happened.
    spans = {span.name: span for span in traced.receiver.wait_for(
        lambda spans: any(s.trace_id == denial["trace_id"] and s.name == "tools/call delete_user" for s in spans))
        if span.trace_id == denial["trace_id"]}
    request = spans["tools/call delete_user"]
    assert request.parent_span_id == CLIENT_SPAN and request.attributes["deputy.outcome"] == "denied"
    assert "upstream" not in spans
    assert not forwarded(traced.recorder, trace_id)
    # From the trace to the record, as an operator would: `deputy audit tail --trace`.
    tail = traced.deputy.cli("audit", "tail", "--trace", trace_id)
    assert tail.returncode == 0, tail.stderr
    (line,) = [line for line in tail.stdout.splitlines() if "decision " in line]
    assert "tool=delete_user" in line and "outcome=deny" in line and f"trace={trace_id}" in line
    assert f"decision={denial['decision_id']}" in line


@pytest.mark.parametrize("header", [
    "00-" + "0" * 32 + f"-{CLIENT_SPAN}-01",
    f"00-{'A' * 32}-{CLIENT_SPAN}-01",
    f"ff-{'a' * 32}-{CLIENT_SPAN}-01",
    f"00-{'a' * 32}-{CLIENT_SPAN}-01-extra",
], ids=["zero trace-id", "uppercase", "version ff", "extra field"])
async def test_a_malformed_traceparent_starts_a_new_trace(traced: Traced, header: str) -> None:
    marker = f"malformed {time.time_ns()}"
    answer = await call(traced, "echo", {"text": marker}, {"traceparent": header, "tracestate": "vendor=dropped"})
    assert answer.status_code == 200 and "result" in answer.json(), answer.text
    (sent,) = forwarded(traced.recorder, marker)
    version, trace_id, parent, flags = sent.headers["traceparent"].split("-")
    assert trace_id not in header and trace_id != "0" * 32 and (version, flags) == ("00", "03")
    assert "tracestate" not in sent.headers
    assert header_lines(traced.recorder, sent, b"traceparent") == [sent.headers["traceparent"].encode()]
    spans = {span.name: span for span in traced.receiver.trace(trace_id, 5)} if traced.receiver else {}
    assert spans["tools/call echo"].parent_span_id is None and spans["upstream"].span_id == parent


async def test_tracing_off_still_carries_the_clients_trace(untraced: Traced) -> None:
    trace_id = new_trace_id()
    marker = f"untraced {trace_id}"
    client = f"00-{trace_id}-{CLIENT_SPAN}-01"
    answer = await call(untraced, "echo", {"text": marker}, {"traceparent": client})
    assert answer.status_code == 200, answer.text
    (sent,) = forwarded(untraced.recorder, marker)
    assert sent.headers["traceparent"].startswith(f"00-{trace_id}-") and sent.headers["traceparent"] != client
    assert header_lines(untraced.recorder, sent, b"traceparent") == [sent.headers["traceparent"].encode()]
    records = await records_of(untraced.deputy, trace_id, {"decision", "call.outcome"})
    assert records["decision"].record["outcome"] == "allow"
    # Without a client traceparent there is no trace at all: nothing sent upstream, no trace id recorded.
    quiet = f"quiet {time.time_ns()}"
    assert (await call(untraced, "echo", {"text": quiet}, {})).status_code == 200
    (plain,) = forwarded(untraced.recorder, quiet)
    assert "traceparent" not in plain.headers and "tracestate" not in plain.headers

    async def quiet_records() -> list[Leaf]:
        leaves = [leaf for leaf in (await read_log(untraced.deputy.database_url)).leaves
                  if leaf.record.get("arguments") == {"text": quiet}]
        assert leaves, "the quiet call's decision is not in the log yet"
        return leaves

    assert all("trace_id" not in leaf.record for leaf in await eventually(quiet_records))


async def test_a_collector_that_is_down_fails_no_call(upstream: tuple[str, RequestRecorder],
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    with otlp_receiver() as (closed_url, _):
        pass  # nothing listens there any more
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": closed_url, "OTEL_BSP_SCHEDULE_DELAY": "10",
               "OTEL_EXPORTER_OTLP_TIMEOUT": "200"}
    with start(tmp_path_factory.mktemp("deputy-collector-down"), upstream, environ) as (deputy, recorder):
        token, _ = await tokens_for_alice(deputy, deputy.resource("guarded"))
        down = Traced(deputy, recorder, None, token)
        for index in range(20):
            answer = await call(down, "echo", {"text": f"down {index}"}, {})
            assert answer.status_code == 200 and "result" in answer.json(), answer.text
