"""Calling a tool with the MCP SDK's client and reading the answer, whether the server answered or refused."""

from __future__ import annotations

from typing import Any

from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult


def unwrapped(error: BaseException) -> BaseException:
    """The SDK's task groups may wrap the one error the server answered."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult | MCPError:
    """The tool's result, or the JSON-RPC error the server answered with."""
    try:
        return await client.call_tool(tool, arguments or {})
    except (MCPError, ExceptionGroup) as raised:
        error = unwrapped(raised)
        if isinstance(error, MCPError):
            return error
        raise


def text_of(answer: CallToolResult | MCPError) -> str:
    assert isinstance(answer, CallToolResult), f"the call was refused: {answer}"
    assert not answer.is_error, answer
    return str(answer.content[0].text)  # type: ignore[union-attr]
