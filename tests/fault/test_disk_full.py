"""Disk full: Deputy's file writes fail with EFBIG; calls are refused, none forwarded unrecorded, it lives on.

The running ``deputy serve`` gets a file-size limit of 0 bytes (``prlimit`` on its pid, RLIMIT_FSIZE;
Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing the process), as a
full disk would make every growing write fail — the SQLite database and its WAL, and Deputy's own log
file. On SQLite the audit appends then fail, so calls must be refused (503, JSON-RPC error); on PostgreSQL
only the log file is Deputy's to write, and calls go on. Either way nothing reaches the upstream without a
committed allowing ``decision``, the process stays up, and once the limit is lifted calls succeed again
and the log verifies.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from tests.fault.harness import FaultyDeputy, Load, eventually_answered, faulty_deputy, marker

SIGXFSZ_BIT = 1 << (25 - 1)  # SIGXFSZ is signal 25 on Linux; SigIgn is a mask with bit n-1 for signal n


@pytest.fixture(scope="module")
def faulty(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyDeputy]:
    with faulty_deputy(backend, tmp_path_factory.mktemp(f"fault-disk-{backend}")) as started:
        yield started


def ignores_sigxfsz(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & SIGXFSZ_BIT)
    return False


async def test_a_full_disk_refuses_calls_and_the_process_lives(faulty: FaultyDeputy, backend: str) -> None:
    pid = faulty.pid
    assert ignores_sigxfsz(pid), "deputy serve would be killed by SIGXFSZ rather than see EFBIG"
    prefix = marker("disk-full")
    load = Load(faulty, prefix, clients=4)
    await load.start()
    await load.until(lambda: len(load.answered) >= 4, "calls to flow")
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        if backend == "sqlite":
            await load.until(lambda: len(load.refused) >= 3, "calls refused while the disk is full")
        else:
            await load.until_more(lambda: load.responses, 8, "calls while the log file cannot grow")
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    await load.stop()
    await eventually_answered(faulty, f"{prefix} after")

    print(f"\n[{backend}] disk full: {len(load.answered)} answered, {len(load.refused)} refused, "
          f"{load.broken} connection errors, {len(faulty.forwarded(prefix))} forwarded")
    assert faulty.alive()
    assert load.unexpected == [], load.unexpected[:5]
    assert load.broken == 0, "Deputy dropped connections instead of answering"
    assert not set(load.refused) & set(faulty.forwarded(prefix)), "a refused call reached the upstream"
    missing = await faulty.check_log(prefix)
    assert missing == [], f"forwarded without a committed allowing decision: {missing[:5]}"
