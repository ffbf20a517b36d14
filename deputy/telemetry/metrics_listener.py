"""``GET /metrics`` on a listener of its own (``[metrics] listen``), apart from the public one.

The exposition is prometheus-client's (Prometheus text format 0.0.4, OpenMetrics 1.0 when the scraper's
``Accept`` asks for it, gzip when its ``Accept-Encoding`` allows, the ``name[]`` filter), served for that one path
(404 elsewhere) and that one method (405 with ``Allow: GET``, RFC 9110 §15.5.6). It runs as a second uvicorn
server on the application's event loop, started and stopped by the application's lifespan.

A scrape is rendered in a worker thread, not on the event loop: a full registry takes tens of milliseconds to
render (``bench/metrics_cost.py``), which on the loop would stall every request for as long; in a thread the loop
gets the interpreter back every switch interval (5 ms). The counts read from the database are poked on the loop
first (:meth:`deputy.telemetry.metrics.Metrics.before_scrape`), and never waited for.

The socket is bound here, before uvicorn is given it: an address that is taken or not this host's fails start-up
with one :class:`MetricsListenerError` naming ``metrics.listen``, and port 0 becomes the free port the kernel
chose (:attr:`MetricsListener.address`). uvicorn's signal handling is left to the public server: this one stops
when the lifespan says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gzip
import logging
import socket
from collections.abc import Iterator
from urllib.parse import parse_qs

import uvicorn
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry
from starlette.types import Receive, Scope, Send

from deputy.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

PATH = "/metrics"
BACKLOG = 64
# A scraper or two, and an operator's curl: a small bound, past which uvicorn answers 503.
MAX_CONNECTIONS = 32


class MetricsListenerError(RuntimeError):
    """The metrics listener could not start; the message names the setting and the reason, on one line."""


class MetricsEndpoint:
    """``GET /metrics`` and nothing else (ASGI)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and WebSocket not served; nothing else reaches here
            return
        if scope["path"] != PATH:
            await _answer(send, 404, b"not found\n")
        elif scope["method"] != "GET":
            await _answer(send, 405, b"method not allowed\n", [(b"allow", b"GET")])
        else:
            headers = {name.lower(): value.decode("latin-1") for name, value in scope["headers"]}
            names = parse_qs(scope["query_string"].decode("latin-1")).get("name[]", [])
            self.metrics.before_scrape()
            body, content_type, gzipped = await asyncio.to_thread(
                render, self.metrics.registry, headers.get(b"accept", ""), headers.get(b"accept-encoding", ""),
                names)
            await _answer(send, 200, body, [(b"content-encoding", b"gzip")] if gzipped else [], content_type)


def render(registry: CollectorRegistry, accept: str, accept_encoding: str, names: list[str]) -> tuple[bytes, str, bool]:
    """The exposition the scraper asked for: (body, content type, gzipped)."""
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry.restricted_registry(names) if names else registry)
    if gzip_accepted(accept_encoding):
        return gzip.compress(body), content_type, True
    return body, content_type, False


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                  content_type: str = "text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode("latin-1")), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside a running application: the public server owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Set in the embedded server's task only: its uvicorn lifecycle lines ("Started server process", "Shutting
# down", ...) would repeat the public server's word for word on the logger they share; its warnings still show.
_EMBEDDED = contextvars.ContextVar("deputy_metrics_listener", default=False)


class _QuietLifecycle(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not _EMBEDDED.get()


_QUIET = _QuietLifecycle()


class MetricsListener:
    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.endpoint = MetricsEndpoint(metrics)
        self.host = host
        self.port = port
        self.address: tuple[str, int] | None = None  # where it listens, once started (port 0 resolved)
        self._server: _EmbeddedServer | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; raises :class:`MetricsListenerError` when the address cannot be listened on."""
        sock = _bind(self.host, self.port)
        bound = sock.getsockname()
        self.address = (bound[0], bound[1])
        config = uvicorn.Config(
            self.endpoint, lifespan="off", ws="none", access_log=False, server_header=False, proxy_headers=False,
            log_config=None, log_level=None,  # leave logging as Deputy set it up
            limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5, timeout_graceful_shutdown=2, backlog=BACKLOG)
        self._socket = sock
        self._server = _EmbeddedServer(config)
        logging.getLogger("uvicorn.error").addFilter(_QUIET)  # once: a filter is added at most once
        context = contextvars.copy_context()
        context.run(_EMBEDDED.set, True)
        # The socket already listens: a scrape that comes before uvicorn's first tick waits in the backlog.
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="deputy-metrics-listener",
                                         context=context)
        self._task.add_done_callback(_report_end)
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        log.info("metrics at http://%s:%d%s", host, self.address[1], PATH)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):  # its end was reported by _report_end
                await self._task
        if self._socket is not None:
            self._socket.close()
        self._server = self._task = self._socket = None


def _bind(host: str, port: int) -> socket.socket:
    where = f"metrics.listen {host}:{port}"
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (OSError, IndexError) as exc:
        raise MetricsListenerError(f"{where}: cannot resolve the address ({exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio's own servers do on POSIX: a port in TIME_WAIT after a restart is reusable; a listening
        # one is not (binding it still fails with EADDRINUSE).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise MetricsListenerError(f"{where}: cannot listen: {exc.strerror or exc}") from None
    return sock


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the metrics listener stopped: %r", task.exception())
