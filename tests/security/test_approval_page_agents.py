"""The approval page tells an outside issuer's agent from Deputy's own (deputy.web.approvals).

From an outside review (2026-12-06): the page listed the agents a held call came through by ``client_id`` (or
``sub``) only, dropping each hop's ``iss``. A hop vouched for by an outside issuer whose client is named like one of
Deputy's own agents read exactly as Deputy's agent, although the policy engine keeps them apart
(``context.actor_client_ids``) and the approval is bound to that very chain. Now such a hop names its issuer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from deputy.storage.approvals import ApprovalRepository
from deputy.storage.db import Database
from deputy.storage.users import UserRepository
from tests.support.databases import database_url
from tests.support.deputy_process import PUBLIC_CLIENT, RunningDeputy, running_deputy
from tests.support.sdk_client import page_text, parse_form

BOB_PASSWORD = "bob's own long passphrase"
OUTSIDE_ISSUER = "https://outside-issuer.example"


@pytest.fixture(scope="module")
def review_deputy(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp("deputy-approval-page-agents")
    with (database_url("sqlite", directory) as url,
          running_deputy(directory, url, upstream_url, users=(("bob", BOB_PASSWORD),)) as running):
        yield running


async def _approval(deputy: RunningDeputy, actors: list[dict[str, str]], reason: str) -> str:
    """A held call of alice's, through ``actors`` (current actor first), recorded as the gateway records one
    (:meth:`PolicyStage._approval`: ``actors`` are each hop's ``Actor.claim()``, its ``iss`` included)."""
    database = Database(deputy.database_url)
    try:
        alice = await UserRepository(database.engine).find("alice")
        assert alice is not None
        approval = await ApprovalRepository(database.engine).create(
            server="demo", tool="delete_user", arguments={"id": 4242, "reason": reason}, user_id=alice.user_id,
            agent=PUBLIC_CLIENT, actors=actors)
    finally:
        await database.dispose()
    return approval.approval_id


async def _approval_page_as_bob(deputy: RunningDeputy, approval_id: str) -> str:
    page_url = f"{deputy.url}/approvals/{approval_id}"
    async with httpx.AsyncClient(timeout=30) as browser:
        sign_in = await browser.get(page_url)
        assert sign_in.status_code == 200, sign_in.text
        form = parse_form(sign_in.text)
        signed_in = await browser.post(form.resolve_action(page_url),
                                       data=form.data(username="bob", password=BOB_PASSWORD))
        assert signed_in.status_code == 303, signed_in.text
        page = await browser.get(urljoin(page_url, signed_in.headers["location"]))
    assert page.status_code == 200, page.text
    assert "Approve" in page.text, "bob may decide: he is shown the buttons"
    return page.text


async def test_the_approval_page_tells_an_outside_issuers_agent_from_deputys_own(review_deputy: RunningDeputy) -> None:
    """The same client name at two issuers is two agents (deputy.act_chain: "its client_id is a client of that
    issuer, not of Deputy"; the policy's ``actor_client_ids`` keeps only Deputy's). The approver, who decides on what
    the page shows, must be able to tell them apart: the outside hop's issuer is on the page."""
    own = await _approval(review_deputy, [{"sub": "agent-b", "client_id": "agent-b", "iss": review_deputy.url}],
                          "through Deputy's own agent-b")
    outside = await _approval(review_deputy, [{"sub": "agent-b", "client_id": "agent-b", "iss": OUTSIDE_ISSUER}],
                              "through an outside issuer's agent-b")
    own_page = page_text(await _approval_page_as_bob(review_deputy, own))
    outside_page = page_text(await _approval_page_as_bob(review_deputy, outside))

    def agents(text: str) -> str:
        found = re.search(r"agents, newest first: (.*?)\)", text)
        assert found is not None, text
        return found.group(1)

    assert OUTSIDE_ISSUER in outside_page, f"the outside hop is shown as {agents(outside_page)!r}, no issuer named"
    assert agents(own_page) != agents(outside_page), "two different agents read the same to the approver"
