"""Refreshing one upstream connection from two workers on one SQLite database (``workers = N``): the lock file the
workers share (deputy.connections.refresh_lock) makes it one token request — without it each worker's single flight
is its own, both send the same refresh token, and an authorization server that rotates refresh tokens (this one,
oidc-provider, does) may revoke the family (RFC 9700 §4.14.2). Two Services on one SQLite file and one data
directory stand for two workers: two in-process single flights, two engines, one database.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deputy import clock
from deputy.connections.model import ConnectionNeeded
from deputy.connections.refresh_lock import held_across_processes, lock_path
from deputy.services import Services
from deputy.storage.connections import RefreshBusy
from tests.support.connections_service import Upstream, connected, ext, new_user, principal, settings_for, whoami
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["oauth_upstream"]  # the fixture, used by name below


@pytest.fixture
def vault_key() -> str:
    from deputy.connections.vault import new_key

    return new_key()


@pytest.fixture
async def workers(oauth_upstream: Upstream, tmp_path: Path, vault_key: str) -> AsyncIterator[list[Services]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}"
    opened = [Services.open(settings_for(tmp_path / name, tmp_path / "data", url, oauth_upstream[1], vault_key))
              for name in ("one", "two")]
    for worker in opened:  # one after the other: the first migrates
        await worker.start()
    yield opened
    for worker in opened:
        await worker.close()


async def test_two_workers_on_sqlite_refresh_one_connection_once(oauth_upstream: Upstream,
                                                                 workers: list[Services]) -> None:
    alice = await new_user(workers[0])
    await connected(oauth_upstream, workers[0], alice)
    with clock.frozen(clock.wall() + 400):  # due
        asked = oauth_upstream[0].token_requests()
        answers = await asyncio.gather(*(worker.connections.headers_for(ext(worker), principal(alice))
                                         for _ in range(5) for worker in workers))
        assert oauth_upstream[0].token_requests() == asked + 1
    assert not any(isinstance(answer, ConnectionNeeded) for answer in answers)
    assert len({tuple(answer) for answer in answers}) == 1  # type: ignore[arg-type]
    assert await whoami(oauth_upstream[1], answers[0]) == 200
    row = await workers[1].connections.parts.store.get(alice, "ext")
    assert row is not None and row.status == "active"


async def test_the_lock_file_is_private_and_named_by_a_digest(tmp_path: Path) -> None:
    # A user id or server name is never part of the path, whatever it holds.
    path = lock_path(tmp_path, "../../etc/passwd", "ext/..")
    assert path.parent == tmp_path / "run" and path.name.startswith("refresh-") and ".." not in path.name
    async with held_across_processes(tmp_path, "../../etc/passwd", "ext/..", wait=1.0):
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert lock_path(tmp_path, "a", "b\0c") != lock_path(tmp_path, "a\0b", "c")


async def test_a_refresh_held_elsewhere_past_the_wait_is_refresh_busy(tmp_path: Path) -> None:
    # Another open of the file stands for another worker (flock locks are per open file, not per process).
    async with held_across_processes(tmp_path, "alice", "ext", wait=1.0):
        with pytest.raises(RefreshBusy):
            async with held_across_processes(tmp_path, "alice", "ext", wait=0.2):
                pytest.fail("held twice")
    async with held_across_processes(tmp_path, "alice", "ext", wait=0.2):
        pass  # let go: free again


async def test_a_planted_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("kept")
    path = lock_path(tmp_path, "alice", "ext")
    path.parent.mkdir(mode=0o700)
    path.symlink_to(target)
    with pytest.raises(OSError):
        async with held_across_processes(tmp_path, "alice", "ext", wait=0.2):
            pytest.fail("followed the link")
    assert target.read_text() == "kept"
