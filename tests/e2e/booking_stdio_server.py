"""A stdio MCP server (the official SDK) with a tool whose arguments nest: the upstream of the issue 13 e2e test.

``book(room, window, note)``: ``window`` is a pydantic model, so the tool's ``inputSchema`` reaches it through
``$defs``/``$ref``, and its ``start``/``end`` are ``date-time`` strings; ``room`` is a required integer.
"""

from __future__ import annotations

import datetime as dt

from mcp.server import MCPServer
from pydantic import BaseModel


class Window(BaseModel):
    start: dt.datetime
    end: dt.datetime


def main() -> None:
    server = MCPServer("booking", version="0.1.0")

    @server.tool(description="Book a room for a window of time; answers with what was booked.")
    def book(room: int, window: Window, note: str = "") -> str:
        return f"room {room} from {window.start.isoformat()} to {window.end.isoformat()}"

    server.run("stdio")


if __name__ == "__main__":
    main()
