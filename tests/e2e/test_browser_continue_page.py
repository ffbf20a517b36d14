"""In Chromium: a remembered consent to a loopback redirect still stops on a Continue page (issue 12, finding 1).

Any process on the user's machine can listen on a loopback port and present a known client's
id, so the MCP authorization spec's "display the redirect hostname" must hold even when the
consent is remembered. The client's listener is on ``[::1]``. The first sign-in asks for
consent; the second, in the same browser, shows a page naming the client and ``[::1]:PORT``
and sends the code only after Continue — which also shows the request-bound CSRF token and
the Origin check pass in a real browser.
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
def callbacks() -> Iterator[Listener]:
    """A native client's redirect listener on ``[::1]``."""
    with redirect_listener(("::1",)) as recorded:
        yield recorded


async def test_remembered_consent_to_a_loopback_client_shows_the_host_first(
        deputy: RunningDeputy, callbacks: Listener, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 12: second sign-in of a remembered loopback client → Continue page naming [::1]:PORT, then the code."""
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    port = callbacks.port
    async with httpx.AsyncClient() as http:
        registered = await http.post(f"{deputy.url}/register", json={
            "client_name": "Loopback app", "redirect_uris": [f"http://[::1]:{port}/callback"],
            "token_endpoint_auth_method": "none", "application_type": "native"})
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    redirect_uri = f"http://[::1]:{port}/callback"

    def url(state: str) -> str:
        return f"{deputy.url}/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state,
            "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
            "resource": deputy.resource("demo")})

    shots = tmp_path_factory.mktemp("screens")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.goto(url("st-first"))
        await page.fill("#username", "alice")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=Allow access?")
        await page.click("button[value=approve]")
        await page.wait_for_selector("text=client received the answer")
        assert len(callbacks.callbacks()) == 1

        await page.goto(url("st-second"))
        await page.wait_for_selector("text=Continue to Loopback app?")
        shown = await page.inner_text("main")
        assert f"[::1]:{port}" in shown and "Loopback app" in shown, shown
        assert len(callbacks.callbacks()) == 1, "no code before the person pressed Continue"
        await page.screenshot(path=str(shots / "continue.png"))
        await page.click("button[value=approve]")
        await page.wait_for_selector("text=client received the answer")
        await browser.close()

    assert len(callbacks.callbacks()) == 2, callbacks.seen
    answer = parse_qs(urlsplit(callbacks.callbacks()[1].path).query)
    assert answer["state"] == ["st-second"] and answer["code"]
