"""The host of tests.support.forked_deputy: imports Deputy once, then forks a ``python -m deputy ARGS`` per request.

Run as ``python -m tests.support.forked_deputy_host SOCKET`` by the test process (tests.support.forked_deputy), which
sends each request over the unix socket ``SOCKET`` with the child's standard input, output and error attached
(``SCM_RIGHTS``, unix(7)). The child is made the process the test would have started with ``subprocess.Popen``
(fork(2) keeps the rest of the host, so each of these is undone or set explicitly, and checked):

* descriptors: only the three sent ones, as ``close_fds=True`` leaves; a child holding anything else exits 1;
* environment, working directory, ``sys.path[0]`` and ``sys.argv`` the caller's, as ``python -m`` sets them;
* the caller's process group (where ``Popen`` puts its child: a signal to that group reaches Deputy as before),
  resource limits and umask (the caller may have changed them since the host started);
* signal dispositions as a fresh interpreter has them (SIGINT raises ``KeyboardInterrupt``);
* no thread, no event loop: the host has none when it forks (checked at start, it refuses to serve otherwise);
* the end of ``python -m``: non-daemon threads joined, ``atexit`` handlers run, an uncaught ``KeyboardInterrupt``
  ends the process by SIGINT, ``SystemExit``'s code kept, an uncaught exception reported by ``sys.excepthook``.

The host answers each request with the child's pid and a pidfd (pidfd_open(2): the caller signals and polls that
process, never a reused pid), and later the exit status (``waitpid``). It exits when its standard input closes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import resource
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from tests.support.fork_requests import receive_request

# What `deputy serve` imports (the CLI may import lazily): the app, its services and storage drivers; and what it
# imports only when it needs it, which most test Deputies do: alembic (a new database is migrated) and the MCP SDK's
# client (a server with policies has its tool catalog read; about 0.9 s of CPU to import, at every such start).
PRELOAD = ("deputy.cli", "deputy.cli.serving", "deputy.app", "deputy.services", "sqlalchemy.dialects.sqlite",
           "sqlalchemy.dialects.postgresql", "aiosqlite", "asyncpg", "uvicorn", "alembic.command", "alembic.config",
           "mcp.client", "mcp.client.stdio", "mcp.client.streamable_http")


def _own_descriptors() -> set[int]:
    open_fds = set()
    for name in os.listdir("/proc/self/fd"):  # lists the descriptor it reads the directory with, closed since
        with contextlib.suppress(OSError):
            os.fstat(int(name))
            open_fds.add(int(name))
    return open_fds


def _described(fds: set[int]) -> list[str]:
    described = []
    for fd in sorted(fds):
        with contextlib.suppress(OSError):
            described.append(f"{fd}: {os.readlink(f'/proc/self/fd/{fd}')}")
    return described


def _become_the_requested_process(request: dict[str, Any], fds: list[int], inherited: list[socket.socket],
                                  selector: selectors.BaseSelector) -> None:
    for target, fd in enumerate(fds):  # first: whatever fails from here on is reported where the caller looks
        os.dup2(fd, target)
        os.close(fd)
    selector.close()  # the host's: this process's descriptors are Deputy's alone
    for sock in inherited:
        sock.close()
    leaked = _own_descriptors() - {0, 1, 2}
    if leaked:
        raise RuntimeError(f"the forked child holds the host's descriptors {_described(leaked)}")
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("the forked child has threads besides its own")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a fresh interpreter installs
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    os.setpgid(0, request["pgid"])
    for name, (soft, hard) in request["rlimits"].items():
        number = getattr(resource, name)
        if resource.getrlimit(number) != (soft, hard):
            resource.setrlimit(number, (soft, hard))
    os.umask(request["umask"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # `python -m` puts the working directory first
    sys.argv = ["deputy", *request["args"]]
    random.seed()
    _fresh_multiprocessing_state(request["cwd"])


def _fresh_multiprocessing_state(cwd: str) -> None:
    """What ``multiprocessing`` set at import in the host from the host's process: its working directory (a spawned
    child resolves the main module against it) and the authentication key, which no two processes should share."""
    import multiprocessing.process  # imported with Deputy already: nothing is loaded here

    multiprocessing.process.ORIGINAL_DIR = cwd  # type: ignore[attr-defined]  # in the module, not its stub
    multiprocessing.current_process().authkey = os.urandom(32)


def _run_child(request: dict[str, Any], fds: list[int], inherited: list[socket.socket],
               selector: selectors.BaseSelector) -> None:
    code = 1
    try:
        _become_the_requested_process(request, fds, inherited, selector)
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
            traceback.print_exc()
            _finish()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as Python does: the parent sees death by SIGINT
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        _finish()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe leaves nothing to report to
                stream.flush()
        os._exit(code)


def _finish() -> None:
    """What the interpreter does after ``__main__``: join non-daemon threads, then run the ``atexit`` handlers."""
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's own call at exit
    atexit._run_exitfuncs()


def _check_nothing_runs() -> None:
    """A thread would be missing in every child, holding whatever lock it held; a loop would be shared with it."""
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError(f"importing Deputy started threads: {threading.enumerate()}")
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("importing Deputy started an event loop")


def _announce(connection: socket.socket, pid: int) -> None:
    """The pid, with a pidfd for it (opened before this process can have reaped it: no reused pid)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        connection.sendall(f"pid {pid}\n".encode())
        return
    try:
        socket.send_fds(connection, [f"pid {pid}\n".encode()], [pidfd])
    finally:
        os.close(pidfd)


def serve(socket_path: str) -> None:
    """Fork a ``python -m deputy`` per request on ``socket_path`` until standard input closes."""
    for module in PRELOAD:
        # One that fails to import (renamed, or broken mid-edit) is left to the child, which fails as
        # `python -m deputy` would.
        with contextlib.suppress(Exception):
            __import__(module)
    _check_nothing_runs()
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
                        request, fds = receive_request(connection)
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
                    with contextlib.suppress(OSError):  # a caller gone: its end shows closed below
                        _announce(connection, pid)
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


if __name__ == "__main__":
    serve(sys.argv[1])
