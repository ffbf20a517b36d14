"""An ASGI app served on a loopback port in the test's own event loop, and a resolver that sends a host name there.

Deputy's outbound requests go through real aiohttp sessions (:mod:`deputy.outbound_http`); a test points a
configured name (``witness.test``) at a server it runs by giving the code under test a :class:`LoopbackNames`
resolver. The server runs in the test's loop, so it shares the test's database engines; it runs without its
lifespan, as an in-process ASGI client would call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from urllib.parse import urlsplit

import uvicorn
from aiohttp.abc import AbstractResolver, ResolveResult
from starlette.types import ASGIApp


class LoopbackNames(AbstractResolver):
    """Each name answers 127.0.0.1 and its port; an ``OSError`` given for a name is raised (a host that is down)."""

    def __init__(self, names: Mapping[str, int | OSError]) -> None:
        self.names = dict(names)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        target = self.names.get(host)
        if target is None:
            raise OSError(f"{host} is not served in this test")
        if isinstance(target, OSError):
            raise target
        return [ResolveResult(hostname=host, host="127.0.0.1", port=target, family=socket.AF_INET,
                              proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


def pointing(url: str, target: int | OSError) -> LoopbackNames:
    """A resolver that sends the host of ``url`` to the loopback port ``target`` (or raises ``target``)."""
    host = urlsplit(url).hostname
    assert host is not None, url
    return LoopbackNames({host: target})


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner keeps its own signal handlers


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[int]:
    """Serve ``app`` on a free loopback port until the block ends; yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    server = _InLoopServer(uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        for _ in range(500):  # bounded: startup is a few loop turns
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("the test server did not start")
        yield port
    finally:
        server.should_exit = True
        await task
        listener.close()
