"""A GET stream lasts only as long as the token that opened it is good (deputy.gateway.stream_lifetime).

From an outside review (2026-12-06): a GET stream, authorized once when opened, stayed open after its token was
revoked (a user disabled) or expired, relaying the server's messages to someone no longer allowed them. Now it
ends, cleanly, when the token's grant is revoked or its ``exp`` passes. Against a real ``deputy serve`` and its
stdio demo server (a session with a GET stream); the expiry itself with the real clock, in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from deputy import clock
from deputy.gateway.principal import Principal
from deputy.gateway.revocations import RevocationsUnavailable
from deputy.gateway.stream_lifetime import until_token_ends
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice

BOB_PASSWORD = "bob's own long passphrase"


@pytest.fixture(scope="module")
def deputy(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("stream-lifetime")
    with database_url("sqlite", directory) as url, running_deputy(directory, url, upstream_url,
                                                                   users=(("bob", BOB_PASSWORD),)) as running:
        yield running


async def test_a_get_stream_ends_when_its_users_grants_are_revoked(deputy: RunningDeputy) -> None:
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"), username="bob", password=BOB_PASSWORD)
    opened = await mcp_post(deputy, token, server="local")
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", **session}
    ready = asyncio.Event()

    async def stream() -> int:
        async with httpx.AsyncClient(timeout=60) as http, \
                http.stream("GET", deputy.resource("local"), headers=headers) as response:
            ready.set()
            await response.aread()  # to the stream's end
            return response.status_code

    reading = asyncio.create_task(stream())
    await asyncio.wait_for(ready.wait(), 30)
    await asyncio.sleep(1)
    assert not reading.done(), "the stream stays open while the token is good"
    disabled = deputy.cli("users", "disable", "bob")
    assert disabled.returncode == 0, disabled.stderr
    assert await asyncio.wait_for(reading, 20) == 200, "ended cleanly, within the revocation view's staleness"


def principal(expires_at: int, grant_id: str | None = "grant-1") -> Principal:
    return Principal(user="alice", agent="agent", scopes=frozenset(), token_id="t", server="demo",
                     expires_at=expires_at, grant_id=grant_id)


async def test_the_end_comes_at_exp_at_a_revocation_and_when_revocations_cannot_be_checked() -> None:
    never = asyncio.Event()
    soon = principal(clock.now() + 1)
    assert await asyncio.wait_for(until_token_ends(soon, never, lambda grant: False), 5) == "the token expired"
    good = principal(clock.now() + 3600)
    revoked: set[str] = set()
    watching = asyncio.create_task(until_token_ends(good, never, lambda grant: grant in revoked))
    await asyncio.sleep(0.2)
    assert not watching.done()
    revoked.add("grant-1")
    assert await asyncio.wait_for(watching, 5) == "the token was revoked"

    def unknowable(grant: str) -> bool:
        raise RevocationsUnavailable("stale")

    assert await asyncio.wait_for(until_token_ends(good, never, unknowable), 5) == "revocations cannot be checked"
    shutdown = asyncio.Event()
    shutdown.set()
    assert await until_token_ends(good, shutdown, lambda grant: False) == "Deputy is shutting down"
