"""A code or refresh token is not used up when the audit record of its token cannot be written
(issue 11, finding 9b; "a record that cannot be written means the action does not happen").

The audit log is made unwritable (a trigger aborts every insert into ``audit_leaves``):
the token endpoint answers 503 ``temporarily_unavailable``; once the log is writable
again the very same code or refresh token is redeemed.
"""

from __future__ import annotations

import httpx

from tests.security.helpers import oauth_error
from tests.support.audit_log import block_audit_writes, unblock_audit_writes
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import authorize, exchange, mcp_post, refresh, tokens_for_alice


def refused_as_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert oauth_error(response) == "temporarily_unavailable"
    assert "access_token" not in response.text and "refresh_token" not in response.text


async def test_a_code_stays_usable_when_its_token_cannot_be_recorded(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    auth = await authorize(deputy, browser=browser)
    await block_audit_writes(deputy.database_url)
    try:
        refused_as_unavailable(await exchange(deputy, auth.code, verifier=auth.verifier or ""))
    finally:
        await unblock_audit_writes(deputy.database_url)

    issued = await exchange(deputy, auth.code, verifier=auth.verifier or "")
    assert issued.status_code == 200, issued.text
    assert (await mcp_post(deputy, issued.json()["access_token"])).status_code == 200
    rotated = await refresh(deputy, issued.json()["refresh_token"])
    assert rotated.status_code == 200, "the refresh token stored with the code's consumption works"


async def test_a_refresh_token_stays_usable_when_its_successor_cannot_be_recorded(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    access_token, refresh_token = await tokens_for_alice(deputy, browser=browser)
    await block_audit_writes(deputy.database_url)
    try:
        refused_as_unavailable(await refresh(deputy, refresh_token))
    finally:
        await unblock_audit_writes(deputy.database_url)

    rotated = await refresh(deputy, refresh_token)
    assert rotated.status_code == 200, "not a replay: the failed attempt used nothing up"
    # The family was not revoked either: the first access token still works, and so does the successor.
    assert (await mcp_post(deputy, access_token)).status_code == 200
    assert (await refresh(deputy, rotated.json()["refresh_token"])).status_code == 200
