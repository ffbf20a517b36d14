"""An MCP server, built with the official Python SDK, for the conformance suite's `server` scenarios.

The official conformance suite (`@modelcontextprotocol/conformance`, `conformance server`)
acts as an MCP client and calls a fixed set of tools, resources and prompts (names such as
``test_simple_text`` and ``test://static-text``) that every scenario describes in its
"Server Implementation Requirements". This module implements those, so the suite can be
pointed at it directly, and at Deputy placed in front of it, and the two results compared.

Run: ``python tests/conformance/fixture_server.py --port N`` (Streamable HTTP at ``/mcp``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import struct
import wave
import zlib
from io import BytesIO
from typing import Any

import uvicorn
from mcp import types
from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.session import ServerSession
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette

# --------------------------------------------------------------------------------------
# Media generated here rather than shipped as files.


def _png_1x1_red() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte + one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence() -> bytes:
    buffer = BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)  # 0.1 s
    return buffer.getvalue()


PNG_B64 = base64.b64encode(_png_1x1_red()).decode()
WAV_B64 = base64.b64encode(_wav_silence()).decode()

JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


class MemoryEventStore(EventStore):
    """Keeps every SSE event in memory so a client can resume with ``Last-Event-ID``."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        position = next((i for i, (eid, _, _) in enumerate(self._events) if eid == last_event_id), None)
        if position is None:
            return None
        stream_id = self._events[position][1]
        for event_id, sid, message in self._events[position + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def build_fixture_server() -> MCPServer:
    """Return a server with every tool, resource and prompt the suite's server scenarios use."""
    server: MCPServer = MCPServer("deputy-conformance-fixture", version="1.0.0")
    low = server._lowlevel_server  # extra handlers MCPServer has no decorator for
    subscriptions: set[str] = set()

    # ---------------------------------------------------------------- tools: content kinds
    @server.tool(description="Returns a simple text response.")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Returns a 1x1 PNG image.")
    def test_image_content() -> types.CallToolResult:
        return types.CallToolResult(content=[types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")])

    @server.tool(description="Returns a short WAV clip.")
    def test_audio_content() -> types.CallToolResult:
        return types.CallToolResult(content=[types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")])

    @server.tool(description="Returns an embedded text resource.")
    def test_embedded_resource() -> types.CallToolResult:
        resource = types.TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])

    @server.tool(description="Returns text, image and resource content together.")
    def test_multiple_content_types() -> types.CallToolResult:
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return types.CallToolResult(
            content=[
                _text("Multiple content types test:"),
                types.ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
                types.EmbeddedResource(type="resource", resource=resource),
            ]
        )

    @server.tool(description="Always fails, reporting isError.")
    def test_error_handling() -> types.CallToolResult:
        return types.CallToolResult(
            content=[_text("This tool intentionally returns an error for testing")], is_error=True
        )

    # ---------------------------------------------------------------- tools: notifications
    @server.tool(description="Sends three info log messages while running.")
    async def test_tool_with_logging(ctx: Context) -> str:
        for index, message in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
            if index:
                await asyncio.sleep(0.05)
            await ctx.session.send_log_message(
                level="info", data=message, logger="conformance", related_request_id=ctx.request_id
            )
        return "Tool with logging executed successfully"

    @server.tool(description="Reports progress 0, 50 and 100 of 100.")
    async def test_tool_with_progress(ctx: Context) -> str:
        for index, progress in enumerate((0, 50, 100)):
            if index:
                await asyncio.sleep(0.05)
            await ctx.report_progress(progress, 100, f"step {index + 1} of 3")
        return "Tool with progress executed successfully"

    # ---------------------------------------------------------------- tools: client requests
    @server.tool(description="Asks the client's LLM (sampling/createMessage) to answer a prompt.")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=_text(prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else str(content)
        return f"LLM response: {text}"

    async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        session: ServerSession = ctx.session
        return await session.elicit_form(message, requested_schema=schema, related_request_id=ctx.request_id)

    @server.tool(description="Asks the user (elicitation/create) for a username and email.")
    async def test_elicitation(message: str, ctx: Context) -> str:
        result = await _elicit(
            ctx,
            message,
            {
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"},
                },
                "required": ["username", "email"],
            },
        )
        return f"User response: action={result.action}, content={json.dumps(result.content)}"

    @server.tool(description="Elicitation with defaults for every primitive type (SEP-1034).")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        result = await _elicit(
            ctx,
            "Please review and update the form fields with defaults",
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User age", "default": 30},
                    "score": {"type": "number", "description": "User score", "default": 95.5},
                    "status": {
                        "type": "string",
                        "description": "User status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active",
                    },
                    "verified": {"type": "boolean", "description": "Verified", "default": True},
                },
                "required": [],
            },
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"

    @server.tool(description="Elicitation with every enum schema variant (SEP-1330).")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        result = await _elicit(
            ctx,
            "Please select options from the enum fields",
            {
                "type": "object",
                "properties": {
                    "untitledSingle": {
                        "type": "string",
                        "description": "Untitled single-select",
                        "enum": ["option1", "option2", "option3"],
                    },
                    "titledSingle": {
                        "type": "string",
                        "description": "Titled single-select",
                        "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"},
                        ],
                    },
                    "legacyEnum": {
                        "type": "string",
                        "description": "Legacy titled enum",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"],
                    },
                    "untitledMulti": {
                        "type": "array",
                        "description": "Untitled multi-select",
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    },
                    "titledMulti": {
                        "type": "array",
                        "description": "Titled multi-select",
                        "items": {
                            "anyOf": [
                                {"const": "value1", "title": "First Choice"},
                                {"const": "value2", "title": "Second Choice"},
                                {"const": "value3", "title": "Third Choice"},
                            ]
                        },
                    },
                },
                "required": [],
            },
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"

    # ---------------------------------------------------------------- tools: transport
    @server.tool(description="Closes the SSE stream mid-call so the client must reconnect (SEP-1699).")
    async def test_reconnection(ctx: Context) -> str:
        await asyncio.sleep(0.05)
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        return "Reconnection test completed"

    # ---------------------------------------------------------------- tools: 2026-07-28 (SEP-2575) hooks
    @server.tool(description="Needs the client's sampling capability; fails with -32021 without it.")
    async def test_missing_capability(ctx: Context) -> str:
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            data = types.MissingRequiredClientCapabilityErrorData(
                required_capabilities=types.ClientCapabilities(sampling=types.SamplingCapability())
            )
            raise MCPError(
                code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="This tool needs the client's sampling capability",
                data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
            )
        return "The client declared sampling"

    toggles = itertools.count()

    @server.tool(description="Adds or removes a tool, then announces that the tool list changed.")
    async def test_trigger_tool_change(ctx: Context) -> str:
        name = "test_dynamic_tool"
        if next(toggles) % 2 == 0:
            server.add_tool(lambda: "dynamic", name=name, description="A tool that comes and goes")
        else:
            server.remove_tool(name)
        await ctx.notify_tools_changed()
        return "Tool list changed"

    @server.tool(description="Adds or removes a prompt, then announces that the prompt list changed.")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        name = "test_dynamic_prompt"
        if name in {prompt.name for prompt in await server.list_prompts()}:
            server.remove_prompt(name)
        else:
            server.prompt(name=name, description="A prompt that comes and goes")(lambda: "dynamic")
        await ctx.notify_prompts_changed()
        return "Prompt list changed"

    # ---------------------------------------------------------------- tool: JSON Schema 2020-12
    server.add_tool(lambda: "ok", name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features")
    registered = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert registered is not None
    registered.parameters = JSON_SCHEMA_2020_12

    # ---------------------------------------------------------------- resources
    @server.resource(
        "test://static-text", name="static-text", description="A static text resource", mime_type="text/plain"
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary", name="static-binary", description="A static PNG image", mime_type="image/png"
    )
    def static_binary() -> bytes:
        return _png_1x1_red()

    @server.resource(
        "test://watched-resource",
        name="watched-resource",
        description="A resource clients may subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content"

    @server.resource(
        "test://template/{id}/data",
        name="template-data",
        description="A templated resource that echoes its id",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

    # ---------------------------------------------------------------- logging
    async def set_level(ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)

    # ---------------------------------------------------------------- prompts
    @server.prompt(description="A simple prompt without arguments")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @server.prompt(description="A prompt with two required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt(description="A prompt that embeds a resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        resource = types.TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=types.EmbeddedResource(type="resource", resource=resource)),
            UserMessage(content=_text("Please process the embedded resource above.")),
        ]

    @server.prompt(description="A prompt that includes an image")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(content=types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            UserMessage(content=_text("Please analyze the image above.")),
        ]

    # ---------------------------------------------------------------- completion
    async def complete(ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> types.CompleteResult:
        candidates = ["paris", "park", "party", "test", "testing"]
        values = [value for value in candidates if value.startswith(params.argument.value)]
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))

    low.add_request_handler("completion/complete", types.CompleteRequestParams, complete)

    return server


def build_fixture_app(*, host: str = "127.0.0.1") -> Starlette:
    """The Streamable HTTP ASGI app at ``/mcp``, with resumable SSE streams and DNS-rebinding checks."""
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    return build_fixture_server().streamable_http_app(
        streamable_http_path="/mcp",
        event_store=MemoryEventStore(),
        retry_interval=500,
        transport_security=security,
        host=host,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args()
    # h11, not httptools: httptools keeps trailing whitespace in header values (RFC 9110
    # says to strip it), which fails http-header-validation's padded Mcp-Name check.
    uvicorn.run(build_fixture_app(host=args.host), host=args.host, port=args.port, log_level="warning", http="h11")


if __name__ == "__main__":
    main()
