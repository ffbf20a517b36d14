"""W3C Trace Context from a client (deputy.telemetry.trace_context): abuse first.

A client's ``traceparent`` and ``tracestate`` are its to write, so whatever it sends is either a well-formed
context (continued) or ignored (a new trace, or none with tracing off); nothing it sends reaches the upstream as it
came, and no header of any size or shape costs more than a bounded look.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from deputy.telemetry.trace_context import (
    MAX_TRACEPARENT_INPUT,
    MAX_TRACESTATE_INPUT,
    parse_traceparent,
    parse_tracestate,
    trace_headers,
)
from deputy.telemetry.tracing import Tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01".encode()
OFF = Tracing()


@pytest.fixture(scope="module")
def on() -> Iterator[Tracing]:
    """Tracing on, towards a port nothing listens on; no test here finishes a request, so nothing is ever sent."""
    tracing = Tracing.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    yield tracing
    asyncio.run(tracing.shutdown())

MALFORMED = {
    "version ff": f"ff-{TRACE}-{SPAN}-01",
    "version not hex": f"0g-{TRACE}-{SPAN}-01",
    "version uppercase": f"0A-{TRACE}-{SPAN}-01",
    "trace-id uppercase": f"00-{TRACE.upper()}-{SPAN}-01",
    "parent-id uppercase": f"00-{TRACE}-{SPAN.upper()}-01",
    "flags uppercase": f"00-{TRACE}-{SPAN}-0A",
    "trace-id short": f"00-{TRACE[:-1]}-{SPAN}-01",
    "trace-id long": f"00-{TRACE}0-{SPAN}-01",
    "parent-id short": f"00-{TRACE}-{SPAN[:-1]}-01",
    "parent-id long": f"00-{TRACE}-{SPAN}0-01",
    "flags short": f"00-{TRACE}-{SPAN}-1",
    "flags long": f"00-{TRACE}-{SPAN}-011",
    "trace-id all zero": f"00-{'0' * 32}-{SPAN}-01",
    "parent-id all zero": f"00-{TRACE}-{'0' * 16}-01",
    "extra field for version 00": f"00-{TRACE}-{SPAN}-01-what",
    "trailing dash for version 00": f"00-{TRACE}-{SPAN}-01-",
    "later version glued on": f"01-{TRACE}-{SPAN}-01what",
    "underscores for dashes": f"00_{TRACE}_{SPAN}_01",
    "trace-id not hex": f"00-{TRACE[:-1]}x-{SPAN}-01",
    "sign in the parent-id": f"00-{TRACE}-+{SPAN[1:]}-01",
    "empty": "",
    "dashes only": "-" * 55,
    "non-ascii": f"00-{TRACE}-{SPAN[:-1]}é-01",
    "huge": f"00-{TRACE}-{SPAN}-01" + " " * MAX_TRACEPARENT_INPUT,
}


@pytest.mark.parametrize("header", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_traceparent_is_ignored(header: str, on: Tracing) -> None:
    assert parse_traceparent(header.encode()) is None
    # With tracing off it leaves no trace at all; with tracing on a new trace is started, owing nothing to it.
    assert OFF.begin(header.encode(), b"vendor=kept") is None
    started = on.begin(header.encode(), b"vendor=kept")
    assert started is not None
    assert started.parent_span_id is None and started.trace_id != TRACE and started.tracestate is None


def test_a_traceparent_sent_twice_is_invalid() -> None:
    headers = [(b"traceparent", VALID), (b"traceparent", f"00-{TRACE}-{'1' * 16}-01".encode())]
    parent, _ = trace_headers(headers)
    assert parent == b"" and OFF.begin(parent, None) is None


def test_the_upstream_never_gets_the_clients_traceparent() -> None:
    context = OFF.begin(VALID, None)
    assert context is not None
    sent = context.upstream_traceparent()
    assert sent != VALID and sent.startswith(f"00-{TRACE}-".encode())
    assert sent == f"00-{TRACE}-{context.upstream_span_id}-01".encode()
    assert context.upstream_span_id not in (SPAN, context.span_id)


def test_unknown_flags_are_not_passed_on() -> None:
    # Only sampled (01) and, Level 2, random (02) are defined; the rest are set to zero upstream (§3.2.2.5).
    context = OFF.begin(f"00-{TRACE}-{SPAN}-ff".encode(), None)
    assert context is not None and context.upstream_traceparent().endswith(b"-03")
    unsampled = OFF.begin(f"00-{TRACE}-{SPAN}-fc".encode(), None)
    assert unsampled is not None and not unsampled.sampled and unsampled.upstream_traceparent().endswith(b"-00")


def test_a_later_version_is_read_as_version_00() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds".encode()) == (TRACE, SPAN, 1)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01".encode()) == (TRACE, SPAN, 1)
    context = OFF.begin(f"cc-{TRACE}-{SPAN}-01-more".encode(), None)
    assert context is not None and context.upstream_traceparent().startswith(b"00-")


TRACESTATE_INVALID = {
    "33 members": ",".join(f"k{i}=v" for i in range(33)),
    "duplicate key": "a=1,b=2,a=3",
    "uppercase key": "Vendor=1",
    "key starting with a digit": "1vendor=x",
    "no equals sign": "vendor",
    "equals sign in the value": "vendor=a=b",
    "comma-free garbage": "vendor=\x01",
    "space inside the key": "ven dor=x",
    "value too long": "vendor=" + "x" * 257,
    "key too long": "k" * 257 + "=x",
    "system id too long": "t@" + "s" * 15 + "=x",
    "non-ascii": "vendor=é",
    "over the input bound": "a=" + "x" * MAX_TRACESTATE_INPUT,
}


@pytest.mark.parametrize("header", list(TRACESTATE_INVALID.values()), ids=list(TRACESTATE_INVALID))
def test_an_invalid_tracestate_is_dropped_whole(header: str) -> None:
    assert parse_tracestate(header.encode()) is None
    context = OFF.begin(VALID, header.encode())
    assert context is not None and context.tracestate is None


def test_a_tracestate_is_cut_to_512_characters_long_members_first() -> None:
    long_member = "big=" + "x" * 200
    members = [f"k{i}={'v' * 40}" for i in range(15)]  # 15 x 44 + 14 commas: over 512
    carried = parse_tracestate(",".join([members[0], long_member, *members[1:]]).encode())
    assert carried is not None and len(carried) <= 512
    assert "big=" not in carried
    kept = carried.split(",")
    assert kept == members[:len(kept)]  # the rest went from the end


def test_a_tracestate_without_a_valid_traceparent_is_not_read(on: Tracing) -> None:
    started = on.begin(None, b"vendor=1")
    assert started is not None and started.tracestate is None


def test_a_valid_tracestate_is_carried_upstream() -> None:
    carried = "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,tenant@sys=x ,,"
    context = OFF.begin(VALID, carried.encode())
    assert context is not None and context.tracestate == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@sys=x"
    assert context.upstream_tracestate() == context.tracestate.encode()
    _, joined = trace_headers([(b"tracestate", b"a=1"), (b"tracestate", b"b=2")])
    assert parse_tracestate(joined or b"") == "a=1,b=2"


def test_ids_are_fresh_per_request_and_never_zero() -> None:
    contexts = [OFF.begin(VALID, None) for _ in range(200)]
    ids = {c.span_id for c in contexts if c} | {c.upstream_span_id for c in contexts if c}
    assert len(ids) == 400 and "0" * 16 not in ids
