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

from mcp import types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from deputy.demo.server import demo_asgi_app


def build_changing_server() -> MCPServer:
    server: MCPServer = MCPServer("changing-upstream", version="0.1.0")

    def extra(n: int) -> int:
        """Return n doubled (offered only after grow)."""
        return 2 * n

    @server.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Offer the tool `extra` from now on, and tell the caller the tool list changed.")
    async def grow(ctx: Context) -> str:
        if "extra" not in {tool.name for tool in await server.list_tools()}:
            server.add_tool(extra, description="Return n doubled.")
        await ctx.session.send_notification(types.ToolListChangedNotification(), related_request_id=ctx.request_id)
        return "grown"

    return server


@contextmanager
def changing_upstream() -> Iterator[str]:
    """The changing upstream as a subprocess on a free loopback port; yields its MCP URL."""
    from tests.support.sdk_client import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.changing_upstream", "--port", str(port)],
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
    args = parser.parse_args(argv)

    import uvicorn

    app = demo_asgi_app(build_changing_server(), stateless=True, json_response=False)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", http="h11")
    return 0


if __name__ == "__main__":
    sys.exit(main())
