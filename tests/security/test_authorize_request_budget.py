"""What one client address can make ``GET /authorize`` store is bounded: in number, in size, and not by other sites.

From the outside review of the browser-facing pages (2026-12-06): ``/authorize`` stores each request it validated as a
pending authorization request (a database row kept ten minutes, ``state`` of up to the 8 KiB query string in it),
before anyone has signed in, for anyone and without a budget; and each insert first deletes the expired rows through
an unindexed column, so a flood made every sign-in slower. Now (deputy.oauth.authorize):

- requests about to be stored are counted per client address in a sliding minute (``[limits]
  authorization_requests_per_minute``, 60 by default, the value this Deputy runs with); past it the answer is a 429
  page with ``Retry-After``, nothing is stored and nothing is redirected. Another address keeps its own budget, and
  a request refused before it would be stored spends none;
- a request the browser fetches as no page of its own (an image, a frame: Fetch Metadata) is refused before it
  counts or stores anything, so a page elsewhere cannot spend its visitors' budget with ``<img>`` tags;
- ``state`` is at most ``MAX_STATE`` characters: longer is ``invalid_request`` on a page, never a redirect; the other
  parameters kept are checked values, ``prompt`` each of its values once (a repeated one used to be kept as sent).

The index on the rows' expiry is checked with the migrations (tests/integration/test_storage.py). Each test sends
from a loopback address of its own, so the budgets the tests spend are apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from deputy.limits import LimitSettings
from deputy.oauth.authorize import MAX_STATE
from deputy.storage.db import Database
from deputy.storage.tables import authorization_requests
from tests.support.databases import database_url
from tests.support.deputy_process import PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy, running_deputy
from tests.support.oauth_flow import Pkce

LIMIT = LimitSettings().authorization_requests_per_minute  # the default, set explicitly (the suite relaxes it)
IMAGE = {"sec-fetch-dest": "image", "sec-fetch-mode": "no-cors", "sec-fetch-site": "cross-site"}
FRAME = {"sec-fetch-dest": "iframe", "sec-fetch-mode": "navigate", "sec-fetch-site": "cross-site"}
NAVIGATION = {"sec-fetch-dest": "document", "sec-fetch-mode": "navigate", "sec-fetch-site": "none"}


@pytest.fixture(scope="module")
def deputy(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp("deputy-authorize-budget")
    extra = f"\n[limits]\nauthorization_requests_per_minute = {LIMIT}\n"
    with (database_url("sqlite", directory) as url,
          running_deputy(directory, url, upstream_url, extra) as running):
        yield running


def authorization_url(deputy: RunningDeputy, state: str = "s", **changed: str) -> str:
    return f"{deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI, "state": state,
        "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256", "resource": deputy.resource("demo"),
        **changed})


def browser_at(address: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60, headers=headers, limits=httpx.Limits(max_connections=20),
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def pending_rows(deputy: RunningDeputy) -> int:
    database = Database(deputy.database_url)
    try:
        async with database.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(authorization_requests))).scalar_one())
    finally:
        await database.dispose()


def refused_on_a_page(answer: httpx.Response, status: int, error: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    assert "location" not in answer.headers, "a refusal here is a page, never a redirect"
    assert answer.headers["content-type"].startswith("text/html") and f"<code>{error}</code>" in answer.text


async def test_one_address_cannot_store_pending_authorization_requests_without_bound(deputy: RunningDeputy) -> None:
    """One address sends 200 authorization requests at once, each with the largest ``state`` kept: at most the
    budget is stored, and the rest are 429 pages with ``Retry-After``."""
    before = await pending_rows(deputy)
    async with browser_at("127.0.3.1") as browser:
        answers = await asyncio.gather(*(browser.get(authorization_url(deputy, "x" * MAX_STATE))
                                         for _ in range(200)))
    statuses = [answer.status_code for answer in answers]
    stored = await pending_rows(deputy) - before
    assert set(statuses) == {200, 429}, sorted(set(statuses))
    assert statuses.count(200) == stored <= LIMIT, f"one address stored {stored} pending authorization requests"
    refused = [answer for answer in answers if answer.status_code != 200]
    assert len(refused) >= 200 - LIMIT, len(refused)
    for answer in refused:
        refused_on_a_page(answer, 429, "temporarily_unavailable")
        assert 1 <= int(answer.headers["retry-after"]) <= 60


async def test_another_address_keeps_its_own_budget(deputy: RunningDeputy) -> None:
    async with browser_at("127.0.3.2") as spender, browser_at("127.0.3.3") as other:
        statuses = [(await spender.get(authorization_url(deputy))).status_code for _ in range(LIMIT + 1)]
        assert statuses == [200] * LIMIT + [429], statuses
        assert (await other.get(authorization_url(deputy))).status_code == 200


async def test_requests_refused_before_they_would_be_stored_spend_no_budget(deputy: RunningDeputy) -> None:
    """Refusals store nothing, so they count for nothing: an error shown on a page (oversize ``state``) or sent
    back to the registered redirect URI (no PKCE challenge) leaves the address its whole budget."""
    async with browser_at("127.0.3.4") as browser:
        for _ in range(LIMIT + 5):
            refused_on_a_page(await browser.get(authorization_url(deputy, "x" * (MAX_STATE + 1))), 400,
                              "invalid_request")
            sent_back = await browser.get(authorization_url(deputy, code_challenge=""))
            assert sent_back.status_code == 303 and "error=invalid_request" in sent_back.headers["location"]
        assert (await browser.get(authorization_url(deputy))).status_code == 200


async def test_images_and_frames_store_nothing_and_spend_no_budget(deputy: RunningDeputy) -> None:
    """``<img src="https://deputy/authorize?...">`` on a page elsewhere: the browser says it fetches an image (or a
    frame), so the request is refused before it counts or stores, and a person at that address still signs in."""
    before = await pending_rows(deputy)
    async with browser_at("127.0.3.5", IMAGE) as images, browser_at("127.0.3.5", FRAME) as frames:
        answers = [await images.get(authorization_url(deputy)) for _ in range(LIMIT + 5)]
        answers += [await frames.get(authorization_url(deputy)) for _ in range(5)]
    for answer in answers:
        refused_on_a_page(answer, 403, "invalid_request")
    assert await pending_rows(deputy) == before
    async with browser_at("127.0.3.5", NAVIGATION) as person:
        assert (await person.get(authorization_url(deputy))).status_code == 200


async def test_an_oversize_state_is_invalid_request_on_a_page(deputy: RunningDeputy) -> None:
    """``state`` is kept and echoed in every answer: one longer than ``MAX_STATE`` is refused on a page (an error
    sent back would have to carry it), whichever of repeated ``state`` parameters it is; ``MAX_STATE`` is kept."""
    before = await pending_rows(deputy)
    async with browser_at("127.0.3.6") as browser:
        refused_on_a_page(await browser.get(authorization_url(deputy, "y" * (MAX_STATE + 1))), 400, "invalid_request")
        repeated = authorization_url(deputy) + "&" + urlencode({"state": "y" * (MAX_STATE + 1)})
        refused_on_a_page(await browser.get(repeated), 400, "invalid_request")
        assert await pending_rows(deputy) == before
        assert (await browser.get(authorization_url(deputy, "y" * MAX_STATE))).status_code == 200
    assert await pending_rows(deputy) == before + 1


async def test_a_prompt_is_kept_with_each_value_once(deputy: RunningDeputy) -> None:
    """``prompt=login login …`` (OpenID Connect Core §3.1.2.1: a space-separated list) is the one value ``login``:
    the row keeps that, not the 6 KB sent."""
    async with browser_at("127.0.3.7") as browser:
        answer = await browser.get(authorization_url(deputy, "p", prompt=" ".join(["login"] * 1000 + ["consent"])))
    assert answer.status_code == 200, answer.text[:300]
    database = Database(deputy.database_url)
    try:
        async with database.engine.connect() as conn:
            kept = [row.params for row in await conn.execute(select(authorization_requests.c.params))]
    finally:
        await database.dispose()
    assert [params["prompt"] for params in kept if params.get("state") == "p"] == ["login consent"]
