"""An MCP upstream whose tool list changes while it runs, and which says so.

Tools ``echo(text)`` and ``grow()``. Calling ``grow`` adds a tool ``extra(n: integer)``
(once) and sends ``notifications/tools/list_changed`` on the response stream of that
very call (``related_request_id``: the SDK routes it to the request's SSE stream, which
is how a stateless server tells the caller), before the call's result.

Run it with ``python -m tests.support.changing_upstream --port PORT``: stateless
Streamable HTTP at ``http://127.0.0.1:PORT/mcp``, SSE responses (a JSON response could
not carry the notification). ``changing_upstream()`` runs it as a subprocess on a free
port and yields its URL.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio
from mcp import types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from deputy.demo.server import demo_asgi_app


class SlowListing(MCPServer):
    """Answers ``tools/list`` ``delay`` seconds after it has read its tools: a change made meanwhile is not in it.
    With ``listed``, it adds a line to that file each time it has read them, so a test knows a listing is under way."""

    def __init__(self, delay: float, listed: Path | None = None) -> None:
        super().__init__("changing-upstream", version="0.1.0")
        self.delay = delay
        self.listed = listed

    async def list_tools(self) -> list[types.Tool]:
        tools = await super().list_tools()
        if self.listed is not None:
            with self.listed.open("a") as file:
                file.write("listed\n")
        if self.delay:
            await anyio.sleep(self.delay)
        return tools


def build_changing_server(list_delay: float = 0.0, listed: Path | None = None) -> MCPServer:
    server = SlowListing(list_delay, listed)

    def extra(n: int) -> int:
        """Return n doubled (offered only after grow)."""
        return 2 * n

    def extra2(n: int) -> int:
        """Return n tripled (offered only after grow2)."""
        return 3 * n

    @server.tool(description="Offer the tool `extra2` from now on, and tell the caller the tool list changed.")
    async def grow2(ctx: Context) -> str:
        if "extra2" not in {tool.name for tool in await MCPServer.list_tools(server)}:
            server.add_tool(extra2, description="Return n tripled.")
        await ctx.session.send_notification(types.ToolListChangedNotification(), related_request_id=ctx.request_id)
        return "grown2"

    @server.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Offer the tool `extra` from now on, and tell the caller the tool list changed.")
    async def grow(ctx: Context) -> str:
        if "extra" not in {tool.name for tool in await MCPServer.list_tools(server)}:
            server.add_tool(extra, description="Return n doubled.")
        await ctx.session.send_notification(types.ToolListChangedNotification(), related_request_id=ctx.request_id)
        return "grown"

    return server


@contextmanager
def changing_upstream(list_delay: float = 0.0, listed: Path | None = None) -> Iterator[str]:
    """The changing upstream as a subprocess on a free loopback port; yields its MCP URL."""
    from tests.support.sdk_client import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.changing_upstream", "--port", str(port), "--list-delay",
         str(list_delay), *(["--listed", str(listed)] if listed is not None else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until something accepts connections on the port (a GET of a stateless endpoint would open an SSE stream)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"changing upstream exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"changing upstream did not listen on port {port} within {timeout}s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.changing_upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--list-delay", type=float, default=0.0, help="seconds tools/list waits before answering")
    parser.add_argument("--listed", type=Path, help="a file to add a line to each time tools/list has read the tools")
    args = parser.parse_args(argv)

    import uvicorn

    app = demo_asgi_app(build_changing_server(args.list_delay, args.listed), stateless=True, json_response=False)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", http="h11")
    return 0


if __name__ == "__main__":
    sys.exit(main())
