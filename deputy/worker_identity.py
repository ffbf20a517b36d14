"""Which of ``deputy serve --workers N``'s processes this is, and which worker owns a stdio session.

With one worker nothing here is set and every function answers as for a single process. With N workers
the supervisor sets each worker's identity before it builds the application (:func:`set_current`).

A stdio upstream's session is a child process of the worker that started it, so a request for that
session must reach that worker. The worker's index travels in the session id Deputy makes for a stdio
session (``w<index>-<random>``, :func:`stdio_session_prefix`); the id the client sees is that id with
its HMAC tag (:mod:`deputy.gateway.sessions`), so a client cannot move a session to another worker:
an edited prefix no longer verifies and is answered like an unknown session. :func:`owner_of` reads the
index back so a worker can pass the request to the owner over the owner's private Unix socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_PREFIX = re.compile(r"w(\d{1,4})-")


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    index: int  # 0-based
    count: int
    run_dir: Path  # where each worker's private Unix socket lives

    def socket_path(self, index: int) -> Path:
        return self.run_dir / f"worker-{index}.sock"


_current: WorkerIdentity | None = None


def set_current(identity: WorkerIdentity | None) -> None:
    global _current
    _current = identity


def current() -> WorkerIdentity | None:
    return _current


def stdio_session_prefix() -> str:
    """The start of every stdio session id this worker makes: empty with one worker."""
    return "" if _current is None else f"w{_current.index}-"


def owner_of(outward_session_id: str) -> int | None:
    """The index of the worker that owns a stdio session, from the id the client sent; None if the id names none.

    Only the shape is read here; whether the id is genuine is decided by the owner, which checks its tag.
    """
    match = _PREFIX.match(outward_session_id)
    if match is None or _current is None:
        return None
    index = int(match.group(1))
    return index if index < _current.count else None
