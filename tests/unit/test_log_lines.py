"""Deputy's log lines (issue 13): one physical line per record, whatever a value holds; uvicorn and the SDK
through the same handler; a traceback only at debug."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from deputy.telemetry.logs import FLOORS, JsonLines, TextLines, configure_logging

# What a client or an upstream chooses: a tool name, an exception's message, a server's stderr.
FORGED_TOOL = 'add\nINFO deputy.oauth "token issued" outcome=allowed\r\x1b[2J\x07\x7f\u009b\u202e'


def _record(message: str = "call %s", *args: object, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("deputy.requests", logging.INFO, __file__, 1, message, args or None, None)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def _raised(message: str) -> logging.LogRecord:
    try:
        raise ValueError(message)
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
        return record


@pytest.mark.parametrize("formatter", [TextLines(), JsonLines(), TextLines(True), JsonLines(True)])
def test_no_value_splits_a_line_or_leaves_a_control_in_it(formatter: logging.Formatter) -> None:
    for record in (_record("call %s", FORGED_TOOL, tool=FORGED_TOOL, server="demo"), _raised(FORGED_TOOL)):
        line = formatter.format(record)
        assert "\n" not in line and "\r" not in line
        assert line.isascii() and line.isprintable(), line


def test_a_text_field_cannot_forge_another_field() -> None:
    """A tool named ``x outcome=allowed`` is one quoted field, never an ``outcome`` of its own."""
    line = TextLines().format(_record("call", tool="x outcome=allowed", outcome="denied", status=403))
    assert ' tool="x outcome=allowed" outcome=denied status=403' in line
    assert TextLines().format(_record("m", tool='a"b')).endswith('tool="a\\"b"')


def test_a_text_message_is_quoted_so_it_cannot_forge_fields() -> None:
    line = TextLines().format(_record("call %s", 'x" outcome=allowed'))
    assert line.split(" ", 3)[3] == '"call x\\" outcome=allowed"'


def test_a_json_line_keeps_the_values_exactly() -> None:
    parsed = json.loads(JsonLines().format(_record("call %s", FORGED_TOOL, tool=FORGED_TOOL, status=200,
                                                   duration_ms=1.5)))
    assert parsed["message"] == f"call {FORGED_TOOL}" and parsed["tool"] == FORGED_TOOL
    assert parsed["status"] == 200 and parsed["duration_ms"] == 1.5
    assert parsed["level"] == "info" and parsed["logger"] == "deputy.requests" and parsed["time"].endswith("Z")


def test_an_exception_is_one_line_without_its_traceback_unless_debug() -> None:
    record = _raised("boom")
    assert json.loads(JsonLines().format(record))["exception"] == "ValueError: boom"
    assert TextLines().format(record).endswith('exception="ValueError: boom"')
    traceback = json.loads(JsonLines(tracebacks=True).format(record))["exception"]
    assert traceback.startswith("Traceback (most recent call last):") and traceback.endswith("ValueError: boom")
    assert "\\n" in TextLines(tracebacks=True).format(record)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("uvicorn", "uvicorn.error", "uvicorn.asgi", *FLOORS)
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (own, own_level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate = own, propagate
        logger.setLevel(own_level)


@pytest.mark.usefixtures("logging_restored")
@pytest.mark.parametrize("level", ["debug", "info"])
def test_uvicorn_and_the_sdk_go_through_the_same_handler(level: str) -> None:
    import uvicorn

    configure_logging(level, "json")  # type: ignore[arg-type]
    uvicorn.Config(lambda: None, log_config=None, access_log=False)  # as deputy serve builds it
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("mcp.server.lowlevel").debug("Received message: secret arguments")
    logging.getLogger("mcp.server.lowlevel").info("Processing request")
    logging.getLogger("httpx").info("HTTP Request: POST http://upstream/?key=secret")
    logging.getLogger("deputy.gateway").debug("a debug line")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    messages = [line["message"] for line in lines]
    expected = ["Uvicorn running", "Processing request"] + (["a debug line"] if level == "debug" else [])
    assert messages == expected
    assert {line["logger"] for line in lines} <= {"uvicorn.error", "mcp.server.lowlevel", "deputy.gateway"}


@pytest.mark.parametrize("created", [0.0, 1_796_542_699.0, 1_796_542_699.0004999, 1_796_542_699.9995,
                                     1_796_542_699.9999995, 118_037_251.9999995, 4_102_444_799.999, 1_796_542_700.0005])
def test_the_time_is_the_records_own_to_the_millisecond_in_utc(created: float) -> None:
    """The date and time are formatted once per second and reused: a record of another second, or of the same
    second after one of another, still shows its own (what ``isoformat`` gives, rounded as ``fromtimestamp``)."""
    for before in (created - 1.5, created + 86_400.25, created):
        for formatter in (TextLines(), JsonLines()):
            formatter.format(_with_time(before))
        record = _with_time(created)
        want = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert TextLines().format(record).split(" ", 1)[0] == want
        assert json.loads(JsonLines().format(record))["time"] == want


def _with_time(created: float) -> logging.LogRecord:
    record = _record("m")
    record.created = created
    return record
