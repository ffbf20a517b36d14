"""Issue 12: an agent whose own token is revoked loses every token it obtained by exchange (RFC 8693, RFC 7009).

Through a running Deputy on both backends: Alice authorizes the public client; agent A
exchanges her token with its own client credentials token (its ``actor_token``), and
agent B exchanges A's token with B's own. A revokes its own token at ``POST /revoke``:
the gateway refuses A's exchanged token and B's token derived from it (401, within the
revocation staleness bound — bounded polls), introspection says they are inactive, and
Alice's own token is untouched. Before the fix both exchanged tokens kept working.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.security.helpers import assert_invalid_token, oauth_error, wait_for_status
from tests.support.agents import post_form
from tests.support.delegation import AGENT_A, AGENT_B, agent_own_token, basic, delegation_deputy, exchange_token
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice


@pytest.fixture(scope="module")
def deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    with delegation_deputy(backend, upstream_url, tmp_path_factory.mktemp(f"deputy-actor-{backend}")) as running:
        yield running


def issued(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def introspect(deputy: RunningDeputy, token: str, agent: str) -> dict[str, object]:
    response = await post_form(deputy, "/introspect", [("token", token)], basic=basic(agent))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_revoking_the_agents_own_token_ends_what_it_exchanged(deputy: RunningDeputy) -> None:
    """Issue 12: A revokes its actor token; its exchanged token, and B's derived from it, are refused."""
    alice, _refresh = await tokens_for_alice(deputy)
    a_own = await agent_own_token(deputy, AGENT_A)
    by_a = issued(await exchange_token(deputy, AGENT_A, alice, a_own))
    by_b = issued(await exchange_token(deputy, AGENT_B, by_a, await agent_own_token(deputy, AGENT_B)))
    for token in (by_a, by_b):
        assert (await mcp_post(deputy, token)).status_code == 200
    assert (await introspect(deputy, by_a, AGENT_A))["active"] is True

    revoked = await post_form(deputy, "/revoke", [("token", a_own)], basic=basic(AGENT_A))
    assert revoked.status_code == 200, revoked.text

    for token in (by_a, by_b):
        refused = await wait_for_status(lambda t=token: mcp_post(deputy, t), 401)  # type: ignore[misc]
        assert_invalid_token(deputy, refused)
    assert await introspect(deputy, by_a, AGENT_A) == {"active": False}
    assert await introspect(deputy, by_b, AGENT_B) == {"active": False}
    # A's authority is gone, Alice's is not: her own token still works, and A cannot exchange again with the
    # revoked actor token (nor can B build on A's revoked token).
    assert (await mcp_post(deputy, alice)).status_code == 200
    again = await exchange_token(deputy, AGENT_A, alice, a_own)
    assert again.status_code == 400 and oauth_error(again) == "invalid_grant", again.text
    onward = await exchange_token(deputy, AGENT_B, by_a, await agent_own_token(deputy, AGENT_B))
    assert onward.status_code == 400 and oauth_error(onward) == "invalid_grant", onward.text
    # With a new actor token of its own, A may act for Alice again.
    assert (await mcp_post(deputy, issued(await exchange_token(
        deputy, AGENT_A, alice, await agent_own_token(deputy, AGENT_A))))).status_code == 200
