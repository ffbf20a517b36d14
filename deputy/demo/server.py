"""The demo upstream MCP server.

Deputy is an authorization gateway: it needs something to guard. This module builds a
small MCP server with the official SDK's `MCPServer` that offers a mix of harmless and
"dangerous" tools, so that policies have something meaningful to allow or deny:

* ``echo(text)`` and ``add(a, b)``: harmless.
* ``list_users()``: read-only access to a small in-memory user directory.
* ``delete_user(id, reason)``: a destructive write against that directory.
* resource ``demo://readme`` and prompt ``greet(name)``.

State (the user directory) lives in the server object returned by
`build_demo_server`, so every build starts from the same fixed list.

Run it with ``python -m deputy.demo`` (Streamable HTTP at ``http://HOST:PORT/mcp``) or
``python -m deputy.demo --stdio``.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from typing import Any, Final

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

__all__ = ["DEMO_USERS", "README_TEXT", "build_demo_server", "demo_asgi_app", "main"]

SERVER_NAME: Final = "deputy-demo"

DEMO_USERS: Final[tuple[dict[str, Any], ...]] = (
    {"id": 1, "name": "Ada Lovelace"},
    {"id": 2, "name": "Alan Turing"},
    {"id": 3, "name": "Grace Hopper"},
    {"id": 4, "name": "Edsger Dijkstra"},
)
"""The user directory every demo server starts with."""

README_TEXT: Final = (
    "Deputy demo server\n"
    "==================\n\n"
    "Tools: echo, add, list_users, delete_user.\n"
    "Resource: demo://readme (this text). Prompt: greet(name).\n"
)


def build_demo_server() -> MCPServer:
    """Return a fresh demo `MCPServer` with its own copy of the user directory."""
    users: list[dict[str, Any]] = copy.deepcopy(list(DEMO_USERS))
    server: MCPServer = MCPServer(
        SERVER_NAME,
        version="0.1.0",
        instructions="A demo server for Deputy: harmless tools plus a destructive delete_user.",
    )

    @server.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="List the users in the demo directory (id and name).")
    def list_users() -> list[dict[str, Any]]:
        return [dict(user) for user in users]

    @server.tool(description="Delete a user from the demo directory. Destructive.")
    def delete_user(id: int, reason: str) -> str:
        for index, user in enumerate(users):
            if user["id"] == id:
                del users[index]
                return f"Deleted user {id} ({user['name']}): {reason}"
        raise ToolError(f"No user with id {id}")

    @server.resource("demo://readme", name="readme", description="About this demo server.", mime_type="text/plain")
    def readme() -> str:
        return README_TEXT

    @server.prompt(description="Greet someone by name.")
    def greet(name: str) -> str:
        return f"Please write a short, friendly greeting for {name}."

    return server


def demo_asgi_app(
    server: MCPServer | None = None,
    *,
    path: str = "/mcp",
    stateless: bool = False,
    json_response: bool = False,
    host: str = "127.0.0.1",
    transport_security: TransportSecuritySettings | None = None,
) -> Starlette:
    """Return the Streamable HTTP ASGI app for a demo server, serving MCP at `path`.

    The returned Starlette app's lifespan runs the SDK's session manager; when you
    mount it inside another app, that lifespan does not run on its own (Starlette does
    not propagate lifespans to mounted apps): enter ``server.session_manager.run()``
    in the parent's lifespan instead.

    With the default ``host`` of a loopback address and no ``transport_security``,
    the SDK turns on DNS-rebinding protection and only accepts loopback ``Host`` /
    ``Origin`` headers.
    """
    server = server if server is not None else build_demo_server()
    return server.streamable_http_app(
        streamable_http_path=path,
        stateless_http=stateless,
        json_response=json_response,
        host=host,
        transport_security=transport_security,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo server: Streamable HTTP through uvicorn, or stdio with ``--stdio``."""
    parser = argparse.ArgumentParser(prog="python -m deputy.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default 8001)")
    parser.add_argument("--stdio", action="store_true", help="speak MCP over stdin/stdout instead of HTTP")
    parser.add_argument("--stateless", action="store_true", help="stateless Streamable HTTP (no sessions)")
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with JSON, not SSE")
    args = parser.parse_args(argv)

    server = build_demo_server()
    if args.stdio:
        server.run("stdio")
        return 0

    import uvicorn

    app = demo_asgi_app(server, stateless=args.stateless, json_response=args.json_response, host=args.host)
    # h11 rather than httptools: httptools keeps trailing whitespace in header values, so a
    # padded Mcp-Name header would fail the SDK's header/body match (RFC 9110 says strip it).
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", http="h11")
    return 0
