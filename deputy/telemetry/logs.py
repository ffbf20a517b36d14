"""Deputy's logs: one line per event on standard error, as text or as JSON objects (one per line).

Nothing logged carries a token, a secret, a password or an argument value: loggers are given names, codes and
counts, never what a client sent.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# Fields a record may carry besides the message (``log.info(..., extra={"server": ...})``), in output order.
FIELDS = ("server", "method", "tool", "outcome", "status", "duration_ms", "decision_id", "trace_id")


class JsonLines(logging.Formatter):
    """A JSON object per record: time, level, logger, message and the :data:`FIELDS` it carries."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


class TextLines(logging.Formatter):
    """``TIME LEVEL logger: message key=value ...``, one line: a message's own line breaks are escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS
                          if getattr(record, name, None) is not None)
        text = f"{text} {fields}" if fields else text
        return text if record.exc_info else text.replace("\r", "\\r").replace("\n", "\\n")


def configure_logging(level: LogLevel = "info", log_format: LogFormat = "text") -> None:
    """Send every logger's records at ``level`` and above to standard error in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
