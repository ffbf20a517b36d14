"""A stdio server's stderr: drained whatever its lines, logged bounded and without controls (issue 12)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from deputy.gateway.stdio_stderr import LOGGED_BYTES, StderrLines, drain_stderr


def test_a_long_line_is_logged_bounded_with_what_was_dropped() -> None:
    lines = StderrLines()
    assert lines.feed(b"x" * (5 * 1024 * 1024)) == []
    assert lines.feed(b"yy\nshort") == [f"{'x' * LOGGED_BYTES} … {5 * 1024 * 1024 + 2 - LOGGED_BYTES} bytes dropped"]
    assert lines.feed(b"\r\n") == ["short"]
    assert lines.end() == []


def test_controls_are_shown_as_escapes() -> None:
    """Issue 12: a server's stderr reached the log as it was: an escape sequence or a carriage return could
    hide or forge lines of Deputy's own log."""
    (line,) = StderrLines().feed(b"\x1b[2J\rINFO forged\x07 \xe2\x80\xae\n")
    assert line == "\\x1b[2J\\rINFO forged\\x07 \\u202e"


def test_the_last_line_without_a_line_feed_is_logged() -> None:
    lines = StderrLines()
    lines.feed(b"no newline")
    assert lines.end() == ["no newline"]


async def test_the_reader_drains_past_a_line_over_the_stream_limit(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12: readline() raised on a line over the stream's limit and the reader stopped; now it reads on."""
    stream = asyncio.StreamReader(limit=1024)
    stream.feed_data(b"a" * 10_000 + b"\n")
    stream.feed_data(b"after\n")
    stream.feed_eof()
    with caplog.at_level(logging.INFO, logger="deputy.gateway.stdio_upstream"):
        await drain_stderr(stream, "flood")
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [f"stdio server flood: {'a' * LOGGED_BYTES} … {10_000 - LOGGED_BYTES} bytes dropped",
                      "stdio server flood: after"]
