"""A process that imports the conformance adapter once and forks one child per scenario run.

The suite (``conformance client --command``) starts the client under test once per scenario, about thirty at
once. As ``python -m tests.conformance.upstream_auth_adapter`` each start spent about four seconds of CPU on
imports alone (Deputy, the MCP SDK, uvicorn, httpx), all of them on the same two cores. Here those imports happen
once: the command the suite runs is :mod:`tests.conformance.adapter_launcher` (standard library only), which hands
its argument, environment, working directory and its standard input, output and error (``SCM_RIGHTS``, unix(7)) to
this host over a Unix socket. The host forks; the child takes those descriptors as its own 0, 1 and 2, and runs
:func:`tests.conformance.upstream_auth_adapter.main` exactly as the module's ``__main__`` would, with its own
Deputy, data directory and event loop; the launcher exits with the child's status.

The child is still one process per scenario, started from a state where nothing has run but imports: no event
loop, no thread (checked at start), no open connection. ``random`` is reseeded in each child (forked children would
otherwise share its state); everything secret in Deputy comes from ``os.urandom``, which fork does not repeat.
When a launcher's connection closes before its child ended (the suite killed it at its timeout), the child is
killed too, as the suite's kill of the adapter process did.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from tests.support.fork_requests import receive_request


def run_child(request: dict[str, Any], fds: list[int], inherited: list[socket.socket]) -> None:
    """In the forked child: become the adapter process the suite would have started; never returns."""
    code = 1
    try:
        for sock in inherited:  # the host's listener and launchers' connections are not this run's
            sock.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        random.seed()
        from tests.conformance import upstream_auth_adapter

        try:
            upstream_auth_adapter.main()
            code = 0
        except SystemExit as exc:  # what the interpreter does with it at the end of `python -m`
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe leaves nothing to report to
                stream.flush()
        os._exit(code)


def serve(socket_path: str) -> None:
    """Accept launchers on ``socket_path`` until standard input closes (the test that started this ended)."""
    from tests.conformance import upstream_auth_adapter  # noqa: F401 - the imports every child shares

    if threading.active_count() != 1:  # a thread would be missing in every child, holding whatever lock it held
        raise RuntimeError(f"importing the adapter started threads: {threading.enumerate()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(128)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    print("ready", flush=True)
    try:
        while True:
            for key, _events in selector.select(timeout=0.05):
                if key.fileobj is sys.stdin:
                    return
                if key.fileobj is listener:
                    connection, _address = listener.accept()
                    try:
                        request, fds = receive_request(connection)
                    except (OSError, ValueError) as exc:
                        print(f"adapter host: refused a launcher: {exc}", file=sys.stderr, flush=True)
                        connection.close()
                        continue
                    inherited = [listener, connection, *running.values()]
                    pid = os.fork()
                    if pid == 0:
                        run_child(request, fds, inherited)
                    for fd in fds:
                        os.close(fd)
                    running[pid] = connection
                    selector.register(connection, selectors.EVENT_READ, pid)
                else:  # a launcher's connection became readable: it closed, its process was killed
                    selector.unregister(key.fileobj)
                    os.kill(key.data, signal.SIGKILL)
            while running:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                connection = running.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):  # its launcher is gone already
                    connection.sendall(str(code if code >= 0 else 128 - code).encode())
                with contextlib.suppress(KeyError, ValueError):  # unregistered when its launcher closed
                    selector.unregister(connection)
                connection.close()
    finally:
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        listener.close()
        os.unlink(socket_path)


if __name__ == "__main__":
    serve(sys.argv[1])
