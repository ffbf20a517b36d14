"""Issue 12, operator terminals (the pages' part): a person decides on the consent and approval pages by
reading names and arguments others chose, so those pages must show them as they are. HTML escaping stops
markup but not the Unicode bidi controls (UAX #9 §2): a browser obeys U+202E inside any element, and
``evil\u202egnp.exe`` reads as ``evilexe.png``. Every value the pages print shows such characters as
escapes (``\\u202e``), on both backends; in Chromium too, when it is installed.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from deputy.storage.approvals import Approval, ApprovalRepository
from deputy.storage.db import Database
from tests.security.test_pages import authorization_url
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import require
from tests.support.deputy_process import PASSWORD, REDIRECT_URI, RunningDeputy
from tests.support.sdk_client import parse_form

# Bidi overrides, isolates and marks, zero-width characters, a tag, and terminal controls.
ACTING = ("\u202e", "\u202d", "\u2066", "\u2069", "\u200f", "\u200b", "\ufeff", "\U000e0041", "\x1b", "\x9b")
NAME = "evil\u202egnp.exe\u2066\u200f\u200b\ufeff\U000e0041\x1b[2J\x9b"


def assert_shown(page: str) -> None:
    raw = [c for c in ACTING if c in page]
    assert not raw, raw
    assert "evil\\u202egnp.exe\\u2066\\u200f\\u200b\\ufeff\\U000e0041\\x1b[2J\\x9b" in page


async def test_consent_page_shows_a_bidi_client_name(deputy: RunningDeputy) -> None:
    """Issue 12: the client's name (client_name of its registration or metadata document) came out raw."""
    async with httpx.AsyncClient(timeout=30) as http:
        registered = await http.post(f"{deputy.url}/register", json={
            "client_name": NAME, "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "application_type": "native"})
        assert registered.status_code == 201, registered.text
        url = authorization_url(deputy, registered.json()["client_id"], "st-outside-text")
        form = parse_form((await http.get(url)).text)
        signed = await http.post(form.resolve_action(url), data=form.data(username="alice", password=PASSWORD))
        assert signed.status_code == 303, signed.text
        consent = await http.get(urljoin(url, signed.headers["location"]))
    assert consent.status_code == 200, consent.text
    assert "Allow" in consent.text
    assert_shown(consent.text)


async def hold(deputy: RunningDeputy) -> Approval:
    """A held call of someone else's, as an agent would have it held: its tool, arguments and chain hostile."""
    database = Database(deputy.database_url)
    try:
        return await ApprovalRepository(database.engine).create(
            server="demo", tool=NAME, arguments={"reason": NAME, NAME: [1, 2]}, user_id="someone-else",
            agent=NAME, actors=[{"sub": NAME}])
    finally:
        await database.dispose()


@asynccontextmanager
async def signed_in(page_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        form = parse_form((await http.get(page_url)).text)
        answer = await http.post(urljoin(page_url, form.action),
                                 data={**form.fields, "username": "alice", "password": PASSWORD})
        assert answer.status_code == 303 and answer.headers["location"] == urlsplit(page_url).path, answer.text
        yield http


async def test_approval_page_shows_bidi_tool_and_arguments(deputy: RunningDeputy) -> None:
    """Issue 12: the approval page must show the exact call; a bidi override in it reordered what was read."""
    approval = await hold(deputy)
    page_url = f"{deputy.url}/approvals/{approval.approval_id}"
    async with signed_in(page_url) as alice:
        page = await alice.get(page_url)
    assert page.status_code == 200, page.text
    assert_shown(page.text)
    assert page.text.count("evil\\u202egnp.exe") >= 5  # tool, agent, the chain, an argument's key and value
    assert '"reason": "evil\\u202egnp.exe' in html.unescape(page.text)  # the arguments' own layout kept


@pytest.mark.browser
async def test_approval_page_in_chromium_has_no_bidi_override(deputy: RunningDeputy) -> None:
    """Issue 12: what Chromium renders as the page's text holds no raw bidi control."""
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    approval = await hold(deputy)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{deputy.url}/approvals/{approval.approval_id}")
            await page.fill("#username", "alice")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector("text=Approve this call?")
            shown = await page.inner_text("main")
        finally:
            await browser.close()
    assert not [c for c in ACTING if c in shown]
    assert "evil\\u202egnp.exe" in shown and "\\x1b[2J" in shown
