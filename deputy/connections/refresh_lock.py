"""The refresh of one upstream connection held across the processes of one Deputy on SQLite (``workers = N``).

Upstream refresh tokens are often rotated on use (RFC 9700 §4.14.2; OAuth 2.1 §4.3.1): two workers refreshing one
connection with the same refresh token would have the second refused, or taken as reuse and the whole family
revoked. On PostgreSQL the refresh runs under the connection's row lock (:mod:`deputy.storage.connection_refresh`);
SQLite has no row locks, and holding its one write lock across an upstream request would stall every other write.
So on SQLite the refresh is held by an advisory lock (``flock(2)``) on a file of its own, shared by every process
on this machine that opens the same data directory — which, with SQLite, is every process of the Deputy.

- The file is ``data_dir/run/refresh-<hex>.lock``: the directory 0700 (as for the workers' sockets), the file 0600,
  its name the SHA-256 of the connection's key (user id, server name) — nothing the user chose becomes part of a
  path. Files are kept, one per connection that has refreshed (empty): removing one while another process waits on
  it would let a third lock a new file of the same name.
- Waiting never blocks the event loop: the lock is tried without blocking and tried again after a short sleep,
  until ``wait`` seconds have passed; then :class:`~deputy.storage.connection_refresh.RefreshBusy`, as for a
  refresh that waited too long in this process (the caller fails closed or uses the still-valid token).
- The holder reads the connection again once it has the lock (the store's ``refreshing`` does): the process before
  it may have refreshed it already.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from deputy.storage.connections import RefreshBusy

RUN_DIR = "run"  # under data_dir, as deputy.cli.workers' private sockets: 0700
FIRST_PAUSE = 0.01  # seconds before trying a held lock again; doubled each time, up to LONGEST_PAUSE
LONGEST_PAUSE = 0.2


def lock_path(data_dir: Path, user_id: str, server: str) -> Path:
    """The lock file of (``user_id``, ``server``): named by a digest, so no part of the path is the user's."""
    digest = hashlib.sha256(json.dumps([user_id, server]).encode()).hexdigest()  # one key, one encoding
    return data_dir / RUN_DIR / f"refresh-{digest}.lock"


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=False, exist_ok=True)
    os.chmod(path.parent, 0o700)  # an existing directory too: the workers' sockets live there
    # O_NOFOLLOW: a symbolic link planted in its place is refused rather than followed.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


@contextlib.asynccontextmanager
async def held_across_processes(data_dir: Path, user_id: str, server: str, wait: float) -> AsyncIterator[None]:
    """Hold (``user_id``, ``server``)'s refresh lock file for the block; :class:`RefreshBusy` after ``wait`` s."""
    fd = _open_lock_file(lock_path(data_dir, user_id, server))
    try:
        deadline = time.monotonic() + wait  # the real clock: a test's frozen one must not make this wait forever
        pause = FIRST_PAUSE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RefreshBusy(user_id, server, wait) from None
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, LONGEST_PAUSE)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)  # also lets go of the lock, should unlocking have failed
