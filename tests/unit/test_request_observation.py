"""The observation of one gateway request (issue 13): bounded labels, one log line, the closed set of outcomes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from deputy.gateway import observation
from deputy.gateway.jsonrpc import McpMessage, parse_message
from deputy.gateway.observation import (
    AUDIT,
    AUTHENTICATE,
    DECIDE,
    MAX_TOOL_LOGGED,
    UPSTREAM,
    RequestObservation,
    RequestObserver,
    RequestOutcome,
    mark_upstream_error,
    refusal_outcome,
)
from deputy.gateway.policy_lifecycle import Unavailable
from deputy.policy import Decision, Outcome
from deputy.telemetry.logs import JsonLines, TextLines
from deputy.telemetry.metrics import MCP_METHODS, Metrics
from deputy.telemetry.tracing import Tracing

SERVERS = ("demo", "local")  # demo: an HTTP upstream; local: a stdio one
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("deputy.requests")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _client_send(message: Message) -> None:
    return None


def call(method: str = "tools/call", tool: str = "add", arguments: object = None) -> McpMessage:
    params = {"name": tool, "arguments": arguments or {"a": 1}} if method == "tools/call" else {}
    return parse_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode())


def decision(outcome: Outcome) -> Decision:
    return Decision("d-1", outcome, "call", "demo", ("p1",), (), "v1", "s1")


def series(metrics: Metrics) -> dict[str, int]:
    """Samples per metric family in the exposition, as a scraper sees them."""
    text = generate_latest(metrics.registry).decode()
    return {family.name: len(family.samples) for family in text_string_to_metric_families(text)}


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def requests(metrics: Metrics, server: str, outcome: str, method: str = "none") -> float | None:
    return sample(metrics, "deputy_requests_total", {"server": server, "method": method, "outcome": outcome})


def observe(observer: RequestObserver, scope: dict[str, object] | None = None, *, server: str = "demo",
            message: McpMessage | None = None, status: int = 200,
            outcome: RequestOutcome | None = RequestOutcome.FORWARDED) -> RequestObservation:
    seen = observer.begin(_client_send)
    seen.server = server
    if message is not None:
        seen.asked(message)
    for stage in (AUTHENTICATE, DECIDE, AUDIT, UPSTREAM):
        seen.stage(stage, seen.started)
    seen.status = status
    seen.outcome = outcome
    observer.finish(seen, scope or {})
    return seen


def test_ten_thousand_unknown_methods_and_tool_names_make_a_fixed_number_of_series() -> None:
    """Abuse: a client choosing a new method or tool name per call must not grow the metrics."""
    metrics = Metrics()
    observer = RequestObserver(metrics, None, ["demo"])
    observe(observer, message=call())  # one known series, so the bound below is the bound of the abuse
    before = series(metrics)
    for n in range(10_000):
        observe(observer, message=call(method=f"x/{n}"))
        observe(observer, message=call(tool=f"tool-{n}"))
    after = series(metrics)
    # One more method label (other) and nothing else: the tool name is never a label.
    assert after["deputy_requests"] == before["deputy_requests"] + 1
    # A histogram's samples for one label set (buckets, count, sum) twice over: tools/call, and other.
    assert after["deputy_request_duration_seconds"] == 2 * before["deputy_request_duration_seconds"]
    assert after["deputy_stage_duration_seconds"] == before["deputy_stage_duration_seconds"]
    text = generate_latest(metrics.registry).decode()
    assert "tool-" not in text and "x/" not in text


def test_every_method_label_is_known_other_or_none() -> None:
    metrics = Metrics()
    observer = RequestObserver(metrics, None, ["demo"])
    for method in ("tools/call", "tools/list", "initialize", "evil\nmethod", "a" * 10_000, "Tools/Call"):
        observe(observer, message=call(method=method))
    observe(observer, message=None)  # a GET
    labels = {sample.labels["method"] for family in text_string_to_metric_families(
        generate_latest(metrics.registry).decode()) if family.name == "deputy_requests" for sample in family.samples}
    assert labels == {"tools/call", "tools/list", "initialize", "other", "none"}
    assert labels <= MCP_METHODS | {"other", "none"}


@pytest.mark.parametrize("formatter", [TextLines(), JsonLines()], ids=["text", "json"])
def test_a_tool_name_with_line_breaks_and_controls_stays_one_bounded_line(records: Records,
                                                                          formatter: logging.Formatter) -> None:
    """Abuse: a tool name made to forge a second log record, or to act on the terminal reading the log."""
    tool = "add\nINFO deputy.requests: forged outcome=forwarded\r\x1b[2J\x00\u2028" + "x" * 5000
    observe(RequestObserver(Metrics(), None, ["demo"]), message=call(tool=tool))
    (record,) = records.records
    assert len(record.tool) == MAX_TOOL_LOGGED  # type: ignore[attr-defined]
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
    assert "\u2028" not in line
    assert "x" * (MAX_TOOL_LOGGED + 1) not in line


class StoppedClock:
    """The observation module's clock, stopped at ``now`` (ns): durations come out exact, never measured."""

    def __init__(self, now: int) -> None:
        self.now = now

    def perf_counter_ns(self) -> int:
        return self.now

    time_ns = staticmethod(time.time_ns)


def test_the_log_line_names_the_call_but_never_its_arguments(records: Records,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-do-not-log-4242"
    clock = StoppedClock(10**12)
    monkeypatch.setattr(observation, "time", clock)
    observer = RequestObserver(Metrics(), None, ["demo"])
    seen = observer.begin(_client_send)
    seen.server, seen.started = "demo", clock.now - 3_500_000  # began 3.5 ms before the clock's "now"
    seen.asked(call(arguments={"password": secret, "token": secret}))
    for stage in (AUTHENTICATE, DECIDE, AUDIT, UPSTREAM):
        seen.stage(stage, seen.started)
    seen.status, seen.outcome = 200, RequestOutcome.FORWARDED
    observer.finish(seen, {})
    (record,) = records.records
    assert record.name == "deputy.requests" and record.levelno == logging.INFO
    fields = {name: getattr(record, name) for name in ("server", "method", "tool", "outcome", "status")}
    assert fields == {"server": "demo", "method": "tools/call", "tool": "add", "outcome": "forwarded", "status": 200}
    assert record.duration_ms == 3.5  # type: ignore[attr-defined]  # from when it began until it finished
    for formatter in (TextLines(), JsonLines()):
        assert secret not in formatter.format(record)
    assert secret not in repr(record.__dict__)


def test_only_tools_call_has_a_tool(records: Records) -> None:
    observe(RequestObserver(Metrics(), None, ["demo"]), message=parse_message(
        b'{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret-prompt","arguments":{}}}'))
    (record,) = records.records
    assert record.tool is None  # type: ignore[attr-defined]
    assert record.method == "prompts/get"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "outcome"), [
    (0, "gone"), (400, "bad_request"), (401, "unauthorized"), (403, "forbidden"), (404, "not_found"),
    (405, "method_not_allowed"), (408, "timeout"), (413, "too_large"), (429, "bad_request"),
    (502, "upstream_error"), (503, "unavailable"), (500, "unavailable"),
])
def test_a_refusal_is_named_by_its_status(status: int, outcome: str) -> None:
    assert refusal_outcome(status) == outcome


@pytest.mark.parametrize(("decided", "label", "outcome"), [
    (decision(Outcome.ALLOW), "allow", None),
    (decision(Outcome.DENY), "deny", RequestOutcome.DENIED),
    (decision(Outcome.STEP_UP), "step_up", RequestOutcome.STEP_UP),
    (decision(Outcome.APPROVAL_REQUIRED), "approval", RequestOutcome.HELD),
    (Unavailable("no tool list"), "unavailable", RequestOutcome.UNAVAILABLE),
    (None, None, None),
])
def test_a_policy_answer_names_the_decision_and_a_refusals_outcome(
        decided: Decision | Unavailable | None, label: str | None, outcome: RequestOutcome | None) -> None:
    seen = RequestObservation(_client_send)
    seen.decided(decided)
    assert (seen.decision, seen.outcome) == (label, outcome)
    assert seen.decision_id == ("d-1" if isinstance(decided, Decision) else None)


def test_decisions_and_refusals_are_counted_by_server_and_outcome() -> None:
    metrics = Metrics()
    observer = RequestObserver(metrics, None, ["demo"])
    seen = observer.begin(_client_send)
    seen.server, seen.status = "demo", 200
    seen.decided(decision(Outcome.DENY))
    observer.finish(seen, {})
    observe(observer, status=401, outcome=None)
    assert sample(metrics, "deputy_decisions_total", {"server": "demo", "outcome": "deny"}) == 1
    assert requests(metrics, "demo", "denied") == 1
    assert requests(metrics, "demo", "unauthorized") == 1


def test_an_http_upstreams_failure_is_counted_by_kind_and_a_stdio_ones_is_left_to_it() -> None:
    metrics = Metrics()
    observer = RequestObserver(metrics, None, ["demo"])
    scope: dict[str, object] = {}
    mark_upstream_error(scope, "unreachable")
    observe(observer, scope, status=502)
    observe(observer, status=500)  # the upstream's own 5xx
    observe(observer, status=404)  # the upstream's own 4xx: an answer, not a failure
    observe(observer, server="local", status=503)
    assert sample(metrics, "deputy_upstream_errors_total", {"server": "demo", "kind": "unreachable"}) == 1
    assert sample(metrics, "deputy_upstream_errors_total", {"server": "demo", "kind": "status"}) == 1
    assert requests(metrics, "demo", "upstream_error") == 2
    assert requests(metrics, "demo", "forwarded") == 1
    assert requests(metrics, "local", "upstream_error") == 1
    assert "local" not in {s.labels.get("server") for f in text_string_to_metric_families(
        generate_latest(metrics.registry).decode()) if f.name == "deputy_upstream_errors" for s in f.samples}


def test_a_get_streams_lifetime_is_not_an_upstream_stage() -> None:
    metrics = Metrics()
    observer = RequestObserver(metrics, None, ["demo"])
    observe(observer)  # a GET: no message
    text = generate_latest(metrics.registry).decode()
    counts = {s.labels["stage"]: s.value for f in text_string_to_metric_families(text)
              if f.name == "deputy_stage_duration_seconds" for s in f.samples if s.name.endswith("_count")}
    assert counts == {AUTHENTICATE: 1, DECIDE: 1, AUDIT: 1, UPSTREAM: 0}


def test_a_clients_traceparent_reaches_the_log_line_with_tracing_off(records: Records) -> None:
    observer = RequestObserver(Metrics(), Tracing(), ["demo"])
    seen = observer.begin(_client_send, TRACEPARENT, None)
    assert seen.trace is not None and seen.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    seen.status = 401
    observer.finish(seen, {})
    assert records.records[0].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]
    assert observer.begin(_client_send, None, None).trace is None  # off, and no traceparent: no context


async def test_the_relayed_send_notes_the_status_and_passes_every_message() -> None:
    sent: list[Message] = []

    async def client(message: Message) -> None:
        sent.append(message)

    seen = RequestObservation(client)
    await seen.relay({"type": "http.response.start", "status": 418, "headers": []})
    await seen.relay({"type": "http.response.body", "body": b"x"})
    assert seen.status == 418 and [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
