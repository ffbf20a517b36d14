"""Login and consent in a real browser: Debian's Chromium driven by Playwright.

The pages are plain forms, so what a program does over HTTP a person does here
by typing and clicking; this checks the cookies, CSRF fields and redirects work
in an actual browser on a loopback http deployment (no Secure, no __Host-).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import shutil
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import require
from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_person_signs_in_and_consents_in_chromium(deputy: RunningDeputy, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    url = f"{deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI, "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": deputy.resource("demo"),
        "scope": "demo:tools"})
    callbacks: list[str] = []
    # A user of its own: a consent another test gave as alice would be remembered and skip the consent page.
    person = f"person-{secrets.token_hex(4)}"
    added = await asyncio.to_thread(deputy.cli, "users", "add", person, "--password", PASSWORD)
    assert added.returncode == 0, added.stderr

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()

        async def capture(route, request):  # type: ignore[no-untyped-def]
            callbacks.append(request.url)
            await route.fulfill(status=200, content_type="text/html", body="<p>client received the code</p>")

        await page.route(f"{REDIRECT_URI}*", capture)
        await page.goto(url)
        assert "Sign in" in await page.title()
        await page.fill("#username", person)
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=Allow access?")
        consent = await page.inner_text("main")
        assert "Test public client" in consent
        assert "localhost:9" in consent, "the consent page names the redirect host"
        assert "demo:tools" in consent
        assert "runs on your own computer" in consent, "loopback redirect warning"
        shots = tmp_path_factory.mktemp("screens")
        await page.screenshot(path=str(shots / "consent.png"))
        await page.click("button[value=approve]")
        await page.wait_for_selector("text=client received the code")
        await browser.close()

    assert len(callbacks) == 1
    answer = parse_qs(urlsplit(callbacks[0]).query)
    assert answer["state"] == [state]
    assert answer["iss"] == [deputy.url]
    async with httpx.AsyncClient() as http:
        token = await http.post(f"{deputy.url}/token", data={
            "grant_type": "authorization_code", "code": answer["code"][0], "redirect_uri": REDIRECT_URI,
            "client_id": PUBLIC_CLIENT, "code_verifier": verifier, "resource": deputy.resource("demo")})
    assert token.status_code == 200, token.text
    assert token.json()["token_type"] == "Bearer"
