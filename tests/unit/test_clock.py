"""The package's one clock: a frozen clock is what every reading sees, moves only when told, and goes away after."""

from __future__ import annotations

import time

import pytest

from deputy import clock
from deputy.clock import FrozenClock


def test_a_frozen_clock_moves_only_when_advanced() -> None:
    with clock.frozen(1_700_000_000.25) as frozen:
        assert (clock.now(), clock.wall(), clock.now_ms()) == (1_700_000_000, 1_700_000_000.25, 1_700_000_000_250)
        started = clock.monotonic()
        assert clock.now() == 1_700_000_000 and clock.monotonic() == started
        frozen.advance(2.5)
        assert (clock.now(), clock.now_ms()) == (1_700_000_002, 1_700_000_002_750)
        assert clock.monotonic() == started + 2.5


def test_setting_the_wall_clock_leaves_intervals_alone() -> None:
    with clock.frozen(1_700_000_000) as frozen:
        started = clock.monotonic()
        frozen.set(1_600_000_000)
        assert clock.now() == 1_600_000_000 and clock.monotonic() == started


def test_a_monotonic_reading_never_goes_back() -> None:
    with clock.frozen() as frozen, pytest.raises(ValueError):
        frozen.advance(-1)


def test_freezing_ends_with_the_block_even_on_an_error() -> None:
    with pytest.raises(RuntimeError), clock.frozen(0):
        raise RuntimeError
    before = time.time_ns() // 1_000_000
    reading = clock.now_ms()
    assert before <= reading <= time.time_ns() // 1_000_000, "the system clock again, not the frozen epoch"



def test_freezing_starts_at_the_present_by_default() -> None:
    before = time.time()
    with clock.frozen() as frozen:
        assert isinstance(frozen, FrozenClock)
        assert before <= clock.wall() <= time.time()
