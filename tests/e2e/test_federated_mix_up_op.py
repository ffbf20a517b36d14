"""Issue 14, item 6: a mix-up between two real OpenID Providers is refused (RFC 9700 §4.4, RFC 9207).

Two ``oidc-provider`` instances, ``corp`` and ``other``, each know Deputy as a client with its own redirect URI
(``/login/callback/corp``, ``/login/callback/other``); both have an ``alice`` (same ``sub``). A real ``deputy serve``
on each backend has both. An answer ``other`` really gave is carried to ``corp``'s callback, or ``corp``'s sign-in is
answered with ``other``'s code: refused each time, recorded, nobody signed in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.deputy_process import PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy, running_deputy
from tests.support.oidc_op import ALICE, OpClient, OpenIdProvider, openid_provider, sign_in_at_op_async
from tests.support.sdk_client import AuthorizationRedirect, free_port, parse_forms

CLIENT_ID = "deputy-mix-up"
SECRET = "mix-up-client-secret-0123456789"


@pytest.fixture(scope="module")
def deputy_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def ops(deputy_port: int) -> Iterator[dict[str, OpenIdProvider]]:
    def client(name: str) -> OpClient:
        return OpClient(CLIENT_ID, (f"http://127.0.0.1:{deputy_port}/login/callback/{name}",), SECRET)
    with openid_provider([client("corp")]) as corp, openid_provider([client("other")]) as other:
        yield {"corp": corp, "other": other}


@pytest.fixture(scope="module")
def two_idp_deputy(backend: str, ops: dict[str, OpenIdProvider], deputy_port: int, upstream_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-mix-up-{backend}")
    extra = "".join(f'\n[[identity_providers]]\nname = "{name}"\nissuer = "{op.issuer}"\nclient_id = "{CLIENT_ID}"\n'
                    f'client_secret = "{SECRET}"\n' for name, op in ops.items())
    with database_url(backend, directory) as url, \
            running_deputy(directory, url, upstream_url, extra, port=deputy_port) as running:
        yield running


async def press(browser: httpx.AsyncClient, deputy: RunningDeputy, name: str) -> str:
    """Open the login page and press provider ``name``'s button: the URL of its authentication request."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_bytes(32)).digest()).rstrip(b"=").decode()
    page = await browser.get(f"{deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI, "state": "s",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": deputy.resource("demo")}))
    [form] = [f for f in parse_forms(page.text) if f.action == f"/login/start/{name}"]
    sent = await browser.post(form.resolve_action(str(page.url)), data=form.data())
    assert sent.status_code == 303, sent.text
    return str(sent.headers["location"])


async def answer_from(browser: httpx.AsyncClient, deputy: RunningDeputy, name: str) -> AuthorizationRedirect:
    """A real answer of provider ``name`` to a sign-in this browser started there."""
    return await sign_in_at_op_async(browser, await press(browser, deputy, name), ALICE.username, ALICE.password)


async def last_failure(deputy: RunningDeputy) -> dict[str, object]:
    return dict((await read_log(deputy.database_url)).of_type("signin.failed")[-1].record)


def signed_in(browser: httpx.AsyncClient) -> bool:
    return any(cookie.name == "deputy_session" for cookie in browser.cookies.jar)


async def test_others_answer_at_corps_callback_is_refused(two_idp_deputy: RunningDeputy) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        real = await answer_from(browser, two_idp_deputy, "other")
        assert real.url.startswith(f"{two_idp_deputy.url}/login/callback/other?")
        carried = await browser.get(f"{two_idp_deputy.url}/login/callback/corp?{urlencode(real.params)}")
        assert carried.status_code == 400 and "wrong_callback" in carried.text
        assert real.code is not None and real.code not in carried.text
        assert not signed_in(browser)
        assert (await last_failure(two_idp_deputy))["reason"] == "wrong_callback"
        spent = await browser.get(real.url)  # the sign-in was used by the refused answer: gone
        assert spent.status_code == 400 and "state_unknown" in spent.text
        assert not signed_in(browser)


async def test_corps_sign_in_answered_with_others_code_is_refused(two_idp_deputy: RunningDeputy) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        other = await answer_from(browser, two_idp_deputy, "other")
        corp_request = await press(browser, two_idp_deputy, "corp")
        corp_state = dict(httpx.URL(corp_request).params)["state"]
        forged = {**other.params, "state": corp_state}  # other's code and iss, corp's state
        response = await browser.get(f"{two_idp_deputy.url}/login/callback/corp?{urlencode(forged)}")
        assert response.status_code == 400 and "issuer_mismatch" in response.text
        assert (await last_failure(two_idp_deputy))["reason"] == "issuer_mismatch"
        assert not signed_in(browser)


async def test_others_code_with_corps_iss_fails_at_corps_token_endpoint(two_idp_deputy: RunningDeputy,
                                                                       ops: dict[str, OpenIdProvider]) -> None:
    """An attacker who also lies about ``iss`` gets the code sent to corp, which never issued it."""
    async with httpx.AsyncClient(timeout=30) as browser:
        other = await answer_from(browser, two_idp_deputy, "other")
        corp_request = await press(browser, two_idp_deputy, "corp")
        forged = {**other.params, "state": dict(httpx.URL(corp_request).params)["state"], "iss": ops["corp"].issuer}
        response = await browser.get(f"{two_idp_deputy.url}/login/callback/corp?{urlencode(forged)}")
        assert response.status_code == 502 and "token_request_failed" in response.text
        assert not signed_in(browser)
