"""Issue 12, "Config clients come back" and "Tokens outlive a removed or denied client", on a running Deputy.

Every start and every CLI command re-put each ``[[clients]]`` entry as active, silently undoing
`deputy clients deny|remove`. The configuration file owns a client's metadata, the operator's
decision in the database its status: the re-sync (which every CLI command runs, as a start does)
keeps a denied or removed config client so and says so. The gateway refuses a withdrawn client's
token that was issued before, and the token endpoint issues it no new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, post_token

DENIED = "agent-to-deny"
REMOVED = "agent-to-remove"
RACED = "agent-removed-while-busy"
ISSUERS = 8
SECRET = "withdrawn-agent-s3cret-0123456789"


def agent(client_id: str) -> str:
    return f'''
[[clients]]
client_id = "{client_id}"
client_name = "An agent the operator withdraws"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{SECRET}"
grant_types = ["client_credentials"]
'''


@pytest.fixture(scope="module")
def deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-config-status-{backend}")
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, agent(DENIED) + agent(REMOVED) + agent(RACED)) as running):
        yield running


async def token_for(deputy: RunningDeputy, client_id: str) -> httpx.Response:
    return await post_token(deputy, [("grant_type", "client_credentials"), ("resource", deputy.resource("demo"))],
                            basic=(client_id, SECRET))


async def refused_at_the_gateway(deputy: RunningDeputy, token: str) -> None:
    """Until the running server's revocation view (polled about once a second) refuses ``token``; bounded."""
    for _ in range(200):
        answer = await mcp_post(deputy, token)
        if answer.status_code == 401:
            assert 'error="invalid_token"' in answer.headers["www-authenticate"]
            return
        assert answer.status_code == 200, answer.text
        await asyncio.sleep(0.05)
    raise AssertionError("the withdrawn client's token is still accepted")


def flat(text: str) -> str:
    return " ".join(text.split())  # Rich wraps lines at the terminal width


@pytest.mark.parametrize("status", ["denied", "removed"])
async def test_a_withdrawn_config_client_stays_withdrawn_and_its_tokens_stop_working(
        deputy: RunningDeputy, status: str) -> None:
    """Issue 12: after `deputy clients deny|remove` of a [[clients]] entry, the next CLI command's re-sync (a
    start's) keeps it withdrawn with a warning naming it and how to serve it again; the token it held before
    is refused at the gateway and the token endpoint refuses it (invalid_client)."""
    client_id = DENIED if status == "denied" else REMOVED
    issued = await token_for(deputy, client_id)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert (await mcp_post(deputy, token)).status_code == 200

    withdrawn = deputy.cli("clients", "deny" if status == "denied" else "remove", client_id)
    assert withdrawn.returncode == 0, withdrawn.stderr
    if status == "removed":
        assert "[[clients]] entry is still in the configuration file" in flat(withdrawn.stdout)
    await refused_at_the_gateway(deputy, token)

    for _ in range(2):  # each CLI command re-applies the configuration file, as a start does
        shown = deputy.cli("clients", "show", client_id)
        assert shown.returncode == 0, shown.stderr
        assert status in shown.stdout
        warning = flat(shown.stderr)
        assert f"configured client {client_id} stays {status}" in warning
        assert f"deputy clients approve {client_id}" in warning
        refused = await token_for(deputy, client_id)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text
    assert (await mcp_post(deputy, token)).status_code == 401

    approved = deputy.cli("clients", "approve", client_id)
    assert approved.returncode == 0, approved.stderr
    assert (await token_for(deputy, client_id)).status_code == 200
    assert f"configured client {client_id} stays" not in deputy.cli("clients", "show", client_id).stderr


async def test_no_token_issued_while_a_client_is_removed_survives(deputy: RunningDeputy) -> None:
    """Issue 12: tokens requested without pause while `deputy clients remove` runs are all refused at the gateway
    once it has returned, and every request made after it is refused at the token endpoint."""
    issued: list[str] = []
    busy = [asyncio.Event() for _ in range(ISSUERS)]
    removed = asyncio.Event()
    refused_after: list[int] = []

    async def issuer(index: int) -> None:
        while True:
            after = removed.is_set()
            answer = await token_for(deputy, RACED)
            if answer.status_code == 200:
                assert not after, "a token was issued to the client after its removal returned"
                issued.append(answer.json()["access_token"])
            else:
                assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", answer.text
                if after:
                    refused_after.append(index)
                    return
            busy[index].set()

    tasks = [asyncio.create_task(issuer(i)) for i in range(ISSUERS)]
    for event in busy:
        await event.wait()
    result = await asyncio.to_thread(deputy.cli, "clients", "remove", RACED)
    removed.set()
    await asyncio.gather(*tasks)
    assert result.returncode == 0, result.stderr
    assert len(refused_after) == ISSUERS and issued
    for token in issued:
        await refused_at_the_gateway(deputy, token)
