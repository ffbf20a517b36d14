"""The back-off after failed sign-ins (issue 11, finding 8): it grows, it is per address and name, it forgets. And a
sliding window's attempts still in flight (:meth:`SlidingWindowLimiter.blocked`'s ``pending``, the identity
providers' sign-in throttle): requests sent all at once meet the limit as requests sent one after another do."""

from __future__ import annotations

from deputy.rate_limit import PENDING_RETRY, WINDOW, FailureBackoff, SlidingWindowLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_doubles_with_each_failure_after_the_free_ones_up_to_the_cap() -> None:
    clock = Clock()
    backoff = FailureBackoff(free=5, max_wait=60.0, clock=clock)
    waits = []
    for _ in range(13):
        backoff.failed("10.0.0.1", "bob")
        wait = backoff.wait("10.0.0.1", "bob")
        waits.append(wait)
        clock.now += wait or 0.0  # the guesser waits it out, then fails again
    assert waits == [None] * 5 + [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_a_failure_counts_only_for_its_address_and_name() -> None:
    clock = Clock()
    backoff = FailureBackoff(free=0, clock=clock)
    backoff.failed("10.0.0.1", "bob")
    assert backoff.wait("10.0.0.1", "bob") == 1.0
    assert backoff.wait("10.0.0.2", "bob") is None, "the name's owner elsewhere is not held up"
    assert backoff.wait("10.0.0.1", "alice") is None


def test_the_wait_runs_out_and_a_success_or_a_quiet_spell_forgets_the_failures() -> None:
    clock = Clock()
    backoff = FailureBackoff(free=0, forget_after=900.0, clock=clock)
    backoff.failed("a", "bob")
    clock.now += 1.5
    assert backoff.wait("a", "bob") is None, "a back-off, not a lock: the wait ends"
    backoff.failed("a", "bob")
    assert backoff.wait("a", "bob") == 2.0
    backoff.succeeded("a", "bob")
    assert backoff.wait("a", "bob") is None
    backoff.failed("a", "bob")
    backoff.failed("a", "bob")
    clock.now += 901.0
    backoff.failed("a", "bob")
    assert backoff.wait("a", "bob") == 1.0, "failures older than forget_after no longer count"


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
