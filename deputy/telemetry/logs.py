"""Deputy's logs: one line per event on standard error, as text or as JSON objects (RFC 8259, one per line).

Nothing logged carries a token, a secret, a password or an argument value: loggers are given names, codes and
counts, never what a client sent. What others chose and Deputy does log — a tool or client name, a server's
stderr, an exception's message — can neither split a record nor forge one: every record is exactly one
physical line. In text, the message and every field value that is not plain printable ASCII without a space,
``"``, ``=`` or ``\\`` is quoted: ``\\`` and ``"`` escaped, then every character that would act on a terminal
shown as its escape (:func:`deputy.display_text.visible`: line feeds, carriage returns, ``ESC``, C1 and bidi
controls), so ``tool="x outcome=allowed"`` stays one field and one line. Text that was already escaped where it
came from (a stdio server's stderr) shows its backslashes escaped once more. In JSON, ``json.dumps`` with
``ensure_ascii`` escapes every control and every non-ASCII character (RFC 8259 §7) and ``DEL``, which it leaves
raw, is escaped here.

Exceptions: at ``debug`` a record's traceback is kept (escaped onto its one line); at ``info`` and above only
``Type: message`` of the exception. Third-party loggers go through the same handler and format: uvicorn's
follow the level (its access log stays off); the MCP SDK's never below ``info`` (its debug lines carry whole
JSON-RPC messages: arguments and results), its client's (Deputy reading an upstream's tools) at ``warning`` (it
logs the upstream's session id at ``info``); httpx, httpcore (the SDK's httpx2, httpcore2 too) and SQLAlchemy at
``warning`` (request URLs and headers, SQL parameters).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

from deputy.display_text import visible

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# Fields a record may carry besides the message (``log.info(..., extra={"server": ...})``), in output order.
FIELDS = ("server", "method", "tool", "outcome", "status", "duration_ms", "decision_id", "trace_id", "dropped")

# Loggers of libraries whose own level is set apart from Deputy's: the minimum level each may log at.
FLOORS = {"mcp": logging.INFO, "mcp.client": logging.WARNING, "httpx": logging.WARNING,
          "httpcore": logging.WARNING, "httpx2": logging.WARNING, "httpcore2": logging.WARNING,
          "sqlalchemy": logging.WARNING, "alembic": logging.WARNING}
# uvicorn's loggers: they bring handlers of their own (uvicorn.config.LOGGING_CONFIG); here they propagate instead.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted: one datetime per second


def _timestamp(record: logging.LogRecord) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC) of the record: what ``isoformat(timespec="milliseconds")`` gives, the date
    and time formatted once per second (a line per request made this a cost of every call)."""
    global _second
    fraction, whole = math.modf(record.created)  # split and rounded as datetime.fromtimestamp does
    second, micro = divmod(int(whole) * 1_000_000 + round(fraction * 1e6), 1_000_000)
    known = _second
    if known[0] != second:
        known = _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{known[1]}.{micro // 1000:03d}Z"


def exception_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, or ``Type`` alone when it has no message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Lines(logging.Formatter):
    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def _exception(self, record: logging.LogRecord) -> str | None:
        if not record.exc_info or record.exc_info[1] is None:
            return None
        if self.tracebacks:
            return self.formatException(record.exc_info).rstrip("\n")
        return exception_line(record.exc_info[1])


class JsonLines(_Lines):
    """A JSON object per record: time, level, logger, message, the :data:`FIELDS` it carries and its exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, int | float | bool) else str(value)
        exception = self._exception(record)
        if exception is not None:
            line["exception"] = exception
        # ensure_ascii escapes C0, C1, bidi and every other non-ASCII character; DEL is ASCII, so escaped here.
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"), default=str).replace("\x7f", "\\u007f")


def _quoted(value: str) -> str:
    """``value`` in double quotes: ``\\`` and ``\"`` first, then each acting character as its escape."""
    return '"' + visible(value.replace("\\", "\\\\").replace('"', '\\"')) + '"'


# Plain: printable ASCII (U+0021..U+007E), not ``"``, ``=`` or ``\\``; one or more of them.
_PLAIN = re.compile(r'[!#-<>-\[\]-~]+')


def text_value(value: object) -> str:
    """A field value on a text line: as it is when it is plain printable ASCII, else quoted and escaped."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return _quoted(text)


class TextLines(_Lines):
    """``TIME LEVEL logger "message" key=value ... exception="..."``: one line, whatever the values hold."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, _quoted(record.getMessage())]
        parts += [f"{name}={text_value(getattr(record, name))}" for name in FIELDS
                  if getattr(record, name, None) is not None]
        exception = self._exception(record)
        if exception is not None:
            parts.append(f"exception={_quoted(exception)}")
        return " ".join(parts)


def configure_logging(level: LogLevel = "info", log_format: LogFormat = "text") -> logging.Handler:
    """Send every logger's records at ``level`` and above to standard error in ``log_format``; the handler.

    For uvicorn's loggers to come here, uvicorn must not configure its own: ``uvicorn.Config(..., log_config=None)``
    with no ``log_level`` (uvicorn's access log stays off: ``access_log=False``).
    """
    handler = logging.StreamHandler(sys.stderr)
    tracebacks = level == "debug"
    handler.setFormatter(JsonLines(tracebacks) if log_format == "json" else TextLines(tracebacks))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(threshold)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    for name, floor in FLOORS.items():
        logging.getLogger(name).setLevel(max(threshold, floor))
    return handler
