"""One worker of ``deputy serve --workers N`` (:mod:`deputy.cli.workers`): a whole Deputy on the shared socket.

The worker learns who it is (:func:`deputy.worker_identity.set_current`) before it builds the application, so its
stdio sessions carry its index and the application routes another worker's sessions to it
(:mod:`deputy.gateway.worker_routing`). It runs the application's lifespan itself, as the single process does
(:class:`~deputy.cli.serving.Lifespan`), then listens on its private Unix socket (``run/worker-<index>.sock``,
0600 in a 0700 directory) and tells the parent it serves; a start-up failure is sent to the parent as the
operator's one line and exit code (:func:`deputy.cli.failures.describe`), for the parent to report once.

With ``[metrics] listen`` set, worker *i* serves ``/metrics`` on the configured port + *i* (each worker counts its
own requests; a port of 0 gives each worker a free one, logged at start), so Prometheus scrapes every worker.

The worker watches its pipe to the parent: when the parent is gone (killed, so it never stopped its workers), the
pipe ends and the worker stops itself as on SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, cast

from deputy.cli.failures import DEBUG_HINT, EXIT_OTHER, StartupFailure, describe

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.listener import ListenerBudget
    from deputy.telemetry.logs import LogLevel

log = logging.getLogger(__name__)

UNIX_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class WorkerStart:
    """What a worker is given: the settings, its place, the log level and its share of the
    listener."""

    settings: Settings
    index: int
    run_dir: Path
    log_level: str
    budget: ListenerBudget


def worker_main(start: WorkerStart, shared: socket.socket, parent: Connection, theirs: tuple[int, ...]) -> None:
    """The process's entry point (``multiprocessing`` target), in a process forked from the supervisor; ``theirs``
    are the supervisor's descriptors that this process must not keep."""
    for descriptor in theirs:
        with contextlib.suppress(OSError):
            os.close(descriptor)
    signal.set_wakeup_fd(-1)  # the supervisor's, inherited: its loop is not this process's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The supervisor passes SIGHUP on to every worker: the policies reload it where there are policies (their
    # handler replaces this one); elsewhere, and while starting, it must not end the worker and its sessions.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from deputy.cli.serving import run_async
    from deputy.telemetry.logs import configure_logging
    from deputy.worker_identity import WorkerIdentity, set_current

    configure_logging(cast("LogLevel", start.log_level), start.settings.telemetry.log_format)
    set_current(WorkerIdentity(start.index, start.settings.workers, start.run_dir))
    code = 0
    try:
        run_async(_serve(start, shared, parent))
    except _StartFailed as failed:
        code = failed.code
    sys.exit(code)


class _StartFailed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings as worker ``index`` uses them: its own metrics port (configured port + index)."""
    listen = settings.telemetry.metrics_listen
    if listen is None or listen[1] == 0:
        return settings
    telemetry = dataclasses.replace(settings.telemetry, metrics_listen=(listen[0], listen[1] + index))
    return dataclasses.replace(settings, telemetry=telemetry)


def bind_unix(path: Path) -> socket.socket:
    """The worker's private socket at ``path`` (0600), replacing a stale one left by the worker it replaces."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # created 0600: no window in which another user could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(previous)
    sock.listen(UNIX_BACKLOG)
    return sock


async def _serve(start: WorkerStart, shared: socket.socket, parent: Connection) -> None:
    from deputy.app import create_app
    from deputy.cli.serving import Lifespan, Server, uvicorn_config
    from deputy.worker_identity import current

    identity = current()
    assert identity is not None
    settings = worker_settings(start.settings, start.index)
    lifespan: Lifespan | None = None
    private: socket.socket | None = None
    try:
        target = create_app(settings)
        lifespan = Lifespan(target)
        await lifespan.startup()
        private = bind_unix(identity.socket_path(start.index))
    except Exception as exc:
        failure = _failure(exc, start.log_level, settings.database_url)
        with contextlib.suppress(Exception):
            if lifespan is not None:
                await lifespan.shutdown()
        with contextlib.suppress(OSError):
            parent.send(("failed", failure.code, failure.message))
        raise _StartFailed(failure.code) from None
    parent.send(("ready",))
    # uvicorn handles SIGTERM and SIGINT while it serves, then raises the signal again under the handlers it found:
    # ignored, the worker ends by its own exit (and removes its socket) rather than by the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_stop_when_parent_ends, args=(parent,), daemon=True,
                     name="parent-watch").start()
    try:
        await Server(uvicorn_config(target, settings.limits, start.budget), lifespan).serve(
            sockets=[shared, private])
    finally:
        await lifespan.shutdown()
        private.close()
        with contextlib.suppress(FileNotFoundError):
            identity.socket_path(start.index).unlink()


def _failure(exc: BaseException, log_level: str, database_url: str) -> StartupFailure:
    """What the parent prints: the same line as a single process's failure (deputy.cli.failures)."""
    if log_level == "debug":
        traceback.print_exception(exc, file=sys.stderr)
    failure = describe(exc, database_url)
    if failure is not None:
        return failure
    message = str(exc).strip().splitlines()
    shown = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    return StartupFailure(EXIT_OTHER, f"Deputy could not start: {shown}; {DEBUG_HINT}")


def _stop_when_parent_ends(parent: Connection) -> None:
    """Block on the parent's pipe; when it ends (the parent is gone), stop as on SIGTERM."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            parent.recv()
    os.kill(os.getpid(), signal.SIGTERM)
