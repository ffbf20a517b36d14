"""The demo server's policies (`policies/demo/`) and its real tool list, as the policy tests use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from deputy.demo.server import build_demo_server

DEMO_POLICIES: Final = Path(__file__).resolve().parents[2] / "policies" / "demo"


async def demo_tool_list() -> list[dict[str, Any]]:
    """The demo server's tools/list, from the server object itself (what Deputy would read over MCP)."""
    tools = await build_demo_server().list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
