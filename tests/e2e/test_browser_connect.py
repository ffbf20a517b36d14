"""Connecting an account at an upstream in a real browser: Debian's Chromium driven by Playwright (issue 15).

The whole walk a person makes from the link the gateway gives her: Deputy's sign-in, the connect page, the
third-party authorization server's own login and consent pages (npm oidc-provider, tests/support/upstream_oauth.py),
back through Deputy's callback to her connections page, which lists the connection; then Disconnect. What it checks
beyond the HTTP tests: the cookies (the browser binding under /connect, SameSite=Lax across the authorization
server's redirect back), the CSRF fields and the Origin a real browser sends, and the pages' CSP letting the forms
work without any script.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.connection_pages import oauth_server_toml
from tests.support.databases import database_url, require
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.upstream_oauth import UpstreamAuthServer, upstream_oauth

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class Stack:
    deputy: RunningDeputy
    auth: UpstreamAuthServer


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def stack(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp(f"deputy-browser-connect-{backend}")
    with upstream_oauth() as (auth, upstream):
        extra = oauth_server_toml("ext", "Ext Tools", upstream.url)
        with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
            yield Stack(deputy, auth)


async def test_a_person_connects_and_disconnects_in_chromium(stack: Stack,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    shots = tmp_path_factory.mktemp("screens")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.goto(f"{stack.deputy.url}/connect/ext")  # the connect_url the gateway hands out
        assert "Sign in" in await page.title()
        assert "Sign in to connect your account at Ext Tools" in await page.inner_text("main")
        await page.fill("#username", "alice")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")

        await page.wait_for_selector("text=Connect your account at Ext Tools?")
        assert "Signed in to Deputy as alice" in await page.inner_text("main")
        await page.screenshot(path=str(shots / "connect.png"))
        await page.click("button:has-text('Connect')")

        await page.wait_for_selector("#sign-in")  # the authorization server's own login page
        assert page.url.startswith(stack.auth.issuer)
        await page.fill("input[name=username]", "alice")
        await page.fill("input[name=password]", "alice")
        await page.click("#sign-in")
        await page.wait_for_selector("#allow")  # its consent page
        await page.click("#allow")

        await page.wait_for_selector("#notice")
        assert page.url == f"{stack.deputy.url}/connections"
        assert await page.inner_text("#notice") == "Connected to Ext Tools."
        listed = await page.inner_text("#connection-ext")
        assert "Ext Tools" in listed and "active" in listed and "tools:read" in listed
        assert stack.auth.issuer in listed
        binding = [c for c in await page.context.cookies() if c["name"] == "deputy_connect"]
        assert len(binding) == 1 and binding[0]["path"] == "/connect" and binding[0]["httpOnly"]
        assert binding[0]["sameSite"] == "Lax"
        await page.screenshot(path=str(shots / "connections.png"))

        await page.click("#connection-ext button:has-text('Disconnect')")
        await page.wait_for_selector("text=Disconnected from Ext Tools.")
        assert await page.locator("#connection-ext").count() == 0
        assert "Ext Tools — Connect" in await page.inner_text("main")
        await page.reload()  # the notice was for one showing; reloading a GET decides nothing
        assert await page.locator("#notice").count() == 0
        await browser.close()
    assert stack.auth.revoked_tokens(), "disconnecting revoked the token at the authorization server"
