"""Traces (deputy.telemetry.tracing, trace_settings, trace_export): off by default and free when off; when on,
each request's spans reach an OTLP/HTTP receiver with exactly the ids and times the gateway chose; a collector that
is down never fails a call.

The receiver is real (tests.support.otlp_receiver decodes the protobuf the SDK's OTLP exporter POSTs); nothing of
the SDK is replaced.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deputy.config_values import ConfigError
from deputy.telemetry.trace_context import TraceContext
from deputy.telemetry.trace_settings import tracing_settings
from deputy.telemetry.tracing import Tracing
from tests.support.config_files import load, offline_config
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER_KIND, CLIENT_KIND, INTERNAL_KIND = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind


# -- settings: the standard OTEL_* variables -------------------------------------------------------------------------

@pytest.mark.parametrize("environ", [
    {},
    {"OTEL_SERVICE_NAME": "deputy"},  # no endpoint: off
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "TRUE"},
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
], ids=["nothing", "no endpoint", "sdk disabled", "exporter none"])
def test_tracing_is_off_unless_an_endpoint_is_given(environ: dict[str, str]) -> None:
    assert not tracing_settings(environ).enabled
    assert not Tracing.from_environ(environ).enabled


def test_the_traces_endpoint_is_used_as_given_and_the_general_one_gets_the_signal_path() -> None:
    assert tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}).endpoint == "http://c:4318/v1/traces"
    assert tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/base",
                             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t/x"}).endpoint == "https://t/x"


def test_the_timeout_is_in_milliseconds_and_the_signal_specific_variable_wins() -> None:
    settings = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
                                 "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "250"})
    assert settings.timeout == 0.25


@pytest.mark.parametrize(("name", "value"), [
    ("OTEL_TRACES_EXPORTER", "zipkin"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
    ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
])
def test_a_bad_variable_stops_start_up_naming_it(name: str, value: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_SAMPLER": "traceidratio",
               name: value}
    with pytest.raises(ConfigError) as info:
        tracing_settings(environ)
    assert info.value.key == name


def test_exporter_headers_are_never_shown() -> None:
    """OTLP headers usually carry the collector's credentials: not in the settings' repr, not in an error."""
    settings = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
                                 "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20sekrit,x-team=a"})
    assert settings.headers == {"authorization": "Bearer sekrit", "x-team": "a"}
    assert "sekrit" not in repr(settings)
    with pytest.raises(ConfigError) as info:
        tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_HEADERS": "sekrit-token"})
    assert "sekrit" not in str(info.value)


def test_load_settings_reads_the_otel_variables(tmp_path: Path) -> None:
    """Deputy reads its environment in one place, deputy.config; the tracing settings come from there."""
    text = offline_config(tmp_path).read_text()
    settings = load(tmp_path, text, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                     "OTEL_SERVICE_NAME": "deputy-eu"})
    assert settings.tracing.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert settings.tracing.service_name == "deputy-eu"
    assert not load(tmp_path, text, {}).tracing.enabled


# -- off: free ----------------------------------------------------------------------------------------------------

def test_tracing_off_never_loads_the_sdk() -> None:
    """Off, a request with or without a client traceparent touches no SDK object: the SDK is not even imported."""
    script = f"""
import sys
from deputy.telemetry.tracing import Tracing
tracing = Tracing.from_environ({{}})
assert tracing.begin(None, None) is None
context = tracing.begin(b"00-{TRACE}-{CLIENT_SPAN}-01", b"vendor=1")
assert context is not None and context.trace_id == "{TRACE}" and context.parent_span_id == "{CLIENT_SPAN}"
tracing.finish(context, server="demo", method="tools/call", tool="echo", status=200, outcome="forwarded",
               start_ns=1, end_ns=2, stages=[("upstream", 1, 2)])
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


# -- on: spans with the chosen ids and times ----------------------------------------------------------------------

@pytest.fixture
def receiver() -> Iterator[tuple[str, OtlpReceiver]]:
    with otlp_receiver() as running:
        yield running


def tracing_to(url: str, **extra: str) -> Tracing:
    return Tracing.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_BSP_SCHEDULE_DELAY": "20",
                                 "OTEL_SERVICE_NAME": "deputy-test", **extra})


def finish(tracing: Tracing, context: TraceContext, *, status: int = 200) -> tuple[int, list[tuple[str, int, int]]]:
    start = time.time_ns()
    stages = [("authenticate", start + 10, start + 20), ("decide", start + 20, start + 30),
              ("audit", start + 30, start + 40), ("upstream", start + 40, start + 90)]
    tracing.finish(context, server="demo", method="tools/call", tool="echo", status=status, outcome="forwarded",
                   start_ns=start, end_ns=start + 100, stages=stages)
    return start, stages


async def test_a_continued_trace_is_exported_with_the_chosen_ids(receiver: tuple[str, OtlpReceiver]) -> None:
    url, received = receiver
    tracing = tracing_to(url)
    context = tracing.begin(f"00-{TRACE}-{CLIENT_SPAN}-01".encode(), b"vendor=1")
    assert context is not None and context.sampled
    start, stages = finish(tracing, context)
    spans = {span.name: span for span in received.trace(TRACE, 5)}
    request = spans["tools/call echo"]
    assert (request.span_id, request.parent_span_id, request.kind) == (context.span_id, CLIENT_SPAN, SERVER_KIND)
    assert (request.start_ns, request.end_ns) == (start, start + 100)
    assert request.trace_state == "vendor=1"
    assert request.attributes == {"deputy.server": "demo", "deputy.outcome": "forwarded",
                                  "http.response.status_code": 200, "mcp.method.name": "tools/call",
                                  "gen_ai.tool.name": "echo"}
    assert request.resource["service.name"] == "deputy-test"
    for name, stage_start, stage_end in stages:
        child = spans[name]
        assert (child.parent_span_id, child.start_ns, child.end_ns) == (context.span_id, stage_start, stage_end)
        assert child.kind == (CLIENT_KIND if name == "upstream" else INTERNAL_KIND)
    assert spans["upstream"].span_id == context.upstream_span_id
    assert len({span.span_id for span in spans.values()}) == 5
    await tracing.shutdown()


async def test_a_new_trace_has_no_parent_and_the_id_sent_upstream(receiver: tuple[str, OtlpReceiver]) -> None:
    url, received = receiver
    tracing = tracing_to(url)
    context = tracing.begin(None, None)
    assert context is not None and context.parent_span_id is None
    assert context.upstream_traceparent() == f"00-{context.trace_id}-{context.upstream_span_id}-03".encode()
    finish(tracing, context, status=502)
    spans = {span.name: span for span in received.trace(context.trace_id, 5)}
    assert spans["tools/call echo"].parent_span_id is None
    assert spans["upstream"].span_id == context.upstream_span_id
    await tracing.shutdown()


async def test_an_unsampled_trace_is_not_exported(receiver: tuple[str, OtlpReceiver]) -> None:
    url, received = receiver
    tracing = tracing_to(url)
    unsampled = tracing.begin(f"00-{'1' * 32}-{CLIENT_SPAN}-00".encode(), None)
    assert unsampled is not None and not unsampled.sampled
    assert unsampled.upstream_traceparent().endswith(b"-00")  # the client's decision travels on
    finish(tracing, unsampled)
    sampled = tracing.begin(f"00-{TRACE}-{CLIENT_SPAN}-01".encode(), None)
    assert sampled is not None
    finish(tracing, sampled)
    received.trace(TRACE, 5)
    await tracing.shutdown()
    assert {span.trace_id for span in received.spans} == {TRACE}


def test_the_sampler_ratio_decides_a_new_trace() -> None:
    never = tracing_to("http://127.0.0.1:9", OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    always = tracing_to("http://127.0.0.1:9", OTEL_TRACES_SAMPLER="always_on")
    assert not any(c and c.sampled for c in (never.begin(None, None) for _ in range(20)))
    # always_on is not parent-based: it samples even when the client did not.
    continued = always.begin(f"00-{TRACE}-{CLIENT_SPAN}-00".encode(), None)
    assert continued is not None and continued.sampled


async def test_a_collector_that_is_down_fails_no_call() -> None:
    """Telemetry fails open: finish() returns at once, spans are dropped, shutdown still ends."""
    with otlp_receiver() as (url, _):
        pass  # the port is closed now
    tracing = tracing_to(url, OTEL_EXPORTER_OTLP_TIMEOUT="200", OTEL_BSP_EXPORT_TIMEOUT="500")
    for _ in range(50):
        context = tracing.begin(None, None)
        assert context is not None
        finish(tracing, context)
    await asyncio.wait_for(tracing.shutdown(), 30)
    await tracing.shutdown()  # twice is harmless


def test_service_name_from_the_resource_attributes_unless_otel_service_name_is_set() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_RESOURCE_ATTRIBUTES": "service.name=edge,region=eu"}
    assert tracing_settings(base).service_name == "edge"
    assert tracing_settings({**base, "OTEL_SERVICE_NAME": "gateway"}).service_name == "gateway"
    assert tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}).service_name == "deputy"


def test_a_span_that_cannot_be_built_is_lost_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """finish() runs as a request ends; whatever goes wrong building its spans must not reach the gateway."""
    tracing = tracing_to("http://127.0.0.1:9")
    broken = TraceContext("not hex at all", "also not hex", "nor this", None, True, None)
    finish(tracing, broken)
    assert "could not be recorded" in caplog.text


async def test_a_request_without_a_message_is_named_by_its_route(receiver: tuple[str, OtlpReceiver]) -> None:
    url, received = receiver
    tracing = tracing_to(url)
    context = tracing.begin(None, None)
    assert context is not None
    start = time.time_ns()
    tracing.finish(context, server="demo", method="none", tool=None, status=200, outcome="forwarded",
                   start_ns=start, end_ns=start + 10, stages=[("upstream", start + 1, start + 9)])
    (request,) = [span for span in received.trace(context.trace_id, 2) if span.kind == SERVER_KIND]
    assert request.name == "/mcp/demo" and "mcp.method.name" not in request.attributes
    await tracing.shutdown()
