"""Issue 12, finding 1: redirects any local process could own, and loopback redirect ports.

- A remembered consent never authorizes a loopback or private-use-scheme redirect silently:
  any process on the user's machine can listen there and present a known client's id, so the
  MCP authorization spec's "display the redirect hostname" and RFC 8252 §8.6 call for a page
  naming the client and the host, answered by a POST bound to the session and the request.
- A loopback IP-literal redirect URI matches with any port (RFC 8252 §7.3, OAuth 2.1 §8.4.2);
  nothing else about it, and nothing about any other redirect URI, is loosened; the code is
  bound to the URI the request used.

Deputy here runs on ``127.0.0.1``, so the ``[::1]`` literal is used (``127.0.0.1`` would share
Deputy's cookies); the ``127.0.0.1`` literal is tested against a Deputy on ``localhost``.
Pure matching vectors: tests/unit/test_redirect_matching.py.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from deputy.storage.clients import ClientRepository
from deputy.storage.db import Database
from tests.security.helpers import oauth_error
from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.oauth_flow import Pkce, authorize, exchange
from tests.support.sdk_client import Form, parse_forms, parse_redirect


async def add_client(deputy: RunningDeputy, redirect_uris: Sequence[str]) -> str:
    """A public client stored as an operator would add it (any redirect kind, no registration policy)."""
    client_id = f"local-{secrets.token_hex(6)}"
    database = Database(deputy.database_url)
    try:
        await ClientRepository(database.engine).put(
            client_id=client_id, client_name=f"Local app {client_id}", redirect_uris=list(redirect_uris),
            token_endpoint_auth_method="none", source="cli")
    finally:
        await database.dispose()
    return client_id


def authorization_url(deputy: RunningDeputy, client_id: str, redirect_uri: str, pkce: Pkce,
                      extra: Sequence[tuple[str, str]] = ()) -> str:
    query = [("response_type", "code"), ("client_id", client_id), ("redirect_uri", redirect_uri),
             ("state", secrets.token_urlsafe(8)), ("code_challenge", pkce.challenge),
             ("code_challenge_method", "S256"), ("resource", deputy.resource("demo")), *extra]
    return f"{deputy.url}/authorize?{urlencode(query)}"


@pytest.fixture
async def fresh_browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def remember_consent(deputy: RunningDeputy, browser: httpx.AsyncClient, client_id: str,
                           redirect_uri: str) -> None:
    """alice signs in in ``browser`` and allows ``client_id`` once (the consent is remembered)."""
    first = await authorize(deputy, client_id=client_id, redirect_uri=redirect_uri, browser=browser)
    assert first.redirect is not None and first.redirect.code, first.page and first.page.text


def continue_form(page: httpx.Response) -> Form:
    assert page.status_code == 200, f"HTTP {page.status_code} {page.headers.get('location')}"
    forms = parse_forms(page.text)
    assert len(forms) == 1 and forms[0].button_values("decision") == ["approve", "deny"], page.text
    return forms[0]


async def post(browser: httpx.AsyncClient, deputy: RunningDeputy, data: dict[str, str],
               origin: str | None = None) -> httpx.Response:
    headers = {"Origin": origin if origin is not None else deputy.url}
    return await browser.post(f"{deputy.url}/authorize/consent", data=data, headers=headers, follow_redirects=False)


# -- a remembered consent and a redirect any local process could own ------------------------------

LOCAL_REDIRECTS = [
    "http://[::1]:{port}/callback",
    "http://localhost:{port}/callback",
    "http://app.localhost:{port}/callback",
    "com.example.localapp:/oauth/callback",
]


@pytest.mark.parametrize("template", LOCAL_REDIRECTS)
async def test_remembered_consent_to_a_local_redirect_asks_before_the_code(
        deputy: RunningDeputy, fresh_browser: httpx.AsyncClient, template: str) -> None:
    """Issue 12: no code without a page naming the client and the redirect host, then Continue issues it."""
    redirect_uri = template.format(port=41000 + secrets.randbelow(1000))
    client_id = await add_client(deputy, [redirect_uri])
    await remember_consent(deputy, fresh_browser, client_id, redirect_uri)
    pkce = Pkce.new()
    page = await fresh_browser.get(authorization_url(deputy, client_id, redirect_uri, pkce), follow_redirects=False)
    assert "location" not in page.headers, f"authorized silently: {page.headers.get('location')}"
    form = continue_form(page)
    assert f"Local app {client_id}" in page.text and "Continue" in page.text
    host = redirect_uri.split("/")[2] if "//" in redirect_uri else redirect_uri
    assert f"<code>{host}</code>" in page.text, "the page names the redirect host"
    answered = await post(fresh_browser, deputy, form.data(("decision", "approve")))
    assert answered.status_code == 303
    redirect = parse_redirect(answered.headers["location"])
    assert answered.headers["location"].startswith(redirect_uri) and redirect.code
    tokens = await exchange(deputy, redirect.code, verifier=pkce.verifier, client_id=client_id,
                            redirect_uri=redirect_uri)
    assert tokens.status_code == 200, tokens.text


async def test_cancel_on_the_continue_page_sends_access_denied(
        deputy: RunningDeputy, fresh_browser: httpx.AsyncClient) -> None:
    """Issue 12: Cancel answers access_denied; the request is then spent."""
    redirect_uri = "http://[::1]:41999/callback"
    client_id = await add_client(deputy, [redirect_uri])
    await remember_consent(deputy, fresh_browser, client_id, redirect_uri)
    page = await fresh_browser.get(authorization_url(deputy, client_id, redirect_uri, Pkce.new()))
    form = continue_form(page)
    denied = await post(fresh_browser, deputy, form.data(("decision", "deny")))
    assert parse_redirect(denied.headers["location"]).error == "access_denied"
    again = await post(fresh_browser, deputy, form.data(("decision", "approve")))
    assert again.status_code == 400 and "location" not in again.headers


@pytest.mark.parametrize("extra", [
    [("decision", "approve")], [("prompt", "none")], [("skip", "1"), ("confirm", "yes")],
])
async def test_no_get_skips_the_continue_page(
        deputy: RunningDeputy, fresh_browser: httpx.AsyncClient, extra: list[tuple[str, str]]) -> None:
    """Issue 12: neither /authorize nor /authorize/consent issues a code on a GET, whatever it carries."""
    redirect_uri = "http://[::1]:41998/callback"
    client_id = await add_client(deputy, [redirect_uri])
    await remember_consent(deputy, fresh_browser, client_id, redirect_uri)
    page = await fresh_browser.get(authorization_url(deputy, client_id, redirect_uri, Pkce.new(), extra),
                                   follow_redirects=False)
    form = continue_form(page)
    query = urlencode([("request_id", form.fields["request_id"]), *extra, ("csrf_token", form.fields["csrf_token"])])
    again = await fresh_browser.get(f"{deputy.url}/authorize/consent?{query}", follow_redirects=False)
    assert "location" not in again.headers
    continue_form(again)


async def test_continue_is_bound_to_its_request_its_session_and_deputys_origin(
        deputy: RunningDeputy, fresh_browser: httpx.AsyncClient) -> None:
    """Issue 12: a Continue token for one request, one session or from another origin issues nothing (403)."""
    redirect_uri = "http://[::1]:41997/callback"
    client_id = await add_client(deputy, [redirect_uri])
    await remember_consent(deputy, fresh_browser, client_id, redirect_uri)
    first = continue_form(await fresh_browser.get(authorization_url(deputy, client_id, redirect_uri, Pkce.new())))
    second = continue_form(await fresh_browser.get(authorization_url(deputy, client_id, redirect_uri, Pkce.new())))
    assert first.fields["request_id"] != second.fields["request_id"]
    approve = ("decision", "approve")
    # The first page's token on the second request, and the other way round.
    swapped = first.data(approve, request_id=second.fields["request_id"])
    assert (await post(fresh_browser, deputy, swapped)).status_code == 403
    assert (await post(fresh_browser, deputy, second.data(approve, request_id=first.fields["request_id"]))
            ).status_code == 403
    # Another origin, and a null one.
    for origin in ("http://[::1]:41997", "null"):
        response = await post(fresh_browser, deputy, first.data(approve), origin=origin)
        assert response.status_code == 403 and "location" not in response.headers
    # The same form from another browser signed in as alice (another session).
    async with httpx.AsyncClient(timeout=30) as other:
        await remember_consent(deputy, other, client_id, redirect_uri)
        response = await post(other, deputy, first.data(approve))
        assert response.status_code == 403 and "location" not in response.headers
    # No token at all.
    assert (await post(fresh_browser, deputy, {"request_id": first.fields["request_id"], "decision": "approve"})
            ).status_code == 403
    # Each request, answered with its own form, gives one code, once.
    for form in (first, second):
        answered = await post(fresh_browser, deputy, form.data(approve))
        assert answered.status_code == 303 and parse_redirect(answered.headers["location"]).code
        assert (await post(fresh_browser, deputy, form.data(approve))).status_code == 400


async def test_remembered_consent_to_a_host_owned_redirect_is_still_immediate(
        deputy: RunningDeputy, fresh_browser: httpx.AsyncClient) -> None:
    """Control: an https redirect on a real host keeps the remembered consent's one-step answer."""
    redirect_uri = "https://app.example.com/oauth/callback"
    client_id = await add_client(deputy, [redirect_uri])
    await remember_consent(deputy, fresh_browser, client_id, redirect_uri)
    response = await fresh_browser.get(authorization_url(deputy, client_id, redirect_uri, Pkce.new()),
                                       follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith(redirect_uri)
    assert parse_redirect(response.headers["location"]).code


# -- any port for a loopback IP literal -----------------------------------------------------------

REGISTERED_V6 = "http://[::1]:4000/callback"


async def authorize_page(deputy: RunningDeputy, client_id: str, redirect_uri: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as browser:
        return await browser.get(authorization_url(deputy, client_id, redirect_uri, Pkce.new()),
                                 follow_redirects=False)


@pytest.mark.parametrize("requested", [
    "http://[::1]:5000/other", "http://[::1]:5000/callbac", "http://[::1]:5000/callback/x",
    "http://[::1]:5000/callback?x=1", "http://[::1]:5000@evil.example/callback",
    "http://x@[::1]:5000/callback", "https://[::1]:5000/callback", "http://[0:0:0:0:0:0:0:1]:5000/callback",
    "http://localhost:5000/callback", "http://[::1]:0/callback", "http://[::1]:65536/callback",
    "http://[::1]:05000/callback",
])
async def test_only_the_port_of_a_loopback_literal_is_free(deputy: RunningDeputy, requested: str) -> None:
    """Issue 12: anything but the port differing → error page (never a redirect: RFC 6749 §4.1.2.1)."""
    client_id = await add_client(deputy, [REGISTERED_V6, "http://localhost:4000/callback"])
    page = await authorize_page(deputy, client_id, requested)
    assert page.status_code == 400 and "location" not in page.headers, page.text


async def test_localhost_keeps_its_port(deputy: RunningDeputy) -> None:
    """Issue 12: ``localhost`` is a name, not an IP literal (RFC 8252 §8.3): its port stays exact."""
    client_id = await add_client(deputy, ["http://localhost:4000/callback"])
    page = await authorize_page(deputy, client_id, "http://localhost:4001/callback")
    assert page.status_code == 400 and "location" not in page.headers


async def test_a_code_is_bound_to_the_port_the_request_used(deputy: RunningDeputy) -> None:
    """Issue 12: RFC 8252 §7.3 any port at /authorize; /token must repeat that port, not the registered one."""
    client_id = await add_client(deputy, [REGISTERED_V6])
    used = "http://[::1]:53127/callback"
    for other in (REGISTERED_V6, "http://[::1]:53128/callback"):
        flow = await authorize(deputy, client_id=client_id, redirect_uri=used)
        assert flow.redirect is not None and flow.redirect.url.startswith(used + "?")
        refused = await exchange(deputy, flow.code, verifier=str(flow.verifier), client_id=client_id,
                                 redirect_uri=other)
        assert refused.status_code == 400 and oauth_error(refused) == "invalid_grant"
    flow = await authorize(deputy, client_id=client_id, redirect_uri=used)
    tokens = await exchange(deputy, flow.code, verifier=str(flow.verifier), client_id=client_id, redirect_uri=used)
    assert tokens.status_code == 200, tokens.text


@pytest.fixture(scope="module")
def deputy_on_localhost(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """A Deputy at ``http://localhost:PORT``, where the ``127.0.0.1`` literal is another cookie host."""
    directory: Path = tmp_path_factory.mktemp("deputy-localhost")
    with database_url("sqlite", directory) as url, \
            running_deputy(directory, url, upstream_url, public_host="localhost") as running:
        yield running


REGISTERED_V4 = "http://127.0.0.1:4000/callback"


@pytest.mark.parametrize("requested", [
    "http://127.0.0.2:5000/callback", "http://0.0.0.0:5000/callback", "http://127.1:5000/callback",
    "http://2130706433:5000/callback", "http://0x7f000001:5000/callback", "http://0x7f.0.0.1:5000/callback",
    "http://127.0.0.1.evil.example:5000/callback", "http://127.0.0.1.evil.example/callback",
    "http://127.0.0.1:5000@evil.example/callback", "http://127.0.0.1:5000/callback2",
    "http://127.0.0.1:5000/call", "http://127.0.0.1:0/callback", "http://127.0.0.1:70000/callback",
])
async def test_the_ipv4_literal_is_matched_as_written(deputy_on_localhost: RunningDeputy, requested: str) -> None:
    """Issue 12: other spellings and neighbours of 127.0.0.1 are other redirect URIs → error page."""
    client_id = await add_client(deputy_on_localhost, [REGISTERED_V4])
    page = await authorize_page(deputy_on_localhost, client_id, requested)
    assert page.status_code == 400 and "location" not in page.headers, page.text


async def test_the_ipv4_literal_takes_any_port(deputy_on_localhost: RunningDeputy) -> None:
    """Issue 12: RFC 8252 §7.3 with the literal it recommends; the code comes back to the port used."""
    client_id = await add_client(deputy_on_localhost, [REGISTERED_V4])
    used = "http://127.0.0.1:61234/callback"
    flow = await authorize(deputy_on_localhost, client_id=client_id, redirect_uri=used, password=PASSWORD)
    assert flow.redirect is not None and flow.redirect.url.startswith(used + "?"), flow.page and flow.page.text
    tokens = await exchange(deputy_on_localhost, flow.code, verifier=str(flow.verifier), client_id=client_id,
                            redirect_uri=used)
    assert tokens.status_code == 200, tokens.text
