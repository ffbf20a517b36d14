"""``kill -9`` twenty times under load: no call reaches the upstream without a durable record that allowed it.

Four clients call ``echo`` (each with a text of its own) through a Deputy with audit and Cedar policies on;
once a few more calls have reached the upstream, Deputy is SIGKILLed mid-load — no shutdown handler, no
last checkpoint — and started again on the same database and data directory. Twenty times, on SQLite and on
PostgreSQL. Then the log must verify (recomputed here, and by ``deputy audit verify``), and every call the
upstream received must have an allowing ``decision`` record that was already committed when it arrived
(Deputy design, "Audit model": a record of an allowed call is durable before the call is forwarded).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fault.harness import FaultyDeputy, Load, eventually_answered, faulty_deputy, marker

KILLS = 20
FORWARDED_PER_ROUND = 3  # calls the upstream must have seen in a round before the kill: load, not idle


@pytest.fixture(scope="module")
def faulty(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyDeputy]:
    with faulty_deputy(backend, tmp_path_factory.mktemp(f"fault-kill-{backend}")) as started:
        yield started


async def test_twenty_kills_under_load_leave_no_forwarded_call_unrecorded(faulty: FaultyDeputy,
                                                                          backend: str) -> None:
    prefix = marker("kill")
    answered = refused = broken = 0
    for round_ in range(KILLS):
        load = Load(faulty, f"{prefix} r{round_}", clients=4, until_gone=True)
        await load.start()
        await load.until_more(lambda: len(faulty.forwarded(prefix)), FORWARDED_PER_ROUND,
                              f"round {round_}: {FORWARDED_PER_ROUND} forwarded calls")
        faulty.killable.kill()
        await load.stop()
        assert load.unexpected == [], load.unexpected
        answered, refused, broken = answered + len(load.answered), refused + len(load.refused), broken + load.broken
        assert set(load.answered) <= set(faulty.forwarded(prefix)), "a call was answered but never forwarded"
        faulty.killable.start()

    forwarded = faulty.forwarded(prefix)
    assert len(set(forwarded)) == len(forwarded), "a call was forwarded twice"
    missing = await faulty.check_log(prefix)
    print(f"\n[{backend}] kill -9 x{KILLS}: {len(forwarded)} calls forwarded, {answered} answered, "
          f"{refused} refused, {broken} cut off by a kill; {len(missing)} forwarded without a durable record")
    assert missing == [], f"{len(missing)} forwarded calls lack a committed allowing decision: {missing[:5]}"
    await eventually_answered(faulty, f"{prefix} after")
