"""`deputy keys rotate` on a running Deputy: new tokens get the new key, old tokens keep working."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from joserfc import jws

from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


async def test_rotation_while_running(deputy: RunningDeputy) -> None:
    old_token, _ = await tokens_for_alice(deputy)
    old_kid = _kid(old_token)
    rotated = await asyncio.to_thread(deputy.cli, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr

    async with httpx.AsyncClient() as http:
        for _ in range(50):  # the running process re-reads keys.json within about a second
            jwks = (await http.get(f"{deputy.url}/.well-known/jwks.json")).json()
            if len(jwks["keys"]) == 2:
                break
            await asyncio.sleep(0.1)
    kids = {k["kid"] for k in jwks["keys"]}
    assert old_kid in kids and len(kids) == 2, "the retired key stays published"
    assert all("d" not in k for k in jwks["keys"]), "no private key material in the JWKS"

    new_token, _ = await tokens_for_alice(deputy)
    assert _kid(new_token) in kids - {old_kid}, "new tokens are signed with the new key"
    for token in (old_token, new_token):
        response = await mcp_post(deputy, token)  # initialize, forwarded to the demo upstream
        assert response.status_code == 200, "tokens signed by either published key are accepted"
