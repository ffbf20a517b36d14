"""A stdio MCP server (the official SDK) whose tool takes a ``datetime``: the upstream of the date-time e2e test.

``schedule(when)`` answers with ``when`` as the SDK's pydantic read it (ISO 8601), so a test sees which instant
the tool would have run on: pydantic reads an all-digit string as Unix seconds (``"20260601"`` is 1970-08-23).
"""

from __future__ import annotations

import datetime as dt

from mcp.server import MCPServer


def main() -> None:
    server = MCPServer("dated", version="0.1.0")

    @server.tool(description="Schedule something at the given instant; answers with the instant as read.")
    def schedule(when: dt.datetime) -> str:
        return when.isoformat()

    server.run("stdio")


if __name__ == "__main__":
    main()
