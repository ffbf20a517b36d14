"""``deputy serve --workers N``: N processes serving one listening socket, one database, one audit log.

The parent does once what must happen once, before any worker exists, so that workers never race to create a
file or a table: the configuration is checked, the data directory written, the socket bound (with the listener's
budget shared between the workers, :func:`worker_budget`), and what the workers share is created once —
migrations, the token signing keys, the audit log's key, the session key (:func:`prepare_shared_state`; nothing is
started there: a background task stopped at once could leave a transaction, and SQLite's one write lock, held in
a process that lives on). Then it starts N workers and waits until each has started its application or failed; a
failure is reported once, as a single-process start-up failure is (:mod:`deputy.cli.failures`), the other workers
are stopped and the parent exits with its code. Only then is the banner printed, naming the worker count.

Workers are forked from the parent (``multiprocessing`` *fork*) once it has done that start-up and let go of
everything it opened: its storage is closed and its event loop ended, so a worker inherits no thread, no database
connection, no loop — only imported code (shared copy-on-write, and a worker or its replacement starts in a second
instead of importing Deputy afresh: several seconds on a loaded machine), the bound socket and its pipe to the
parent. The parent never runs anything else, so a replacement forked later starts from the same clean state. A
worker first puts back the signal handling the parent set up for itself (:mod:`deputy.cli.worker_process`).

Running, the parent restarts a worker that dies (logged, with a growing pause while it keeps failing to start),
passes SIGHUP on to every worker (each reloads its policies), and on SIGTERM or SIGINT stops them all gracefully
(SIGTERM each, SIGKILL what is left after :data:`STOP_GRACE` seconds), then ends by the signal it got, as a
single-process ``deputy serve`` does.

uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``) is not used: its workers have no index (a replacement
is anonymous), while stdio sessions and the private sockets that reach them are named by the worker's index
(:mod:`deputy.worker_identity`); SIGTTIN/SIGTTOU change its worker count, which the session ids depend on; and it
turns SIGHUP into restarting every worker, where Deputy's SIGHUP reloads policies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deputy.cli.failures import EXIT_OTHER, StartupFailure
from deputy.cli.worker_process import WorkerStart, worker_main

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.listener import ListenerBudget

log = logging.getLogger(__name__)

RUN_DIR = "run"  # under data_dir (0700): the workers' private Unix sockets, the refresh lock files (deputy.connections)
STOP_GRACE = 30.0  # seconds a stopping worker has to finish (uvicorn's 5 s of requests, then the app's shutdown)
RESTART_PAUSE_MAX = 60.0  # seconds; the pause before restarting a worker doubles while it fails to start
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_budget(budget: ListenerBudget, workers: int) -> ListenerBudget:
    """Each worker's part of the listener's connections: ``[limits] max_connections`` is what the whole Deputy
    holds open. The backlog is the shared socket's own."""
    from deputy.listener import MIN_CONNECTIONS, ListenerBudget

    return ListenerBudget(max(MIN_CONNECTIONS, budget.max_connections // workers), budget.backlog)


def prepare_run_dir(data_dir: Path) -> Path:
    """``data_dir/run`` (0700), emptied of the sockets a previous run left behind."""
    run_dir = data_dir / RUN_DIR
    run_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(run_dir, 0o700)  # an existing directory too: the sockets reach workers without a token check first
    for stale in run_dir.glob("worker-*.sock"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return run_dir


async def prepare_shared_state(settings: Settings) -> None:
    """Create what the workers share and must not race to create: the token signing keys, the audit log's key and
    the session key (files in the data directory), and the schema (migrations). Nothing is started: the audit log's
    checkpointer, the clients the configuration declares and everything else a process runs are each worker's."""
    import deputy.app  # noqa: F401 - imported once here, where every worker forked later shares it
    from deputy.gateway.sessions import SessionBinder
    from deputy.services import Services

    services = Services.open(settings)  # token signing keys and the audit key are created here if missing
    SessionBinder.from_data_dir(settings.data_dir)
    try:
        await services.database.migrate()
    finally:
        await services.database.dispose()  # no connection, thread or task is left for the workers to inherit


class _Worker:
    """One worker slot: its index, the process filling it now, and the parent's end of its pipe."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.status: Connection | None = None
        self.ready = False
        self.failures = 0  # start-ups failed in a row
        self.restart_at: float | None = None


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket, budget: ListenerBudget, log_level: str) -> None:
        self.settings = settings
        self.sock = sock
        self.budget = worker_budget(budget, settings.workers)
        self.log_level = log_level
        self.run_dir = prepare_run_dir(settings.data_dir)
        self.workers = [_Worker(index) for index in range(settings.workers)]
        self.context = multiprocessing.get_context("fork")
        self.stop_signal: int | None = None
        self._signals: list[int] = []

    def start(self) -> None:
        """Start every worker and wait until each serves; the first failure stops them all and is raised."""
        self._catch_signals()
        for worker in self.workers:
            self._spawn(worker)
        pending = list(self.workers)
        while pending:
            if self._handle_signals():
                self.stop()
                return
            for worker in list(pending):
                outcome = self._poll_start(worker, timeout=0.05)
                if outcome is None:
                    continue
                pending.remove(worker)
                if isinstance(outcome, StartupFailure):
                    self.stop()
                    raise outcome

    def serve(self) -> None:
        """Keep the workers running until a stopping signal; then stop them all."""
        while self.stop_signal is None:
            if self._handle_signals():
                break
            waiting: list[Any] = [self._wakeup_r]
            for worker in self.workers:
                if worker.process is not None:
                    waiting.append(worker.process.sentinel)
                    if not worker.ready and worker.status is not None:
                        waiting.append(worker.status)
            wait(waiting, timeout=0.5)
            with contextlib.suppress(BlockingIOError, OSError):
                self._wakeup_r.recv(512)
            self._tend()
        self.stop()

    def stop(self) -> None:
        """SIGTERM every worker; SIGKILL those still there after :data:`STOP_GRACE` seconds."""
        running = [w.process for w in self.workers if w.process is not None and w.process.is_alive()]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker process %s did not stop within %.0f s: killed", process.pid, STOP_GRACE)
                process.kill()
                process.join()
        for worker in self.workers:
            worker.process = None
            if worker.status is not None:
                worker.status.close()
                worker.status = None

    def _spawn(self, worker: _Worker) -> None:
        parent_end, child_end = self.context.Pipe(duplex=True)
        start = WorkerStart(self.settings, worker.index, self.run_dir, self.log_level, self.budget)
        # What the parent holds for itself and the other workers is not this worker's: closed in it at once, so that
        # another worker's pipe ends when the parent does (its only other holder), and signals wake only the parent.
        theirs = [w.status.fileno() for w in self.workers if w.status is not None and w is not worker]
        theirs += [self._wakeup_r.fileno(), self._wakeup_w.fileno(), parent_end.fileno()]
        process = self.context.Process(target=worker_main, args=(start, self.sock, child_end, tuple(theirs)),
                                       name=f"deputy-worker-{worker.index}", daemon=False)
        process.start()
        child_end.close()  # the worker's: when the parent goes, the worker sees its pipe end (worker_process)
        worker.process, worker.status, worker.ready, worker.restart_at = process, parent_end, False, None

    def _poll_start(self, worker: _Worker, timeout: float) -> StartupFailure | bool | None:
        """True once the worker serves, its failure if it could not start, None while it is still starting."""
        assert worker.process is not None and worker.status is not None
        try:
            if worker.status.poll(timeout):
                message = worker.status.recv()
                if message[0] == "ready":
                    worker.ready, worker.failures = True, 0
                    return True
                return StartupFailure(int(message[1]), str(message[2]))
        except (EOFError, OSError):
            pass  # the worker ended without a word: its exit code says what it can
        if worker.process.is_alive():
            return None
        worker.process.join()
        return StartupFailure(EXIT_OTHER, f"Deputy could not start: worker {worker.index} exited with code "
                                          f"{worker.process.exitcode} while starting; run with --log-level debug "
                                          "(or DEPUTY_LOG_LEVEL=debug) for the traceback")

    def _tend(self) -> None:
        """Note workers that finished starting; restart those that ended (after a pause if they keep failing)."""
        now = time.monotonic()
        for worker in self.workers:
            if self.stop_signal is not None:
                return
            if worker.process is None:
                if worker.restart_at is not None and now >= worker.restart_at:
                    self._spawn(worker)
                continue
            if not worker.ready:
                outcome = self._poll_start(worker, timeout=0)
                if isinstance(outcome, StartupFailure):
                    worker.failures += 1
                    pause = min(RESTART_PAUSE_MAX, 2.0 ** (worker.failures - 1))
                    log.error("worker %d could not start: %s; trying again in %.0f s", worker.index,
                              outcome.message, pause)
                    self._retire(worker, now + pause)
                elif outcome:
                    log.info("worker %d (pid %s) serves again", worker.index, worker.process.pid)
                continue
            if not worker.process.is_alive():
                worker.process.join()
                log.warning("worker %d (pid %s) ended with exit code %s; starting another", worker.index,
                            worker.process.pid, worker.process.exitcode)
                self._retire(worker, now)

    def _retire(self, worker: _Worker, restart_at: float) -> None:
        if worker.process is not None and worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        if worker.status is not None:
            worker.status.close()
        worker.process, worker.status, worker.ready, worker.restart_at = None, None, False, restart_at

    def _catch_signals(self) -> None:
        """Signals are noted by their handler and acted on by the loop, woken through a socket pair."""
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for signum in (*STOPPING_SIGNALS, signal.SIGHUP):
            signal.signal(signum, lambda received, _frame: self._signals.append(received))

    def _handle_signals(self) -> bool:
        """Act on the signals received; True once one of them asks to stop."""
        while self._signals:
            received = self._signals.pop(0)
            if received == signal.SIGHUP:
                log.info("SIGHUP: passed on to every worker (each reloads its policies)")
                for worker in self.workers:
                    if worker.process is not None and worker.process.is_alive():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.process.pid or 0, signal.SIGHUP)
            elif self.stop_signal is None:
                self.stop_signal = received
                log.info("%s: stopping %d workers", signal.Signals(received).name, len(self.workers))
        return self.stop_signal is not None

    def end_by_signal(self) -> None:
        """End the parent as the signal that stopped it would have (as uvicorn does for one process)."""
        signal.set_wakeup_fd(-1)
        for signum in (*STOPPING_SIGNALS, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        if self.stop_signal is not None:
            signal.raise_signal(self.stop_signal)


def with_workers(settings: Settings, workers: int | None) -> Settings:
    """``settings`` with ``--workers`` applied (already checked to be within 1 to MAX_WORKERS)."""
    return settings if workers is None else dataclasses.replace(settings, workers=workers)
