"""The one clock Deputy reads: wall-clock time for claims and records, and a monotonic reading for intervals.

Every "what time is it" in the package goes through here, so a test sets the
time with :func:`frozen` (and moves it with :meth:`FrozenClock.advance`) instead
of sleeping or patching the standard library. Times on the wire are seconds
since the epoch, as JWT's NumericDate (RFC 7519 §2); audit records carry
milliseconds.

A clock is per process: a Deputy started as a subprocess reads its own system clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_NS = 1_000_000_000


class Clock:
    """The system's clocks."""

    def time_ns(self) -> int:
        """Nanoseconds since the epoch."""
        return time.time_ns()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        return time.monotonic()


class FrozenClock(Clock):
    """A clock that moves only when told to; both readings move together."""

    def __init__(self, at: float) -> None:
        self._ns = _ns(at)
        # From the system's reading, so intervals begun before the freeze neither run backwards nor stall.
        self._monotonic = time.monotonic()

    def time_ns(self) -> int:
        return self._ns

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock's monotonic reading cannot go back; use set() for the wall clock")
        self._ns += _ns(seconds)
        self._monotonic += seconds

    def set(self, at: float) -> None:
        """Put the wall clock at ``at`` (seconds since the epoch); the monotonic reading stays where it is."""
        self._ns = _ns(at)


def _ns(seconds: float) -> int:
    # Whole seconds apart from the fraction: a double holds today's time in nanoseconds only to ~256 ns.
    whole = int(seconds)
    return whole * _NS + round((seconds - whole) * _NS)


_clock: Clock = Clock()


def now() -> int:
    """Whole seconds since the epoch (a JWT NumericDate, RFC 7519 §2)."""
    return _clock.time_ns() // _NS


def wall() -> float:
    """Seconds since the epoch, with the fraction."""
    ns = _clock.time_ns()
    return ns // _NS + ns % _NS / _NS


def now_ms() -> int:
    """Milliseconds since the epoch, as audit records carry them."""
    return _clock.time_ns() // 1_000_000


def monotonic() -> float:
    return _clock.monotonic()


@contextmanager
def frozen(at: float | None = None) -> Iterator[FrozenClock]:
    """Within the block, the package reads a :class:`FrozenClock` started at ``at`` (default: the present)."""
    global _clock
    previous = _clock
    clock = FrozenClock(time.time() if at is None else at)
    _clock = clock
    try:
        yield clock
    finally:
        _clock = previous
