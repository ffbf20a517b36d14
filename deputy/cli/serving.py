"""Starting a listener so that whatever stops it is Deputy's to report, before anything is announced.

``deputy serve`` and ``deputy demo`` check what they can before they start (the data directory is writable, each
stdio server's command exists), bind their sockets themselves (:func:`bind`: a port in use is a
:class:`~deputy.cli.failures.StartupFailure` here, where uvicorn would log it and exit), and run the application's
ASGI lifespan (ASGI "Lifespan Protocol": ``lifespan.startup`` then ``lifespan.shutdown``) themselves
(:class:`Lifespan`): the database, the audit log and the policies start, or their exception reaches the caller,
instead of uvicorn printing the traceback Starlette sends with ``lifespan.startup.failed``. Only then is the banner
printed and uvicorn given the bound sockets (``Server.serve(sockets=…)``) with its own lifespan off.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import uvicorn
from starlette.types import ASGIApp, Message

from deputy.cli.failures import EXIT_ADDRESS, EXIT_CONFIG, EXIT_DATA_DIR, StartupFailure
from deputy.config_servers import UpstreamServer

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.limits import LimitSettings
    from deputy.listener import ListenerBudget


def check_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) if needed and write a file in it: keys and the SQLite database live there."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / f".write-check-{secrets.token_hex(6)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupFailure(EXIT_DATA_DIR, f"the data directory {data_dir} cannot be written ({reason}); set "
                                            "data_dir (DEPUTY_DATA_DIR) to a directory Deputy may write") from None


def check_commands(servers: Mapping[str, UpstreamServer]) -> None:
    """Each stdio server's program exists and may be run, looked up as it will be at each session: on the
    ``PATH`` of its own environment (``subprocess`` searches the ``env`` it is given), or as a path."""
    for name, server in servers.items():
        if server.command is None:
            continue
        program = server.command[0]
        if shutil.which(program, path=server.env.get("PATH", os.defpath)) is None:
            where = "" if os.sep in program else " on its PATH"
            raise StartupFailure(EXIT_CONFIG, f"configuration error: servers.{name}.command: {program!r} is not "
                                              f"found{where} or cannot be run; install it, or correct "
                                              f"servers.{name}.command")


def bind(host: str, port: int, backlog: int, what: str, fix: str) -> socket.socket:
    """A listening TCP socket on (host, port), as uvicorn would bind it (``SO_REUSEADDR``); a failure names the
    address, what it was for, and ``fix``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise StartupFailure(EXIT_ADDRESS, f"{shown} ({what}) is already in use; {fix}") from None
        reason = exc.strerror or type(exc).__name__
        raise StartupFailure(EXIT_ADDRESS, f"cannot listen on {shown} ({what}): {reason}; {fix}") from None
    return sock


def bound_port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


class Lifespan:
    """Drives an ASGI app's lifespan: :meth:`startup` raises the app's own exception when it fails."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._task = asyncio.ensure_future(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._answer()
        if answer["type"] != "lifespan.startup.complete":
            self._stopped = True
            await self._task  # Starlette sends startup.failed, then raises the exception itself
            raise RuntimeError(f"application startup failed: {answer.get('message', '')!s:.200}")

    async def shutdown(self) -> None:
        """Run the app's shutdown once (later calls do nothing); its failure is raised."""
        if self._task is None or self._stopped:
            return
        self._stopped = True
        await self._to_app.put({"type": "lifespan.shutdown"})
        answer = await self._answer()
        if answer["type"] != "lifespan.shutdown.complete":
            await self._task
            raise RuntimeError(f"application shutdown failed: {answer.get('message', '')!s:.200}")
        await self._task

    async def _answer(self) -> Message:
        """The app's next message; if the app ends without one, its exception (or a RuntimeError)."""
        assert self._task is not None
        getting = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({getting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            return getting.result()
        getting.cancel()
        self._task.result()  # the app's exception, if it raised one
        raise RuntimeError("the application ended its lifespan without answering")


@runtime_checkable
class EndsStreams(Protocol):
    """An app whose long-lived responses (MCP GET streams) can be told to end: :class:`deputy.app.DeputyApp`."""

    def end_streams(self) -> None: ...


class Server(uvicorn.Server):
    """uvicorn's server, whose shutdown ends the app's :class:`Lifespan` too, before uvicorn hands back the
    signal that stopped it (``capture_signals`` raises it again once ``serve`` returns). The app's GET streams are
    ended first: uvicorn waits for every response to finish, and a stream that never would held each shutdown up
    for the whole graceful period, then was cut with an ERROR line."""

    def __init__(self, config: uvicorn.Config, lifespan: Lifespan) -> None:
        super().__init__(config)
        self.app_lifespan = lifespan

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.app_lifespan.app, EndsStreams):
            self.app_lifespan.app.end_streams()
        try:
            await super().shutdown(sockets)
        finally:
            await self.app_lifespan.shutdown()


def uvicorn_config(target: Any, limits: LimitSettings, budget: ListenerBudget) -> uvicorn.Config:
    """uvicorn's configuration for an app served on a socket bound by :func:`bind`, behind the listener's guard
    (:mod:`deputy.listener`); logging is Deputy's (:func:`deputy.telemetry.logs.configure_logging`)."""
    from deputy.listener import guarded_http_protocol

    return uvicorn.Config(target, access_log=False, log_config=None, loop="uvloop",
                          http=guarded_http_protocol(limits, budget), ws="none", lifespan="off",
                          backlog=budget.backlog, timeout_graceful_shutdown=5,
                          # uvicorn hands it to loop.call_later, which takes fractional seconds
                          timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]
                          proxy_headers=False, server_header=False)


def run_async(coroutine: Any) -> Any:
    """Run ``coroutine`` on uvloop, as uvicorn runs its servers."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def listener_budget(settings: Settings) -> tuple[ListenerBudget, str]:
    """Raise the descriptor limit and size the listener to it (see deputy.listener); what it became, to print."""
    from deputy.listener import listener_budget as budget_for
    from deputy.listener import raise_open_files_limit

    files = raise_open_files_limit()
    stdio_servers = sum(1 for server in settings.servers.values() if server.command is not None)
    budget = budget_for(settings.limits, files.now, stdio_servers)
    raised = f" (raised from {files.before})" if files.now != files.before else ""
    return budget, f"file descriptors: {files.now}{raised}; connections: at most {budget.max_connections}"
