"""An attacker that holds many half-open connections: TCP connected, never a byte of a request.

Run as a process of its own (``python -m tests.support.connection_flood SOURCE HOST PORT COUNT``), so
that each source address has its own descriptor limit: it raises its soft ``RLIMIT_NOFILE``, binds
every socket to ``SOURCE`` (any 127.0.0.0/8 address is loopback on Linux), starts ``COUNT``
non-blocking connects, prints ``connected N`` once they have completed (the server's kernel took
them), and then keeps the pressure on: each connection the server closes is replaced by a new one,
until the process is terminated (or its stdin closes: the parent went; or 300 s passed), when it
prints ``attempts N`` (every connect it started).
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux, <netinet/in.h>

CONNECT_DEADLINE = 30.0  # seconds for the initial connects to complete before reporting how many did
MAX_LIFETIME = 300  # seconds


def raise_own_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Flood:
    def __init__(self, source: str, host: str, port: int) -> None:
        self.source, self.target = source, (host, port)
        self.selector = selectors.DefaultSelector()
        self.attempts = 0

    def open_one(self) -> socket.socket | None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return None  # out of descriptors: the report says how many connected
        sock.setblocking(False)
        try:
            # The port is chosen at connect() for the whole 4-tuple, not reserved machine-wide at bind(): tens of
            # thousands of attacker sockets must not use up the ephemeral ports other tests listen and connect on.
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
            code = sock.connect_ex(self.target)
        except OSError:
            sock.close()
            return None
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return None
        self.attempts += 1
        self.selector.register(sock, selectors.EVENT_READ)
        return sock

    def connect(self, count: int, deadline: float) -> int:
        """Start `count` connects; wait until they have completed (the server's kernel took them) or
        `deadline`, replacing any refused one; return how many completed."""
        pending = {sock for _ in range(count) if (sock := self.open_one()) is not None}
        for sock in pending:
            self.selector.modify(sock, selectors.EVENT_WRITE)
        connected = 0
        while pending and time.monotonic() < deadline:
            for key, _ in self.selector.select(timeout=1.0):
                sock = self._socket(key)
                if sock not in pending:
                    self._replace_if_closed(sock)
                    continue
                pending.discard(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected += 1
                    self.selector.modify(sock, selectors.EVENT_READ)
                    continue
                self.selector.unregister(sock)
                sock.close()
                if (again := self.open_one()) is not None:
                    pending.add(again)
                    self.selector.modify(again, selectors.EVENT_WRITE)
        for sock in pending:
            self.selector.modify(sock, selectors.EVENT_READ)
        return connected

    def refill_forever(self) -> None:
        """Replace every connection the server closes (readable at EOF, or reset) with a fresh one."""
        while True:
            for key, _ in self.selector.select(timeout=1.0):
                self._replace_if_closed(self._socket(key))

    def _replace_if_closed(self, sock: socket.socket) -> None:
        try:
            closed = sock.recv(1) == b""
        except BlockingIOError:
            return
        except OSError:
            closed = True
        if closed:
            self.selector.unregister(sock)
            sock.close()
            self.open_one()

    @staticmethod
    def _socket(key: selectors.SelectorKey) -> socket.socket:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        return sock


def _stop_when_the_parent_goes() -> None:
    """The parent holds our stdin: EOF means it closed it or died; either way the flood must end."""
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def reported(flood: Flood) -> Iterator[None]:
    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(MAX_LIFETIME)  # never outlive a test, whatever happens to it
    threading.Thread(target=_stop_when_the_parent_goes, daemon=True).start()
    try:
        yield
    finally:
        print(f"attempts {flood.attempts}", flush=True)


def main(source: str, host: str, port: int, count: int) -> None:
    raise_own_open_files(count + 64)
    flood = Flood(source, host, port)
    with reported(flood):
        print(f"connected {flood.connect(count, time.monotonic() + CONNECT_DEADLINE)}", flush=True)
        flood.refill_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
