"""A ``has`` test on a map argument, which could never be true, refuses the policy set instead of lifting a forbid.

From an outside review (2026-12-06): an argument typed with ``additionalProperties`` (an SDK tool's
``env: dict[str, str]``) becomes an entity whose members are Cedar *tags*, so ``forbid … when {
context.input.env has LD_PRELOAD }`` validated, was always false, and a call with ``LD_PRELOAD`` in its
environment ran upstream. Now a ``has`` on a ``context.input`` path that no action the policy may apply to
declares is refused at load like a validation error (deputy.policy.attribute_tests), its problem naming the
policy and, for a map, ``hasTag``. This server's credentials are ``exchange``, so its policies are validated on
first need: the refusal shows as every call to it refused (503, retry later), nothing forwarded, and the problem in
the log; with the test the author meant (``hasTag``) the forbid forbids. Against a real ``deputy serve`` and an
upstream built with the official MCP SDK behind a recorder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.server import MCPServer

from deputy.demo.server import demo_asgi_app
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream

POLICY_DENIED = -32003
INTERNAL_ERROR = -32603
PERMIT_TOOLS = '''@id("tools")
permit (principal, action in Deputy::Action::"tools/call", resource);

@id("list-tools")
permit (principal, action == Deputy::Action::"tools/list", resource);

'''
DEAD_HAS = PERMIT_TOOLS + '''@id("no-ld-preload")
forbid (principal, action == Deputy::Action::"run", resource)
when { context.input.env has LD_PRELOAD };
'''
HAS_TAG = PERMIT_TOOLS + '''@id("no-ld-preload")
forbid (principal, action == Deputy::Action::"run", resource)
when { context.input.env.hasTag("LD_PRELOAD") };
'''


def upstream() -> MCPServer:
    server = MCPServer("maps-upstream", version="0")

    @server.tool(description="Run a command with extra environment variables.")
    def run(cmd: str, env: dict[str, str]) -> str:
        return f"ran {cmd} with env {sorted(env)}"

    return server


@dataclass
class Setup:
    deputy: RunningDeputy
    recorder: RequestRecorder
    log: Path


@pytest.fixture(scope="module")
def setup(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("dead-has-tests")
    for name, text in (("dead", DEAD_HAS), ("tagged", HAS_TAG)):
        (directory / name).mkdir()
        (directory / name / "maps.cedar").write_text(text)
    app = demo_asgi_app(upstream(), stateless=True, json_response=True)
    with recording_upstream(app) as (url, recorder):
        # "exchange": the tools are read, and the policies validated, on first need (README, "Lifecycle"); the
        # recording upstream ignores the token.
        extra = "".join(f'\n[servers.{name}]\nurl = "{url}"\ncredentials = "exchange"\nscopes = ["{name}:tools"]\n'
                        f'policies = "{name}"\n' for name in ("dead", "tagged"))
        with database_url("sqlite", directory) as db_url, running_deputy(
                directory, db_url, upstream_url, extra, environment={"DEPUTY_LOG_FORMAT": "json"}) as deputy:
            yield Setup(deputy, recorder, directory / "deputy.log")


async def run(setup: Setup, server: str, cmd: str, env: dict[str, str]) -> httpx.Response:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource(server))
    return await mcp_post(setup.deputy, token, server=server, headers={"Accept": "application/json"}, body={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "run", "arguments": {
            "cmd": cmd, "env": env}}})


def ran(setup: Setup, cmd: str) -> int:
    """How many calls of ``run`` with ``cmd`` reached the upstream."""
    count = 0
    for request in setup.recorder.seen:
        message: Any = json.loads(request.body or b"null")
        if isinstance(message, dict) and message.get("method") == "tools/call" and \
                (message.get("params") or {}).get("arguments", {}).get("cmd") == cmd:
            count += 1
    return count


async def test_a_has_test_on_a_map_argument_refuses_the_policy_set(setup: Setup) -> None:
    for cmd, env in (("preloaded", {"LD_PRELOAD": "/tmp/evil.so"}), ("plain", {"PATH": "/bin"})):
        response = await run(setup, "dead", cmd, env)
        assert response.status_code == 503, response.text  # no decision can be made: nothing is, fail closed
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"]["code"] == INTERNAL_ERROR
        assert ran(setup, cmd) == 0, f"{cmd}: forwarded without a decision"

    async def refusal() -> list[str]:
        records = [json.loads(line) for line in setup.log.read_text().splitlines() if line.startswith("{")]
        found = [r["message"] for r in records if r["level"] == "error"
                 and r["message"].startswith("no policy decisions for dead: the policies of dead do not validate")]
        assert found, records
        return str(found[0]).splitlines()[1:]

    problems = await eventually(refusal)
    assert len(problems) == 1, problems
    assert problems[0].startswith("maps.cedar:7:1: policy 'no-ld-preload': context.input.env is a map"), problems
    assert 'context.input.env.hasTag("LD_PRELOAD")' in problems[0]


async def test_the_hastag_test_meant_forbids_the_call(setup: Setup) -> None:
    preloaded = (await run(setup, "tagged", "tagged-preloaded", {"LD_PRELOAD": "/tmp/evil.so"})).json()
    assert preloaded["error"]["code"] == POLICY_DENIED, preloaded
    assert preloaded["error"]["data"]["policies"] == ["no-ld-preload"], preloaded
    assert ran(setup, "tagged-preloaded") == 0
    plain = (await run(setup, "tagged", "tagged-plain", {"PATH": "/bin"})).json()
    assert "result" in plain and ran(setup, "tagged-plain") == 1, plain
