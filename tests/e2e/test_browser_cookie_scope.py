"""In Chromium: a native client's redirect listener never receives Deputy's cookies (issue 11, finding 2).

Browsers keep cookies per host, not per port (RFC 6265 §8.5). The test Deputy serves at
``http://127.0.0.1:PORT``; a real HTTP listener, standing in for a native client's loopback
redirect listener, records the ``Cookie`` header of every request it gets. After a person
signs in and consents in Chromium, the redirect to the client's ``http://localhost:P/callback``
carries the code and no Deputy cookie. The control shows why the rule exists: the same
browser, sent to the listener at ``http://127.0.0.1:P``, does hand it ``deputy_session`` — and
registering that URI is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import require
from tests.support.deputy_process import PASSWORD, RunningDeputy
from tests.support.oauth_flow import Pkce
from tests.support.redirect_listener import Listener, redirect_listener

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A redirect listener on 127.0.0.1 and [::1] (what ``localhost`` resolves to), one port."""
    with redirect_listener(("127.0.0.1", "::1")) as recorded:
        yield recorded


async def register(deputy: RunningDeputy, redirect_uri: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{deputy.url}/register", json={
            "client_name": "Native client with a loopback listener", "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none", "application_type": "native"})


async def test_the_redirect_listener_gets_the_code_and_no_deputy_cookie(
        deputy: RunningDeputy, listener: Listener, tmp_path_factory: pytest.TempPathFactory) -> None:
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    on_deputys_host = f"http://127.0.0.1:{listener.port}/callback"
    refused = await register(deputy, on_deputys_host)
    assert refused.status_code == 400, "a listener on Deputy's host would be sent Deputy's cookies"
    assert refused.json()["error"] == "invalid_redirect_uri"

    redirect_uri = f"http://localhost:{listener.port}/callback"
    registered = await register(deputy, redirect_uri)
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    url = f"{deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "st-cookies",
        "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
        "resource": deputy.resource("demo")})

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.goto(url)
        await page.fill("#username", "alice")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=Allow access?")
        names = {cookie["name"] for cookie in await page.context.cookies(deputy.url)}
        assert "deputy_session" in names, "signed in: the browser holds Deputy's session cookie"
        await page.click("button[value=approve]")
        await page.wait_for_selector("text=client received the answer")
        # Control: the same browser, sent to a listener on Deputy's host (another port), shares the cookies.
        await page.goto(f"http://127.0.0.1:{listener.port}/probe")
        await page.wait_for_selector("text=client received the answer")
        await page.screenshot(path=str(tmp_path_factory.mktemp("screens") / "listener.png"))
        await browser.close()

    callbacks = listener.callbacks()
    assert len(callbacks) == 1, listener.seen
    answer = parse_qs(urlsplit(callbacks[0].path).query)
    assert answer["state"] == ["st-cookies"] and answer["code"]
    assert "deputy" not in callbacks[0].cookie, f"Deputy's cookies reached the redirect listener: {callbacks[0]}"
    probes = [seen for seen in listener.seen if seen.path == "/probe"]
    assert len(probes) == 1 and "deputy_session=" in probes[0].cookie, "the control: same host, cookies shared"
