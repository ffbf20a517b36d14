"""Issue 15 with issue 14: a person who signs in through the organisation's identity provider connects her account
at a third-party MCP server, end to end.

A real ``deputy serve`` on each database backend has one ``[[identity_providers]]`` entry (panva's
``oidc-provider`` as the OP, :mod:`tests.support.oidc_op`) and so no local sign-in (``local_users`` is false by
default once a provider is configured), and a ``credentials = "oauth"`` server in front of the upstream fixture
(:mod:`tests.support.upstream_oauth`: another oidc-provider as the upstream's authorization server). The connect
and connections pages offer the provider's button, whose hidden ``connect`` field says where the sign-in returns
(:mod:`deputy.web.federated_pages`).

Abuse first: a ``connect`` field that is not a server name (a path, an absolute or scheme-relative URL, dot
segments) never sends the browser off Deputy or to another page than a connect page of one segment or the
connections page (RFC 9700 §4.11, open redirectors); a start without the login form's CSRF token (missing, wrong,
another browser's, a foreign Origin) sends nobody to the OP (RFC 9700 §4.7.1). Then the happy path over HTTP:
unsigned ``GET /connect/ext`` shows the provider's button → the OP's sign-in → back at ``/connect/ext`` signed in
→ Connect → the upstream AS's login and consent → ``/connections`` lists it, and her MCP client's call carries her
upstream identity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.support.connection_pages import Stack, browser, oauth_server_toml
from tests.support.corp_op import corp_provider_toml, deputy_port, op
from tests.support.databases import database_url
from tests.support.deputy_process import running_deputy
from tests.support.oidc_op import ALICE, OpenIdProvider, sign_in_at_op_async
from tests.support.sdk_client import Form, page_text, parse_forms, sdk_oauth_client
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer, oauth_upstream

__all__ = ["deputy_port", "oauth_upstream", "op"]  # the module-scope fixtures, used by name below

START = "/login/start/corp"
# What the hidden `connect` field may be made to say (by the person herself: the login CSRF token keeps everyone
# else out): never a server name, each aimed at another page or another site once put after "/connect/" — a dot
# segment survives quoting ("/connect/.." is "/" to a browser). Only a configured oauth server's name picks its
# connect page; anything else lands on her connections page.
HOSTILE_CONNECT_VALUES = (
    "nosuch",
    "..",
    ".",
    "%2e%2e",
    "ext/../../authorize",
    "_connections/../..",
    "a/b",
    "https://evil.example/",
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "ext?next=https://evil.example#x",
)


@dataclass(frozen=True)
class FederatedStack(Stack):
    """The connection pages' stack (tests/support/connection_pages.py) with the identity provider Deputy signs in
    through."""

    op: OpenIdProvider


@pytest.fixture(scope="module")
def stack(backend: str, upstream_url: str, op: OpenIdProvider, deputy_port: int,
          oauth_upstream: tuple[UpstreamAuthServer, ProtectedUpstream],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatedStack]:
    auth, upstream = oauth_upstream
    directory = tmp_path_factory.mktemp(f"deputy-connect-federated-{backend}")
    # Every request here comes from 127.0.0.1: the per-address sign-in limits are tested elsewhere.
    extra = oauth_server_toml("ext", "Ext Tools", upstream.url) + '''
[limits]
signin_starts_per_minute = 1000
signin_failures_per_minute = 1000
''' + corp_provider_toml(op, ["openid", "email", "profile"])
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, extra, port=deputy_port) as deputy):
        yield FederatedStack(deputy, auth, upstream, op)


async def provider_button(stack: FederatedStack, http: httpx.AsyncClient, path: str) -> Form:
    """The page at ``path`` for a visitor not signed in: the provider's button, and no password form."""
    page = await http.get(stack.page(path))
    assert page.status_code == 200, page_text(page.text)
    forms = parse_forms(page.text)
    assert not any(form.has_password() for form in forms), "no local users: no password form"
    [button] = [form for form in forms if form.action == START]
    assert button.method == "POST" and "csrf_token" in button.fields
    return button


async def sign_in_through_op(stack: FederatedStack, http: httpx.AsyncClient, button: Form,
                             connect: str) -> httpx.Response:
    """Press the provider's button with ``connect`` in its hidden field, sign in at the OP as alice, and open
    Deputy's callback: Deputy's answer to it."""
    started = await http.post(stack.page(START), data=button.data(connect=connect))
    assert started.status_code == 303, page_text(started.text)
    assert started.headers["location"].startswith(f"{stack.op.issuer}/"), started.headers["location"]
    back = await sign_in_at_op_async(http, started.headers["location"], ALICE.username, ALICE.password)
    assert back.url.startswith(stack.page("/login/callback/corp?")), back.url
    return await http.get(back.url)


async def sign_in_from(stack: FederatedStack, http: httpx.AsyncClient, path: str, connect: str) -> None:
    """Press the provider's button on the page at ``path``, whose hidden field says ``connect``, and sign in at the
    OP as alice: back at ``path``."""
    button = await provider_button(stack, http, path)
    assert button.fields["connect"] == connect
    back = await sign_in_through_op(stack, http, button, button.fields["connect"])
    assert back.status_code == 303 and back.headers["location"] == path, page_text(back.text)


def assert_no_op_was_asked(answer: httpx.Response) -> None:
    assert answer.status_code == 403, page_text(answer.text)
    assert "location" not in answer.headers
    assert not any("deputy_signin" in cookie for cookie in answer.headers.get_list("set-cookie"))


# -- abuse: where the sign-in returns to ---------------------------------------------------------


@pytest.mark.parametrize("connect", HOSTILE_CONNECT_VALUES)
async def test_a_connect_field_never_redirects_off_a_connect_page(stack: FederatedStack, connect: str) -> None:
    async with browser() as http:
        button = await provider_button(stack, http, "/connect/ext")
        answer = await sign_in_through_op(stack, http, button, connect)
        assert answer.status_code == 303, page_text(answer.text)
        location = answer.headers["location"]
        # Resolved as a browser resolves it (RFC 3986 §5.2, dot segments removed): Deputy's own origin, no query.
        target = urlsplit(urljoin(stack.page("/login/callback/corp"), location))
        assert (target.scheme, target.netloc) == tuple(urlsplit(stack.deputy.url)[:2]), location
        assert not target.query and not target.fragment, location
        assert target.path == "/connections", location  # no server of that name: her connections page
        landed = await http.get(urljoin(stack.deputy.url, location))
        assert landed.status_code == 200 and "location" not in landed.headers


# -- abuse: a start without the login form's CSRF token ------------------------------------------


async def test_a_forged_connect_sign_in_sends_nobody_to_the_op(stack: FederatedStack) -> None:
    async with browser() as attacker:
        attackers = await provider_button(stack, attacker, "/connect/ext")
    async with browser() as victim:
        for data in ({"connect": "ext"}, {"connect": "ext", "csrf_token": "x" * 43},
                     {"connect": "ext", "csrf_token": attackers.fields["csrf_token"]}):
            assert_no_op_was_asked(await victim.post(stack.page(START), data=data))
        own = await provider_button(stack, victim, "/connect/ext")  # her own pre-session and token now
        assert own.fields["connect"] == "ext"
        for origin in ("https://evil.example", "null"):
            assert_no_op_was_asked(await victim.post(stack.page(START), data=own.data(),
                                                     headers={"Origin": origin}))
        assert "deputy_session" not in victim.cookies
        # Her own form from her own origin does start (the refusals were the token's and the Origin's).
        started = await victim.post(stack.page(START), data=own.data(), headers={"Origin": stack.deputy.url})
        assert started.status_code == 303 and started.headers["location"].startswith(f"{stack.op.issuer}/")


# -- the happy path --------------------------------------------------------------------------------


async def test_a_federated_user_connects_her_account(stack: FederatedStack) -> None:
    async with browser() as http:
        page = await http.get(stack.page("/connect/ext"))  # from the gateway's connect_url, not signed in
        assert "Sign in to connect your account at Ext Tools" in page_text(page.text)
        assert "Corp sign-in" in page_text(page.text)
        await sign_in_from(stack, http, "/connect/ext", "ext")

        page = await http.get(stack.page("/connect/ext"))
        text = page_text(page.text)
        assert "Connect your account at Ext Tools?" in text and "Signed in to Deputy as alice@corp" in text
        [connect] = parse_forms(page.text)
        assert connect.action == "/connect/ext" and not connect.has_password()
        started = await http.post(stack.page(connect.action), data=connect.data())
        assert started.status_code == 303, page_text(started.text)
        assert started.headers["location"].startswith(f"{stack.auth.issuer}/")
        callback = await asyncio.to_thread(stack.auth.approve, started.headers["location"], "alice")
        assert callback.startswith(stack.page("/connect/callback/ext?")), callback
        done = await http.get(callback)
        assert done.status_code == 303 and done.headers["location"] == "/connections", page_text(done.text)

        listed = await http.get(stack.page("/connections"))
        text = page_text(listed.text)
        assert "Connected to Ext Tools." in text and "active" in text and stack.auth.issuer in text
        assert "Signed in to Deputy as alice@corp" in text
        assert any(form.action == "/connections/ext/disconnect" for form in parse_forms(listed.text))

    # Her MCP client, signed in through the same OP, now reaches ext with her own upstream token.
    async with sdk_oauth_client(stack.deputy.resource("ext"), ALICE.username, ALICE.password) as (client, _run):
        result = await client.call_tool("whoami", {})
    assert not result.is_error and result.content[0].text == "alice"  # type: ignore[union-attr]


async def test_the_connections_page_signs_her_in_through_the_op_and_comes_back(stack: FederatedStack) -> None:
    async with browser() as http:
        page = await http.get(stack.page("/connections"))
        assert "Sign in to see the accounts you connected" in page_text(page.text)
        await sign_in_from(stack, http, "/connections", "_connections")
        listed = await http.get(stack.page("/connections"))
        assert listed.status_code == 200
        text = page_text(listed.text)
        assert "Your connections" in text and "Signed in to Deputy as alice@corp" in text and "Ext Tools" in text
