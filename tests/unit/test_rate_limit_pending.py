"""Attempts still in flight take their place in a sliding window (:meth:`SlidingWindowLimiter.blocked`'s
``pending``): requests sent all at once meet the limit as requests sent one after another do."""

from __future__ import annotations

from deputy.rate_limit import PENDING_RETRY, WINDOW, SlidingWindowLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pending_attempts_fill_the_window_before_any_is_counted() -> None:
    limiter = SlidingWindowLimiter(3, Clock())
    assert limiter.blocked("a", pending=2) is None
    assert limiter.blocked("a", pending=3) == PENDING_RETRY  # nothing counted yet: ask again soon
    assert limiter.blocked("b", pending=0) is None  # another address has its own budget


def test_pending_and_counted_attempts_add_up() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(3, clock)
    limiter.record("a")
    clock.now += 10
    assert limiter.blocked("a", pending=1) is None
    assert limiter.blocked("a", pending=2) == WINDOW - 10  # until the counted one leaves the window
    clock.now += WINDOW
    assert limiter.blocked("a", pending=2) is None
