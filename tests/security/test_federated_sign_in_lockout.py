"""Nobody can lock a person out of signing in through the identity provider by failing sign-ins from her address.

The callback ``GET /login/callback/corp`` is reachable from any web page: thirty ``<img
src="https://deputy/login/callback/corp?state=x">`` on a page an employee opens send thirty forged answers from the
company's address (and behind a reverse proxy every client has the proxy's address, so an outsider sends them
directly). Each is refused and the refusals are still throttled (at most ``signin_failures_per_minute`` records, 5
here), but they used to make Deputy answer 429 to every start *and* every callback from that address, so nobody
there could sign in while the page was open. Likewise a flood of refused starts, starts made as images (``GET
/authorize`` starts at once with one provider and no local users), or other people's starts from the address
(``signin_starts_per_minute``, 8 here) must never stop a person's own sign-in: her browser carries the binding of
the sign-in it started, and its answer is always heard.

A real ``deputy serve`` (SQLite: the throttle is in the process) signs people in through panva's ``oidc-provider``
(:mod:`tests.support.corp_op`); each test floods from its own loopback address, then a person at that address
starts a sign-in, signs in at the OP and comes back to Deputy's consent page. Browsers are httpx clients sending
the Fetch Metadata headers a browser sends for what they imitate (a page navigation, an image).
"""

from __future__ import annotations

import asyncio
import html
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.security.test_federated_sign_in_pages import authorize_url
from tests.support.audit_log import read_log
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.corp_op import corp_provider_toml, deputy_port, op
from tests.support.databases import require
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.local_http import serving
from tests.support.oidc_op import ALICE, OpenIdProvider, sign_in_at_op_async

__all__ = ["deputy_port", "op"]  # the module-scope fixtures, used by name below

FAILURES_PER_MINUTE = 5
STARTS_PER_MINUTE = 8
FORGED = 30
# What a browser sends for a page it navigates to (typed, opened by an MCP client, or a button), and for an image.
NAVIGATION = {"sec-fetch-dest": "document", "sec-fetch-mode": "navigate", "sec-fetch-site": "none",
              "sec-fetch-user": "?1"}
IMAGE = {"sec-fetch-dest": "image", "sec-fetch-mode": "no-cors", "sec-fetch-site": "cross-site"}
FRAME = {"sec-fetch-dest": "iframe", "sec-fetch-mode": "navigate", "sec-fetch-site": "cross-site"}
ATTACKER_HOST = "MAP attacker.test 127.0.0.1"  # a page on another site than Deputy's 127.0.0.1, in Chromium


@pytest.fixture(scope="module")
def deputy(op: OpenIdProvider, deputy_port: int, upstream_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("deputy-signin-lockout")
    extra = (corp_provider_toml(op, ["openid", "email", "profile"])
             + f"\n[limits]\nsignin_failures_per_minute = {FAILURES_PER_MINUTE}\n"
               f"signin_starts_per_minute = {STARTS_PER_MINUTE}\n")
    with running_deputy(directory, f"sqlite+aiosqlite:///{directory / 'deputy.db'}", upstream_url, extra,
                        port=deputy_port) as running:
        yield running


def client_from(address: str, headers: dict[str, str], cookies: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30, headers=headers, cookies=cookies, limits=httpx.Limits(max_connections=FORGED),
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def failures(deputy: RunningDeputy) -> list[dict[str, Any]]:
    return [dict(leaf.record) for leaf in (await read_log(deputy.database_url)).of_type("signin.failed")]


async def forge_callbacks(deputy: RunningDeputy, address: str, *, at_once: bool = False,
                          cookies: dict[str, str] | None = None) -> list[int]:
    """What a page's ``<img>`` tags send (no cookie: SameSite=Lax keeps it from images), or with ``cookies`` what an
    outsider sends directly: answers for ``state`` values nobody started."""
    async with client_from(address, IMAGE, cookies) as forger:
        def one() -> Any:
            return forger.get(f"{deputy.url}/login/callback/corp?code=c&state={secrets.token_urlsafe(16)}")
        if at_once:
            answers = await asyncio.gather(*(one() for _ in range(FORGED)))
        else:
            answers = [await one() for _ in range(FORGED)]
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {400, 429}, statuses
    assert statuses.count(400) <= FAILURES_PER_MINUTE and 429 in statuses, statuses  # still throttled on their own
    return statuses


async def start(person: httpx.AsyncClient, deputy: RunningDeputy, op: OpenIdProvider) -> str:
    """She opens the MCP client's authorization URL: one provider, no local users, so straight to the OP."""
    started = await person.get(authorize_url(deputy))
    assert started.status_code == 303, (started.status_code, started.text[:300])
    location = started.headers["location"]
    assert location.startswith(op.issuer), location
    return location


async def come_back(person: httpx.AsyncClient, location: str, *, cancel: bool = False) -> httpx.Response:
    """She signs in at the OP (or presses Cancel there) and her browser follows the OP's redirect to Deputy."""
    back = await sign_in_at_op_async(person, location, ALICE.username, ALICE.password, cancel=cancel)
    return await person.get(back.url)


def signed_in(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/authorize/consent?request_id=")


async def test_forged_callbacks_from_her_address_do_not_stop_her_sign_in(deputy: RunningDeputy,
                                                                       op: OpenIdProvider) -> None:
    """The reported attack: thirty forged callbacks from her address, then she signs in from it."""
    before = len(await failures(deputy))
    await forge_callbacks(deputy, "127.0.1.1")
    assert len((await failures(deputy))[before:]) <= FAILURES_PER_MINUTE  # what the throttle is for, still kept
    async with client_from("127.0.1.1", NAVIGATION) as person:
        back = await come_back(person, await start(person, deputy, op))
        assert signed_in(back), (back.status_code, back.text[:300])


async def test_forged_callbacks_sent_while_she_is_at_the_provider_do_not_stop_her_return(
        deputy: RunningDeputy, op: OpenIdProvider) -> None:
    """She started first; the forged callbacks arrive all at once while she types her password at the OP."""
    before = len(await failures(deputy))
    async with client_from("127.0.1.2", NAVIGATION) as person:
        location = await start(person, deputy, op)
        await forge_callbacks(deputy, "127.0.1.2", at_once=True)
        back = await come_back(person, location)
        assert signed_in(back), (back.status_code, back.text[:300])
    written = (await failures(deputy))[before:]
    assert len(written) <= FAILURES_PER_MINUTE and {record["reason"] for record in written} == {"state_unknown"}


async def test_forged_callbacks_carrying_a_cookie_are_throttled_apart_from_hers(deputy: RunningDeputy,
                                                                                op: OpenIdProvider) -> None:
    """An outsider at her address (a reverse proxy's) sends forged answers with a binding cookie of his own, all at
    once: each is looked up and found to be no sign-in of his, so they meet the same limit, and hers is heard."""
    before = len(await failures(deputy))
    async with client_from("127.0.1.3", NAVIGATION) as person:
        location = await start(person, deputy, op)
        await forge_callbacks(deputy, "127.0.1.3", at_once=True, cookies={"deputy_signin": secrets.token_urlsafe(32)})
        back = await come_back(person, location)
        assert signed_in(back), (back.status_code, back.text[:300])
    assert len((await failures(deputy))[before:]) <= FAILURES_PER_MINUTE


async def test_her_own_refused_answer_is_heard_and_recorded_past_the_limit(deputy: RunningDeputy,
                                                                            op: OpenIdProvider) -> None:
    """Her own sign-in's answer is never someone else's 429: cancelled at the OP after a flood, it is refused for
    what it is (the OP's ``access_denied``) and recorded."""
    before = len(await failures(deputy))
    async with client_from("127.0.1.4", NAVIGATION) as person:
        location = await start(person, deputy, op)
        await forge_callbacks(deputy, "127.0.1.4")
        back = await come_back(person, location, cancel=True)
        assert back.status_code == 403 and "idp_error" in back.text, (back.status_code, back.text[:300])
    written = (await failures(deputy))[before:]
    assert written[-1]["reason"] == "idp_error" and written[-1].get("error") == "access_denied", written[-1]


async def test_refused_starts_from_her_address_do_not_stop_her_start(deputy: RunningDeputy,
                                                                     op: OpenIdProvider) -> None:
    """A page elsewhere posts thirty forms to the start button (foreign Origin, no CSRF token): refused, and
    throttled on their own, but her sign-in starts."""
    before = len(await failures(deputy))
    async with client_from("127.0.1.5", {"origin": "https://attacker.example"}) as forger:
        answers = [await forger.post(f"{deputy.url}/login/start/corp", data={"csrf_token": "x"})
                   for _ in range(FORGED)]
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {403, 429} and statuses.count(403) <= FAILURES_PER_MINUTE, statuses
    assert len((await failures(deputy))[before:]) <= FAILURES_PER_MINUTE
    async with client_from("127.0.1.5", NAVIGATION) as person:
        back = await come_back(person, await start(person, deputy, op))
        assert signed_in(back), (back.status_code, back.text[:300])


async def test_sign_ins_started_as_images_or_frames_spend_no_start_budget(deputy: RunningDeputy,
                                                                          op: OpenIdProvider) -> None:
    """``<img src="https://deputy/authorize?...">`` (or a frame) on a page elsewhere would start a sign-in at each
    load and spend her address's start budget: a browser says what it fetches (Fetch Metadata), and a sign-in is a
    page, never an image or a frame, so those are refused before they count."""
    async with client_from("127.0.1.6", IMAGE) as images, client_from("127.0.1.6", FRAME) as frames:
        answers = [await images.get(authorize_url(deputy)) for _ in range(STARTS_PER_MINUTE + 4)]
        answers += [await frames.get(authorize_url(deputy)) for _ in range(4)]
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {403, 429} and 303 not in statuses, statuses
    assert all("location" not in answer.headers for answer in answers)
    async with client_from("127.0.1.6", NAVIGATION) as person:
        back = await come_back(person, await start(person, deputy, op))
        assert signed_in(back), (back.status_code, back.text[:300])


async def test_other_starts_from_her_address_do_not_stop_her_return(deputy: RunningDeputy,
                                                                    op: OpenIdProvider) -> None:
    """The start budget bounds sign-ins started from an address, not answers to them: she started, others at her
    address spend the budget, and her browser still comes back in."""
    async with client_from("127.0.1.7", NAVIGATION) as person:
        location = await start(person, deputy, op)
        async with client_from("127.0.1.7", NAVIGATION) as others:
            statuses = [(await others.get(authorize_url(deputy))).status_code for _ in range(STARTS_PER_MINUTE)]
        assert statuses == [303] * (STARTS_PER_MINUTE - 1) + [429], statuses  # hers was the first of the budget
        back = await come_back(person, location)
        assert signed_in(back), (back.status_code, back.text[:300])


@pytest.mark.browser
async def test_a_page_of_images_elsewhere_does_not_stop_her_sign_in_in_chromium(deputy: RunningDeputy) -> None:
    """The attack as it happens: a page on another site (``attacker.test``, resolved to loopback by Chromium) holds
    thirty images pointing at the callback with made-up states and twelve at ``/authorize``; she opens it in
    Chromium, then signs in through the provider in the same browser, from the same address."""
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    images = [f"{deputy.url}/login/callback/corp?code=c&state={secrets.token_urlsafe(16)}" for _ in range(FORGED)]
    images += [authorize_url(deputy) for _ in range(STARTS_PER_MINUTE + 4)]
    body = "".join(f'<img src="{html.escape(src)}" alt="">' for src in images)

    async def attacker(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><title>cats</title><p>cats</p>{body}")

    before = len(await failures(deputy))
    async with serving(Starlette(routes=[Route("/", attacker)])) as port, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=[*CHROMIUM_FLAGS, f"--host-resolver-rules={ATTACKER_HOST}"])
        page = await browser.new_page()
        await page.goto(f"http://attacker.test:{port}/", wait_until="load")  # every image answered (refused) by now
        written = (await failures(deputy))[before:]
        assert 0 < len(written) <= FAILURES_PER_MINUTE, written  # the images did arrive; still throttled
        await page.goto(authorize_url(deputy))  # one provider, no local users: straight to the OP's login page
        await page.fill("input[name=username]", ALICE.username)
        await page.fill("input[name=password]", ALICE.password)
        await page.click("button#sign-in")
        await page.wait_for_selector("text=Allow access?")  # back at Deputy, signed in: its consent page
        await browser.close()
