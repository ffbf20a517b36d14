"""What the connection page tests share (tests/e2e/test_connection_pages_*.py): a running Deputy in front of a real
third-party authorization server (npm oidc-provider) and the MCP server that accepts only its tokens
(:mod:`tests.support.upstream_oauth`), and the steps of a person on Deputy's pages, each asserted.

:func:`stack` is a module-scope pytest fixture (one Deputy per test module and backend); a test module imports it
and :func:`~tests.support.upstream_oauth.oauth_upstream` (which it uses) by name. Deputy serves two
``credentials = "oauth"`` servers: ``ext`` and ``hostile`` (whose title is markup); alice, bob and carol have
local passwords.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.sdk_client import page_text, parse_form, parse_forms
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer

BOB_PASSWORD = "bob's own long passphrase"
CAROL_PASSWORD = "carol only floods the connect button"
PASSWORDS = {"alice": PASSWORD, "bob": BOB_PASSWORD, "carol": CAROL_PASSWORD}
HOSTILE_TITLE = "Evil <img src=x onerror=alert(1)> & co"
NOT_THIS_BROWSER = "This link is not for this browser or was already used"


@dataclass(frozen=True)
class Stack:
    deputy: RunningDeputy
    auth: UpstreamAuthServer
    upstream: ProtectedUpstream

    def page(self, path: str) -> str:
        return f"{self.deputy.url}{path}"


@pytest.fixture(scope="module")
def stack(backend: str, upstream_url: str, oauth_upstream: tuple[UpstreamAuthServer, ProtectedUpstream],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    auth, upstream = oauth_upstream
    directory = tmp_path_factory.mktemp(f"deputy-connect-{backend}")
    extra = (oauth_server_toml("ext", "Ext Tools", upstream.url)
             + oauth_server_toml("hostile", HOSTILE_TITLE, upstream.url))
    users = (("bob", BOB_PASSWORD), ("carol", CAROL_PASSWORD))
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, extra, users=users) as deputy):
        yield Stack(deputy, auth, upstream)


def oauth_server_toml(name: str, title: str, url: str) -> str:
    """Deputy's ``[servers.NAME]`` entry for a ``credentials = "oauth"`` server at ``url`` whose authorization
    server runs on loopback (trusted as such)."""
    return f'''
[servers.{name}]
title = "{title}"
url = "{url}"
credentials = "oauth"
[servers.{name}.oauth]
trusted_hosts = ["127.0.0.1"]
'''


def assert_protected(response: httpx.Response) -> None:
    """The headers every page and redirect of Deputy's carries: no framing, no caching."""
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.headers
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


@asynccontextmanager
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client that never follows redirects (each step is asserted)."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
        yield http


async def sign_in(stack: Stack, http: httpx.AsyncClient, username: str, password: str,
                  server: str = "ext") -> None:
    """Through the connect page's own sign-in form, as a person would."""
    page = await http.get(stack.page(f"/connect/{server}"))
    assert page.status_code == 200 and "Sign in" in page.text, page_text(page.text)
    form = parse_form(page.text)
    answer = await http.post(urljoin(stack.deputy.url, form.action),
                             data={**form.fields, "username": username, "password": password})
    assert answer.status_code == 303, page_text(answer.text)
    assert answer.headers["location"] == f"/connect/{server}"


@asynccontextmanager
async def signed_in(stack: Stack, username: str = "alice") -> AsyncIterator[httpx.AsyncClient]:
    async with browser() as http:
        await sign_in(stack, http, username, PASSWORDS[username])
        yield http


async def connect_form(stack: Stack, http: httpx.AsyncClient, server: str = "ext") -> dict[str, str]:
    page = await http.get(stack.page(f"/connect/{server}"))
    assert page.status_code == 200, page_text(page.text)
    form = parse_form(page.text)
    assert form.action == f"/connect/{server}" and not form.has_password()
    return form.fields


async def begin(stack: Stack, http: httpx.AsyncClient, server: str = "ext") -> str:
    """Press Connect: the authorization URL at the upstream's authorization server."""
    answer = await http.post(stack.page(f"/connect/{server}"), data=await connect_form(stack, http, server))
    assert answer.status_code == 303, page_text(answer.text)
    assert_protected(answer)
    location: str = answer.headers["location"]
    assert location.startswith(f"{stack.auth.issuer}/"), location
    return location


async def approve(stack: Stack, authorization_url: str, login: str = "alice", *, consent: bool = True,
                  server: str = "ext") -> str:
    """The authorization server's login and consent pages, walked; Deputy's callback URL (not yet opened): the
    server's own (RFC 9700 §4.4.2)."""
    callback = await asyncio.to_thread(stack.auth.approve, authorization_url, login, consent=consent)
    assert callback.startswith(stack.page(f"/connect/callback/{server}?")), callback
    return callback


async def connections(stack: Stack, http: httpx.AsyncClient) -> str:
    page = await http.get(stack.page("/connections"))
    assert page.status_code == 200, page_text(page.text)
    assert_protected(page)
    return page_text(page.text)


async def connected(stack: Stack, http: httpx.AsyncClient) -> bool:
    """Whether the signed-in user of ``http`` holds a connection to ext (its Disconnect form is on her page)."""
    page = await http.get(stack.page("/connections"))
    return any(form.action == "/connections/ext/disconnect" for form in parse_forms(page.text))


async def disconnect_all(stack: Stack, http: httpx.AsyncClient) -> None:
    page = await http.get(stack.page("/connections"))
    for form in parse_forms(page.text):
        if form.action.endswith("/disconnect"):
            answer = await http.post(stack.page(form.action), data=form.fields)
            assert answer.status_code == 303


def refused_not_this_browser(response: httpx.Response) -> None:
    assert response.status_code == 400, page_text(response.text)
    assert NOT_THIS_BROWSER in page_text(response.text)
    assert "location" not in response.headers
    assert_protected(response)
