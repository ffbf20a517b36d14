"""An MCP upstream whose answers stream as SSE and never end on their own: something to kill mid-stream.

Tool ``stream(text)`` reports progress once (a ``notifications/progress`` event on the call's own SSE
stream, when the caller gave a ``progressToken``) and then waits forever, so the answer is an open
Streamable HTTP response with one event in it. Tool ``echo(text)`` answers at once. Stateless, SSE
responses (MCP Streamable HTTP, spec revision 2025-06-18 and later).

Run it with ``python -m tests.fault.streaming_upstream --port PORT``; ``streaming_upstream()`` runs it as
a subprocess on a free port and yields the process and its URL, so a test can SIGKILL it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from deputy.demo.server import demo_asgi_app
from tests.support.changing_upstream import _wait_listening
from tests.support.sdk_client import free_port


def build_streaming_server() -> MCPServer:
    server = MCPServer("streaming-upstream", version="0.1.0")

    @server.tool(description="Report progress once, then keep the answer open for ever.")
    async def stream(text: str, ctx: Context) -> str:
        await ctx.report_progress(1, 2, f"started {text}")
        await anyio.sleep_forever()
        return text  # never reached

    @server.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    return server


@contextmanager
def streaming_upstream() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The streaming upstream as a subprocess on a free loopback port; yields (process, MCP URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fault.streaming_upstream", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, process)
        yield process, f"http://127.0.0.1:{port}/mcp"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault.streaming_upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn

    app = demo_asgi_app(build_streaming_server(), stateless=True, json_response=False)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", http="h11")
    return 0


if __name__ == "__main__":
    sys.exit(main())
