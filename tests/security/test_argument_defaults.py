"""An argument left out is decided as the default the tool's schema gives it — what the upstream runs.

From an outside review (2026-12-06): ``delete_path(path, recursive: bool = True)`` (an official-SDK tool, whose
``inputSchema`` says ``"default": true``) ran recursively when ``recursive`` was left out, while Cedar saw no
``recursive`` at all: ``forbid … when { context.input has recursive && context.input.recursive }`` was passed by
omission. Now an absent optional argument with a schema default is that default in ``context.input``
(deputy.policy.arguments). Against a real ``deputy serve`` and the SDK server behind a recorder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.server import MCPServer

from deputy.demo.server import demo_asgi_app
from tests.support.demo_policies import GuardedDeputy, guarded_server
from tests.support.oauth_flow import mcp_post, tokens_for_alice

POLICY = '''
@id("tools")
permit (principal, action in [Deputy::Action::"tools/call", Deputy::Action::"tools/list"], resource);

@id("no-recursive-delete")
forbid (principal, action == Deputy::Action::"delete_path", resource)
when { context.input has recursive && context.input.recursive };
'''


def upstream() -> MCPServer:
    server = MCPServer("defaults-upstream", version="0")

    @server.tool(description="Delete a path; recursively unless told otherwise.")
    def delete_path(path: str, recursive: bool = True) -> str:
        return f"deleted {path} recursive={recursive}"

    return server


Setup = GuardedDeputy


@pytest.fixture(scope="module")
def setup(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    app = demo_asgi_app(upstream(), stateless=True, json_response=True)
    with guarded_server(tmp_path_factory.mktemp("argument-defaults"), upstream_url, "defaults", POLICY,
                        app=app) as guarded:
        yield guarded


async def call(setup: Setup, arguments: dict[str, Any]) -> dict[str, Any]:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("defaults"))
    response = await mcp_post(setup.deputy, token, server="defaults", headers={"Accept": "application/json"},
                              body={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                    "params": {"name": "delete_path", "arguments": arguments}})
    answer: dict[str, Any] = response.json()
    return answer


def deletes_run(setup: Setup, path: str) -> int:
    return sum(1 for request in setup.recorder.seen if (message := json.loads(request.body or b"null"))
               and isinstance(message, dict) and message.get("method") == "tools/call"
               and message["params"].get("arguments", {}).get("path") == path)


async def test_an_omitted_argument_is_decided_as_its_default(setup: Setup) -> None:
    said = await call(setup, {"path": "/srv/said", "recursive": True})
    assert said["error"]["data"]["policies"] == ["no-recursive-delete"], said
    omitted = await call(setup, {"path": "/srv/omitted"})
    assert omitted["error"]["data"]["policies"] == ["no-recursive-delete"], omitted
    assert deletes_run(setup, "/srv/said") == deletes_run(setup, "/srv/omitted") == 0


async def test_an_argument_said_otherwise_is_decided_as_said(setup: Setup) -> None:
    allowed = await call(setup, {"path": "/srv/flat", "recursive": False})
    assert "recursive=False" in json.dumps(allowed), allowed
    assert deletes_run(setup, "/srv/flat") == 1
