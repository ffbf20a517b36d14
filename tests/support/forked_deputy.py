"""``python -m deputy ARGS`` started by fork from a process that imported Deputy once, for tests that restart it often.

A ``deputy serve`` start spends about two seconds of CPU importing Deputy before it does anything of its own; a test
that kills and restarts it twenty times per backend (tests/fault/test_kill_under_load.py) spent most of its time
there. :func:`start_deputy` asks a host process (``python -m tests.support.forked_deputy SOCKET``, started once per
test process on first use) to fork: the child takes the caller's standard output and error (``SCM_RIGHTS``,
unix(7)), environment and working directory, and runs ``deputy``'s ``__main__`` as ``python -m deputy ARGS`` does
(:func:`runpy.run_module`). Everything Deputy does at start (configuration, storage, migrations, keys, listener)
runs in the child; only the imports were done before, in a process where nothing else ran (no thread, no event loop,
no connection: checked). ``random`` is reseeded in each child.

The child is the host's, not the caller's: :class:`ForkedDeputy` offers what the tests use of ``subprocess.Popen``
(``pid``, ``poll``, ``wait``, ``terminate``, ``kill``, ``returncode``), with the exit status the host reports. The
host exits when the test process that started it closes its standard input (at its end, or when it dies), killing
any child left. What ``/proc/PID/cmdline`` and ``/proc/PID/environ`` show of a child are the host's (fork changes
neither): a test that finds Deputy's process by those needs a process of its own (``running_deputy`` starts one).
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import os
import random
import runpy
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_REQUEST = 1 << 20
DESCRIPTORS = 3  # standard input, output and error
# What `deputy serve` imports (the CLI may import lazily): the app, its services and storage drivers.
PRELOAD = ("deputy.cli", "deputy.cli.serving", "deputy.app", "deputy.services", "sqlalchemy.dialects.sqlite",
           "sqlalchemy.dialects.postgresql", "aiosqlite", "asyncpg", "uvicorn")


# ----------------------------------------------------------------------------- the host


def _run_child(request: dict[str, Any], fds: list[int], inherited: list[socket.socket],
               selector: selectors.BaseSelector) -> None:
    code = 1
    try:
        selector.close()  # the host's: this process's descriptors are Deputy's alone
        for sock in inherited:
            sock.close()
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(number, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own group, as a process of its own: a signal to the host's group is not for it
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["deputy", *request["args"]]
        random.seed()
        try:
            runpy.run_module("deputy", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # what the interpreter makes of it at the end of `python -m`
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe leaves nothing to report to
                stream.flush()
        os._exit(code)


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _address = socket.recv_fds(connection, MAX_REQUEST, DESCRIPTORS)
    if len(fds) != DESCRIPTORS or len(data) < 4:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request must carry three descriptors")
    length = int.from_bytes(data[:4], "big")
    body = data[4:]
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("the request ended early")
        body += chunk
    request: dict[str, Any] = json.loads(body)
    return request, fds


def serve(socket_path: str) -> None:
    """Fork a ``python -m deputy`` per request on ``socket_path`` until standard input closes."""
    for module in PRELOAD:
        # One that fails to import (renamed, or broken mid-edit) is left to the child, which fails as
        # `python -m deputy` would.
        with contextlib.suppress(Exception):
            __import__(module)
    if threading.active_count() != 1:  # a thread would be missing in every child, holding whatever lock it held
        raise RuntimeError(f"importing Deputy started threads: {threading.enumerate()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}
    print("ready", flush=True)
    try:
        while True:
            for key, _events in selector.select(timeout=0.02):
                if key.fileobj is sys.stdin:
                    return
                if key.fileobj is listener:
                    connection, _address = listener.accept()
                    try:
                        request, fds = _receive(connection)
                    except (OSError, ValueError) as exc:
                        print(f"forked deputy host: refused a request: {exc}", file=sys.stderr, flush=True)
                        connection.close()
                        continue
                    pid = os.fork()
                    if pid == 0:
                        _run_child(request, fds, [listener, connection, *running.values()], selector)
                    for fd in fds:
                        os.close(fd)
                    running[pid] = connection
                    connection.sendall(f"pid {pid}\n".encode())
                    selector.register(connection, selectors.EVENT_READ, pid)
                else:  # the caller closed its end: it no longer wants this Deputy
                    selector.unregister(key.fileobj)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(key.data, signal.SIGKILL)
            while running:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                connection = running.pop(pid)
                code = os.waitstatus_to_exitcode(status)  # -N: killed by signal N, as Popen.returncode says
                with contextlib.suppress(OSError):
                    connection.sendall(f"exit {code}\n".encode())
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(connection)
                connection.close()
    finally:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        listener.close()
        os.unlink(socket_path)


# ----------------------------------------------------------------------------- the caller's side


class ForkedDeputy:
    """A ``python -m deputy`` forked by the host: what the tests use of ``subprocess.Popen``."""

    def __init__(self, connection: socket.socket, args: list[str]) -> None:
        self.args = args
        self._connection = connection
        self._buffer = b""
        self.returncode: int | None = None
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

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = int(self._line(timeout).removeprefix("exit "))
            self._connection.close()
        return self.returncode

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(0.0)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Host:
    """This test process's host, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self.socket_path = ""

    def path(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                directory = tempfile.mkdtemp(prefix="deputy-fork-host-")
                self.socket_path = os.path.join(directory, "host.sock")
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.forked_deputy", self.socket_path], cwd=REPO_ROOT,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                ready = self._process.stdout.readline()  # type: ignore[union-attr]
                if ready != "ready\n":
                    raise RuntimeError(f"the forked-deputy host exited with {self._process.wait()}")
                atexit.register(self.stop)
            return self.socket_path

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
                 cwd: str | None = None) -> ForkedDeputy:
    """``python -m deputy *args`` with ``env``, writing to ``stdout`` and ``stderr`` (files, or
    ``subprocess.STDOUT`` for stderr), forked from the host; standard input is /dev/null."""
    out = stdout if isinstance(stdout, int) else stdout.fileno()
    err = out if stderr == subprocess.STDOUT else stderr if isinstance(stderr, int) else stderr.fileno()
    request = json.dumps({"args": args, "env": env, "cwd": cwd or os.getcwd()}).encode()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(_HOST.path())
        with open(os.devnull, "rb") as devnull:
            descriptors = array.array("i", [devnull.fileno(), out, err])
            connection.sendmsg([len(request).to_bytes(4, "big") + request],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, descriptors.tobytes())])
        return ForkedDeputy(connection, args)
    except BaseException:
        connection.close()
        raise


def run_deputy(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, "-m", "deputy", *args], env=env, capture_output=True, text=True, timeout=timeout)``
    with the process forked from the host; past ``timeout`` it is killed and ``TimeoutExpired`` raised, as there."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = start_deputy(args, env, out, err)
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


if __name__ == "__main__":
    serve(sys.argv[1])
