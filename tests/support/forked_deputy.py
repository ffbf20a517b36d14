"""``python -m deputy ARGS`` started by fork from a process that imported Deputy once, for tests that start it often.

A ``deputy serve`` start spends about two seconds of CPU importing Deputy before it does anything of its own, and
the suite starts Deputy over a hundred times (``running_deputy``, ``KillableDeputy``, ``RunningDeputy.cli``).
:func:`start_deputy` asks a host process (tests.support.forked_deputy_host, started once per test process on first
use) to fork: the child takes the caller's standard streams, environment (replacing the host's, not merged),
working directory, process group, resource limits and umask, and runs ``deputy``'s ``__main__`` as
``python -m deputy ARGS`` does. Everything Deputy does at start (configuration, storage, migrations, keys,
listener) runs in the child; only the imports were done before, in a process where nothing else ran.

What fork cannot give, :func:`start_deputy` leaves to ``subprocess.Popen`` (the same command, as before): a
``preexec_fn``, or an environment that differs from the host's in a variable read at interpreter start or at import
(``PYTHON*``, locale, ``TZ``, ``LD_*``, ...: only ``DEPUTY_*``, the ``OTEL_*`` read at run time and pytest's
``PYTEST_*`` may differ), or a hard resource limit above the host's.

The child is the host's, not the caller's: :class:`ForkedDeputy` offers what the tests use of ``subprocess.Popen``
(``pid``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``, ``returncode``), signalling and polling
through a pidfd. What ``/proc/PID/cmdline`` and ``/proc/PID/environ`` show of a forked child are the host's (fork
and ``putenv`` change neither): find Deputy's process by its ``pid``, never by those. The host exits when the test
process that started it closes its standard input (at its end, or when it dies), killing any child left.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
# Read by Deputy when it runs, not at interpreter start or import (the host imported with its own values), or by
# nothing of Deputy (pytest's, which change per test): the only variables in which a forked child's environment may
# differ from the host's.
RUN_TIME_PREFIXES = ("DEPUTY_", "OTEL_", "PYTEST_")
RUN_TIME_NAMES = ("COLUMNS", "LINES")  # the terminal's size: rich reads them when a console is made, in a command
READ_AT_IMPORT = ("OTEL_PROPAGATORS", "OTEL_PYTHON_")  # opentelemetry.propagate and .context, at import
RLIMITS = sorted(name for name in dir(resource) if name.startswith("RLIMIT_"))


def _read_at_run_time(name: str) -> bool:
    return (name.startswith(RUN_TIME_PREFIXES) or name in RUN_TIME_NAMES) and not name.startswith(READ_AT_IMPORT)


def _limits() -> dict[str, tuple[int, int]]:
    return {name: resource.getrlimit(getattr(resource, name)) for name in RLIMITS}


def _highest(limit: int) -> int:
    return sys.maxsize if limit == resource.RLIM_INFINITY else limit


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():  # os.umask would change it, for every thread
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise LookupError("Umask")


class ForkedDeputy:
    """A ``python -m deputy`` forked by the host: what the tests use of ``subprocess.Popen``."""

    def __init__(self, connection: socket.socket, args: list[str]) -> None:
        self.args = args
        self._connection = connection
        self.returncode: int | None = None
        data, fds, _flags, _address = socket.recv_fds(connection, 256, 1)  # the pid line carries the pidfd
        self._buffer = data
        self._pidfd = fds[0] if fds else None
        if not data:
            raise RuntimeError("the forked-deputy host ended without starting the process")
        self.pid = int(self._line(timeout=60.0).removeprefix("pid "))

    def _line(self, timeout: float | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._connection], [], [], remaining)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            chunk = self._connection.recv(256)
            if not chunk:
                raise RuntimeError("the forked-deputy host ended without the process's exit status")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _ended(self) -> bool:
        """Whether the process has ended, reaped or not (a pidfd is readable from then on, pidfd_open(2))."""
        return self._pidfd is not None and bool(select.select([self._pidfd], [], [], 0)[0])

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = int(self._line(timeout).removeprefix("exit "))
            self._connection.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self.returncode

    def poll(self) -> int | None:
        """As ``Popen.poll``: the exit status as soon as the process has ended (the host's report of it, which
        follows within its next turn, is waited for), None while it runs."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(60.0 if self._ended() else 0.0)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # ended since: as Popen.send_signal
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, number)
            else:
                os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


DeputyProcess = ForkedDeputy | subprocess.Popen[bytes]


class _Host:
    """This test process's host, started on first use, with the environment and limits this process had then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self.socket_path = ""
        self.environment: dict[str, str] = {}
        self.limits: dict[str, tuple[int, int]] = {}

    def path(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                directory = tempfile.mkdtemp(prefix="deputy-fork-host-")
                self.socket_path = os.path.join(directory, "host.sock")
                # Without Deputy's own variables, which a test may have set for its Deputy: each child gets its own.
                self.environment = {name: value for name, value in os.environ.items() if not _read_at_run_time(name)}
                self.limits = _limits()
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.forked_deputy_host", self.socket_path], cwd=REPO_ROOT,
                    env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                ready = self._process.stdout.readline()  # type: ignore[union-attr]
                if ready != "ready\n":
                    raise RuntimeError(f"the forked-deputy host exited with {self._process.wait()}")
                atexit.register(self.stop)
            return self.socket_path

    def can_give(self, env: Mapping[str, str]) -> bool:
        """Whether a child of the host can be the process ``Popen`` would start with ``env``: the same variables
        where they are read before Deputy runs, no hard limit above the host's (a child cannot raise it)."""
        self.path()
        differing = {name for name in {*env, *self.environment} if env.get(name) != self.environment.get(name)}
        return (all(_read_at_run_time(name) for name in differing)
                and all(_highest(_limits()[name][1]) <= _highest(hard) for name, (_soft, hard) in self.limits.items()))

    def pid(self) -> int:
        self.path()
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.stdin.close()  # type: ignore[union-attr]
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


_HOST = _Host()


def start_deputy(args: list[str], env: dict[str, str], stdout: IO[bytes] | int, stderr: IO[bytes] | int,
                 cwd: str | None = None, preexec_fn: Callable[[], None] | None = None) -> DeputyProcess:
    """``subprocess.Popen([python, "-m", "deputy", *args], env=env, stdout=stdout, stderr=stderr, cwd=cwd,
    preexec_fn=preexec_fn)``: forked from the host unless it needs what fork cannot give (module docstring), then
    that very ``Popen``. A forked one's standard input is /dev/null (pytest's own is)."""
    if preexec_fn is not None or subprocess.PIPE in (stdout, stderr) or not _HOST.can_give(env):
        return subprocess.Popen([sys.executable, "-m", "deputy", *args], env=env, stdout=stdout, stderr=stderr,
                                cwd=cwd, preexec_fn=preexec_fn)
    with open(os.devnull, "r+b") as devnull:
        out = devnull.fileno() if stdout == subprocess.DEVNULL else _descriptor(stdout)
        err = out if stderr == subprocess.STDOUT else devnull.fileno() if stderr == subprocess.DEVNULL \
            else _descriptor(stderr)
        return _forked(args, env, [devnull.fileno(), out, err], cwd)


def _descriptor(stream: IO[bytes] | int) -> int:
    return stream if isinstance(stream, int) else stream.fileno()


def _forked(args: list[str], env: dict[str, str], streams: list[int], cwd: str | None) -> ForkedDeputy:
    request = json.dumps({"args": args, "env": env, "cwd": os.path.abspath(cwd or os.getcwd()),
                          "pgid": os.getpgrp(), "rlimits": _limits(), "umask": _umask()}).encode()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(_HOST.path())
        connection.sendmsg([len(request).to_bytes(4, "big") + request],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", streams).tobytes())])
        return ForkedDeputy(connection, args)
    except BaseException:
        connection.close()
        raise


def run_deputy(args: list[str], env: dict[str, str], timeout: float,
               cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, "-m", "deputy", *args], env=env, cwd=cwd, capture_output=True, text=True,
    timeout=timeout)`` with the process forked from the host; past ``timeout`` it is killed and ``TimeoutExpired``
    raised, as there."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = start_deputy(args, env, out, err, cwd=None if cwd is None else os.fspath(cwd))
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        texts = []
        for captured in (out, err):
            captured.seek(0)
            texts.append(captured.read().decode(errors="replace"))
    return subprocess.CompletedProcess([sys.executable, "-m", "deputy", *args], code, texts[0], texts[1])
