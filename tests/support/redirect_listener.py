"""A native client's redirect listener: loopback HTTP servers on one port that record every request and answer
with a small page, as a client's callback does once it has the code (RFC 8252 §7.3)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.sdk_client import free_port


@dataclass
class Seen:
    host: str
    path: str
    cookie: str


@dataclass
class Listener:
    port: int
    seen: list[Seen] = field(default_factory=list)

    def callbacks(self) -> list[Seen]:
        """The requests to ``/callback…`` (not the browser's ``/favicon.ico`` or a test's probes)."""
        return [seen for seen in self.seen if seen.path.startswith("/callback")]


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def redirect_listener(hosts: Sequence[str]) -> Iterator[Listener]:
    """Listen on each of ``hosts`` (``127.0.0.1``, ``::1``) on one free port until the block ends."""
    recorded = Listener(free_port())

    class Record(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorded.seen.append(Seen(self.headers.get("Host", ""), self.path, self.headers.get("Cookie", "")))
            body = b"<p>client received the answer</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    servers = [(_IPv6Server if ":" in host else ThreadingHTTPServer)((host, recorded.port), Record) for host in hosts]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield recorded
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
