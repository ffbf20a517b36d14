"""Session binding (MCP RS-12, Security Best Practices "Session Hijacking"): an Mcp-Session-Id is not a credential.

A session id obtained with alice's token through test-public is refused (HTTP 404, as an
unknown session, MCP Streamable HTTP §Session Management) when presented with any other
principal's valid token.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice

BOB_PASSWORD = "bob's own long passphrase 42"
PROTOCOL = {"MCP-Protocol-Version": "2025-06-18"}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@dataclass(frozen=True)
class Session:
    alice_token: str
    session_id: str


@pytest.fixture(scope="module")
def bob(deputy: RunningDeputy) -> str:
    added = deputy.cli("users", "add", "bob", "--password", BOB_PASSWORD)
    assert added.returncode == 0, added.stderr
    return "bob"


@pytest.fixture(scope="module")
async def alice_session(deputy: RunningDeputy, browser: httpx.AsyncClient) -> Session:
    access, _refresh = await tokens_for_alice(deputy, browser=browser)
    response = await mcp_post(deputy, access)
    assert response.status_code == 200, response.text
    session_id = response.headers.get("mcp-session-id")
    assert session_id, "the demo upstream opens a session on initialize"
    initialized = await mcp_post(deputy, access, body=INITIALIZED, headers={"Mcp-Session-Id": session_id, **PROTOCOL})
    assert initialized.status_code == 202, initialized.text
    return Session(access, session_id)


async def _use(deputy: RunningDeputy, token: str, session_id: str) -> int:
    response = await mcp_post(deputy, token, body=TOOLS_LIST, headers={"Mcp-Session-Id": session_id, **PROTOCOL})
    return response.status_code


async def test_session_works_for_its_owner(deputy: RunningDeputy, alice_session: Session) -> None:
    """Control for MCP RS-12: the session answers alice's own token (200)."""
    assert await _use(deputy, alice_session.alice_token, alice_session.session_id) == 200


async def test_session_refused_for_same_user_through_another_client(
        deputy: RunningDeputy, browser: httpx.AsyncClient, alice_session: Session) -> None:
    """MCP RS-12: alice's session id with alice's token issued to test-confidential → 404."""
    other_client, _refresh = await tokens_for_alice(deputy, client_id=CONFIDENTIAL_CLIENT, browser=browser,
                                                    basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert (await mcp_post(deputy, other_client)).status_code == 200
    assert await _use(deputy, other_client, alice_session.session_id) == 404


async def test_session_refused_for_another_user(deputy: RunningDeputy, alice_session: Session, bob: str) -> None:
    """MCP RS-12: alice's session id with bob's token (same client) → 404."""
    bob_token, _refresh = await tokens_for_alice(deputy, username=bob, password=BOB_PASSWORD)
    assert (await mcp_post(deputy, bob_token)).status_code == 200
    assert await _use(deputy, bob_token, alice_session.session_id) == 404


async def test_tampered_or_bare_session_ids_are_refused(deputy: RunningDeputy, alice_session: Session) -> None:
    """MCP RS-12: a session id whose binding tag is altered or stripped → 404, even with alice's token."""
    upstream_id, _dot, tag = alice_session.session_id.rpartition(".")
    flipped = tag[:-1] + ("A" if tag[-1] != "A" else "B")
    for forged in (f"{upstream_id}.{flipped}", upstream_id, f"{upstream_id}.", "nonsense"):
        assert await _use(deputy, alice_session.alice_token, forged) == 404, forged
