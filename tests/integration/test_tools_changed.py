"""A server's schema follows its tools: a change announced while Deputy is re-reading the list is read again.

The upstream answers ``tools/list`` a while after reading its own tools, so a re-read that is
under way when a second change is announced returns the list from before that change. Deputy
must read once more; otherwise the newer tool stays unknown (and denied) until the next change.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from deputy.config import UpstreamServer
from deputy.gateway.policy_lifecycle import PolicyLifecycle
from deputy.gateway.upstream_credentials import NoCredentials
from deputy.policy import PolicyEngine
from tests.support.changing_upstream import changing_upstream

ISSUER = "http://127.0.0.1:9"
LIST_DELAY = 1.0
POLICY = '''
@id("tools")
permit (principal, action in [Deputy::Action::"echo", Deputy::Action::"grow", Deputy::Action::"grow2"], resource);
'''


async def call_tool(url: str, name: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200 and "grown" in response.text, response.text


def listings(listed: Path) -> int:
    """How many times the upstream has read its tools for a ``tools/list``."""
    return len(listed.read_text().splitlines()) if listed.exists() else 0


async def listings_begun(listed: Path, more_than: int) -> None:
    """Until the upstream has read its tools more than ``more_than`` times (bounded: it reports through a file)."""
    for _ in range(200):
        if listings(listed) > more_than:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the upstream did not read its tools a {more_than + 1}th time")


async def test_a_change_announced_during_a_reread_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "tools.cedar").write_text(POLICY)
    listed = tmp_path / "listed"
    with changing_upstream(list_delay=LIST_DELAY, listed=listed) as url:
        server = UpstreamServer(name="changing", resource=f"{ISSUER}/mcp/changing", title="changing",
                                scopes=("t",), required_scopes=(), url=url, policies=tmp_path)
        policy = PolicyLifecycle(server, NoCredentials(), ISSUER)
        engine = await policy.ready_engine()
        assert isinstance(engine, PolicyEngine), engine
        assert "extra" not in engine.loaded.schema.tools
        await call_tool(url, "grow")
        before = listings(listed)
        policy.tools_changed()  # the first re-read starts; it will read the list with `extra`
        await listings_begun(listed, before)  # ...and has: its answer is on the way, slowly
        await call_tool(url, "grow2")
        policy.tools_changed()  # announced during that re-read: its answer will not have `extra2`
        deadline = time.monotonic() + 10 * LIST_DELAY
        while time.monotonic() < deadline:
            if {"extra", "extra2"} <= engine.loaded.schema.tools:  # the engine swaps its schema in place
                break
            await asyncio.sleep(0.1)
        assert {"extra", "extra2"} <= engine.loaded.schema.tools
        await policy.close()
