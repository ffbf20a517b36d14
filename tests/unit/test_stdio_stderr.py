"""A stdio server's stderr: drained whatever its lines, logged bounded and without controls (issue 12)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from deputy.gateway.stdio_stderr import LOGGED_BYTES, LineBudget, StderrLines, StderrRelay, drain_stderr


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
    with caplog.at_level(logging.INFO, logger="deputy.upstream.stderr"):
        await drain_stderr(stream, "flood")
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [f"{'a' * LOGGED_BYTES} … {10_000 - LOGGED_BYTES} bytes dropped", "after"]
    assert {getattr(record, "server", None) for record in caplog.records} == {"flood"}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_flood_is_logged_within_the_budget_and_what_is_left_out_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13: every line of a flood was logged; now a server logs at most its budget and a count of the rest."""
    clock = _Clock()
    relay = StderrRelay("flood", LineBudget(rate=10, burst=5, clock=clock))
    stream = asyncio.StreamReader()
    stream.feed_data(b"".join(b"line %d\n" % n for n in range(1000)))
    stream.feed_eof()
    with caplog.at_level(logging.INFO, logger="deputy.upstream.stderr"):
        await drain_stderr(stream, "flood", relay)
    assert [r.getMessage() for r in caplog.records] == [
        "line 0", "line 1", "line 2", "line 3", "line 4", "995 stderr lines not logged (more than 10 a second)"]
    assert getattr(caplog.records[-1], "dropped", None) == 995 and caplog.records[-1].levelno == logging.WARNING


def test_lines_are_logged_again_once_the_budget_refills_after_the_count() -> None:
    clock = _Clock()
    budget = LineBudget(rate=2, burst=2, clock=clock)
    assert [budget.take() for _ in range(5)] == [True, True, False, False, False]
    assert budget.dropped == 3
    clock.now = 0.5
    assert budget.take() and not budget.take()
    clock.now = 100.0
    assert [budget.take() for _ in range(3)] == [True, True, False], "never more than the burst saved"


def test_the_count_of_lines_left_out_comes_before_the_next_line_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    relay = StderrRelay("flood", LineBudget(rate=1, burst=1, clock=clock))
    with caplog.at_level(logging.INFO, logger="deputy.upstream.stderr"):
        for text in ("first", "lost", "lost too"):
            relay.line(text)
        clock.now = 1.0
        relay.line("after a second")
    assert [r.getMessage() for r in caplog.records] == [
        "first", "2 stderr lines not logged (more than 1 a second)", "after a second"]
