"""Issue 15 end to end: a real ``deputy serve`` as each user's OAuth client toward an upstream with its own AS.

Two OAuth-protected MCP servers (tests/support/upstream_oauth.py: oidc-provider issuing RFC 9068 JWTs whose ``aud``
is the resource, the MCP SDK's server accepting only those) sit behind one Deputy, on SQLite and PostgreSQL:
``ext`` (access tokens live 300 s) and ``short`` (30 s: always within Deputy's 60 s refresh margin, so every call
must first refresh). The official MCP Python SDK client calls through Deputy with Deputy's own token; the test plays
the person's browser over HTTP: Deputy's sign-in, the connect page's form (CSRF), the upstream's login and consent
(``approve()``), the callback with Deputy's cookies.

Abuse first: no connection → the call is answered with where to connect and never reaches the upstream; a
callback opened in another user's browser connects nobody; a connect form without its CSRF token starts nothing;
a refused consent stores nothing. Then: the call succeeds with her own upstream token (``whoami`` is her upstream
``sub``) and the upstream never sees Deputy's or the client's token; refresh before each request when due (one
token request each, rotation honoured), and after the upstream's 401 (refresh, one retry); step-up after ``403
insufficient_scope``; revocation by the CLI, by the disconnect page, by disabling her and by revoking her consent
reaches the upstream's AS (RFC 7009) and the next call asks to connect again; a URL-elicitation client (MCP
2026-07-28) is sent to connect and its retry succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult, ErrorData

from tests.support import upstream_oauth
from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.sdk_calls import call, text_of, unwrapped
from tests.support.sdk_client import Form, InMemoryTokenStorage, page_text, parse_forms, sdk_oauth_client
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer

CONNECTION_REQUIRED = -32004
STATELESS = "2026-07-28"
# Inside Deputy's default refresh margin (60 s), so every call finds the token due; long enough that a refreshed
# token cannot expire on its way to the upstream on a loaded machine (a 401 there would add a second refresh).
SHORT_TTL = 30
# Deputy users, each also an account of the same name at both upstream authorization servers.
# Few (each is a `deputy users add`); tests end with theirs as they found it, or connect first whatever it was.
# Carol and Dave never connect; Frank is disabled, Grace's consent revoked.
LOGINS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
OTHERS = tuple((login, f"{login}'s long passphrase") for login in LOGINS if login != "alice")
PASSWORDS = {"alice": PASSWORD, **dict(OTHERS)}


@dataclass(frozen=True)
class Upstream:
    name: str
    auth: UpstreamAuthServer
    server: ProtectedUpstream


@dataclass(frozen=True)
class Setup:
    deputy: RunningDeputy
    ext: Upstream
    short: Upstream


def oauth_server(name: str, upstream: ProtectedUpstream) -> str:
    return (f'\n[servers.{name}]\ntitle = "Upstream {name}"\nurl = "{upstream.url}"\ncredentials = "oauth"\n'
            f'[servers.{name}.oauth]\ntrusted_hosts = ["127.0.0.1"]\n')


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    """``ext`` and ``short`` with their authorization servers, started once for both backends' Deputies: each
    Deputy registers a client of its own at each AS, the tests of one module run one at a time, and each counts
    tokens, token requests and revocations from where it started."""
    with (upstream_oauth.upstream_oauth(logins=LOGINS) as (ext_auth, ext_server),
          upstream_oauth.upstream_oauth(access_token_ttl=SHORT_TTL, logins=LOGINS) as (short_auth, short_server)):
        yield Upstream("ext", ext_auth, ext_server), Upstream("short", short_auth, short_server)


@pytest.fixture(scope="module")
def setup(backend: str, upstream_url: str, upstreams: tuple[Upstream, Upstream],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp(f"deputy-upstream-oauth-{backend}")
    ext, short = upstreams
    extra = oauth_server("ext", ext.server) + oauth_server("short", short.server)
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, extra, users=OTHERS) as deputy):
        yield Setup(deputy, ext, short)


# ----------------------------------------------------------------------------- the client and the browser


def connect_answer(setup: Setup, answer: object, upstream: Upstream) -> dict[str, Any]:
    """The JSON-RPC error that sends her to connect (no URL elicitation declared: Deputy's -32004), checked."""
    assert isinstance(answer, MCPError), f"the call went through: {answer}"
    assert answer.code == CONNECTION_REQUIRED, answer.error
    data: dict[str, Any] = answer.data
    assert data["connect_url"] == f"{setup.deputy.url}/connect/{upstream.name}"
    assert data["server"] == upstream.name
    return data


@asynccontextmanager
async def sdk_client(setup: Setup, upstream: Upstream, username: str, mode: str = STATELESS
                     ) -> AsyncIterator[tuple[Client, InMemoryTokenStorage]]:
    """The SDK client signed in to Deputy as ``username`` for ``upstream`` (at its first request); yields it and
    where it keeps its Deputy tokens.

    MCP 2026-07-28 (no ``initialize``): the first request to need her connection is the tool call itself.
    """
    resource = setup.deputy.resource(upstream.name)
    async with sdk_oauth_client(resource, username, PASSWORDS[username], mode=mode) as (client, run):
        yield client, run.storage


async def connect_form(http: httpx.AsyncClient, connect_url: str, username: str) -> Form:
    return await upstream_oauth.connect_form(http, connect_url, username, PASSWORDS[username])


async def start_connecting(setup: Setup, http: httpx.AsyncClient, upstream: Upstream, username: str) -> str:
    return await upstream_oauth.start_connecting(http, setup.deputy.url, upstream.name, upstream.auth, username,
                                                 PASSWORDS[username])


async def approve(upstream: Upstream, authorization_url: str, login: str, *, consent: bool = True) -> str:
    return await asyncio.to_thread(upstream.auth.approve, authorization_url, login, consent=consent)


async def connect(setup: Setup, upstream: Upstream, username: str) -> None:
    await upstream_oauth.connect_account(setup.deputy.url, upstream.name, upstream.auth, username,
                                         PASSWORDS[username])


def issued_by_the_upstream_as(upstream: Upstream, token: str) -> dict[str, Any]:
    claims = upstream.auth.claims_of(token)  # a token of anyone else fails its signature
    assert claims["iss"] == upstream.auth.issuer
    assert claims["aud"] == upstream.server.resource
    return claims


# ----------------------------------------------------------------------------- abuse first


async def test_without_a_connection_the_call_gets_the_connect_url_and_never_reaches_the_upstream(
        setup: Setup) -> None:
    before = len(setup.ext.server.seen_tokens())
    async with sdk_client(setup, setup.ext, "carol") as (client, storage):
        data = connect_answer(setup, await call(client, "whoami"), setup.ext)
        assert data["reason"] == "not_connected"
        connect_answer(setup, await call(client, "add", {"a": 1, "b": 2}), setup.ext)
    after = setup.ext.server.seen_tokens()[before:]
    assert after == [], "a call without her connection carried a token upstream"
    assert storage.tokens is not None, "the SDK client never signed in to Deputy"
    assert storage.tokens.access_token not in "".join(setup.ext.server.seen_authorizations())


async def test_a_2025_client_is_sent_to_connect_by_its_initialize(setup: Setup) -> None:
    """A 2025-11-25 client's ``initialize`` goes upstream too, so it is the request answered with the connect URL."""
    with pytest.raises((MCPError, ExceptionGroup)) as raised:
        async with sdk_client(setup, setup.ext, "carol", mode="legacy"):
            pass
    connect_answer(setup, unwrapped(raised.value), setup.ext)


async def test_a_connect_form_without_its_csrf_token_starts_nothing(setup: Setup) -> None:
    connect_url = f"{setup.deputy.url}/connect/ext"
    async with httpx.AsyncClient(timeout=30) as http:
        form = await connect_form(http, connect_url, "dave")
        for forged in ({}, {"csrf_token": "x" * 43}):
            refused = await http.post(form.resolve_action(connect_url), data=forged)
            assert refused.status_code == 403
            assert "location" not in refused.headers
    async with sdk_client(setup, setup.ext, "dave") as (client, _):
        connect_answer(setup, await call(client, "whoami"), setup.ext)


async def test_a_callback_opened_in_another_users_browser_connects_nobody(setup: Setup) -> None:
    """Dave started; the AS's answer is opened in Carol's signed-in browser (a link sent to her): nobody connected."""
    async with httpx.AsyncClient(timeout=30) as daves, httpx.AsyncClient(timeout=30) as carols:
        callback = await approve(setup.ext, await start_connecting(setup, daves, setup.ext, "dave"), "dave")
        await connect_form(carols, f"{setup.deputy.url}/connect/ext", "carol")  # Carol is signed in to Deputy
        opened = await carols.get(callback)
        assert opened.status_code >= 400, page_text(opened.text)
    for username in ("dave", "carol"):
        async with sdk_client(setup, setup.ext, username) as (client, _):
            connect_answer(setup, await call(client, "whoami"), setup.ext)


async def test_a_refused_consent_stores_nothing_and_asks_for_no_token(setup: Setup) -> None:
    token_requests = setup.ext.auth.token_requests()
    async with httpx.AsyncClient(timeout=30) as http:
        callback = await approve(setup.ext, await start_connecting(setup, http, setup.ext, "carol"), "carol",
                                 consent=False)
        assert "error=access_denied" in callback
        answered = await http.get(callback)
        assert answered.status_code >= 400
        assert answered.headers.get("location") != "/connections"
    assert setup.ext.auth.token_requests() == token_requests
    async with sdk_client(setup, setup.ext, "carol") as (client, _):
        connect_answer(setup, await call(client, "whoami"), setup.ext)


# ----------------------------------------------------------------------------- connected


async def test_after_connecting_the_same_call_carries_her_own_upstream_token(setup: Setup) -> None:
    before = len(setup.ext.server.seen_tokens())
    async with sdk_client(setup, setup.ext, "alice") as (client, storage):
        connect_answer(setup, await call(client, "whoami"), setup.ext)
        await connect(setup, setup.ext, "alice")
        assert text_of(await call(client, "whoami")) == "alice"
        assert text_of(await call(client, "add", {"a": 2, "b": 40})) == "42"
    seen = setup.ext.server.seen_tokens()[before:]
    assert seen, "the upstream saw no call"
    assert storage.tokens is not None and storage.tokens.access_token not in seen
    for token in seen:  # every one the AS's, for this resource, for alice: no passthrough, nobody else's
        assert issued_by_the_upstream_as(setup.ext, token)["sub"] == "alice"
    # Her connection is hers: Carol, through the same Deputy, still has none.
    async with sdk_client(setup, setup.ext, "carol") as (client, _):
        connect_answer(setup, await call(client, "whoami"), setup.ext)


async def test_a_token_due_for_refresh_is_refreshed_once_per_request_and_rotation_is_kept(setup: Setup) -> None:
    """``short``'s access tokens live 30 s, inside Deputy's 60 s margin: every request finds hers due and refreshes
    it first, exactly once (one token request per upstream request: the SDK may send ``tools/list`` before a call),
    and each refresh uses the rotated refresh token (else the AS, which rotates, would refuse it and the call would
    ask her to connect again)."""
    async with sdk_client(setup, setup.short, "erin") as (client, _):
        connect_answer(setup, await call(client, "whoami"), setup.short)
        await connect(setup, setup.short, "erin")
        start = len(setup.short.server.seen_tokens())
        for _ in range(3):
            token_requests, upstream_requests = setup.short.auth.token_requests(), len(setup.short.server.seen_tokens())
            assert text_of(await call(client, "whoami")) == "erin"
            sent = len(setup.short.server.seen_tokens()) - upstream_requests
            assert sent >= 1
            assert setup.short.auth.token_requests() - token_requests == sent
    used = setup.short.server.seen_tokens()[start:]
    assert len(set(used)) == len(used), "a token was used twice: not refreshed"
    assert all(issued_by_the_upstream_as(setup.short, token)["sub"] == "erin" for token in used)


async def test_a_token_the_upstream_refuses_is_refreshed_and_the_call_retried_once(setup: Setup) -> None:
    """``ext``'s token is not due (300 s), but the upstream answers it 401 (RFC 6750 ``invalid_token``: expired or
    revoked there): Deputy refreshes (one token request) and sends the same call once more with the new token."""
    async with sdk_client(setup, setup.ext, "erin") as (client, _):
        await connect(setup, setup.ext, "erin")
        assert text_of(await call(client, "whoami")) == "erin"
        current = setup.ext.server.seen_tokens()[-1]
        setup.ext.server.refuse(current)
        token_requests, start = setup.ext.auth.token_requests(), len(setup.ext.server.seen_tokens())
        assert text_of(await call(client, "add", {"a": 20, "b": 22})) == "42"
        assert setup.ext.auth.token_requests() == token_requests + 1
    sent = setup.ext.server.seen_tokens()[start:]
    assert sent[0] == current and len(sent) == 2, "the refused token once, then the refreshed one once"
    assert issued_by_the_upstream_as(setup.ext, sent[1])["sub"] == "erin"


async def test_many_calls_refused_at_once_cost_one_refresh(setup: Setup) -> None:
    """Single flight: eight raw calls at once, all carrying the token the upstream now refuses, share one refresh."""
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("ext"), username="erin",
                                      password=PASSWORDS["erin"])
    await connect(setup, setup.ext, "erin")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
    headers = {"MCP-Protocol-Version": "2025-11-25", "Accept": "application/json, text/event-stream"}
    assert (await mcp_post(setup.deputy, token, server="ext", body=body, headers=headers)).status_code == 200
    setup.ext.server.refuse(setup.ext.server.seen_tokens()[-1])
    token_requests = setup.ext.auth.token_requests()
    answers = await asyncio.gather(*(mcp_post(setup.deputy, token, server="ext", body=body, headers=headers)
                                     for _ in range(8)))
    assert [a.json()["result"]["content"][0]["text"] for a in answers] == ["erin"] * 8
    assert setup.ext.auth.token_requests() == token_requests + 1


async def test_a_tool_needing_more_scope_asks_her_to_connect_again_and_then_runs(setup: Setup) -> None:
    """Step-up: ``admin_op`` answers her ``tools:read`` token 403 ``insufficient_scope`` naming ``tools:read
    tools:admin``; Deputy sends her to connect again (never relaying the upstream's challenge), asks the AS for the
    scopes the challenge named, and the call then runs."""
    async with sdk_client(setup, setup.ext, "erin") as (client, _):
        await connect(setup, setup.ext, "erin")
        assert text_of(await call(client, "whoami")) == "erin"
        data = connect_answer(setup, await call(client, "admin_op"), setup.ext)
        assert data["reason"] == "insufficient_scope"
        await connect(setup, setup.ext, "erin")
        assert text_of(await call(client, "admin_op")) == "admin ok"
    last = issued_by_the_upstream_as(setup.ext, setup.ext.server.seen_tokens()[-1])
    assert {"tools:read", "tools:admin"} <= set(last["scope"].split())
    assert last["sub"] == "erin"


async def test_revoking_by_the_cli_revokes_at_the_upstream_and_the_next_call_asks_to_connect(setup: Setup) -> None:
    async with sdk_client(setup, setup.ext, "alice") as (client, _):
        await connect(setup, setup.ext, "alice")
        assert text_of(await call(client, "whoami")) == "alice"
        revoked_before = len(setup.ext.auth.revoked_tokens())
        done = setup.deputy.cli("connections", "revoke", "--user", "alice", "--server", "ext")
        assert done.returncode == 0, done.stderr
        assert len(setup.ext.auth.revoked_tokens()) > revoked_before, "the AS saw no RFC 7009 revocation"
        listed = setup.deputy.cli("connections", "list", "--user", "alice")
        assert listed.returncode == 0 and "ext" not in listed.stdout.replace("no connections", "")

        async def asks_to_connect() -> None:  # the serving process may use its cached header a few seconds more
            connect_answer(setup, await call(client, "whoami"), setup.ext)

        await eventually(asks_to_connect)


async def test_disconnecting_on_the_page_revokes_at_the_upstream_and_the_next_call_asks_to_connect(
        setup: Setup) -> None:
    async with sdk_client(setup, setup.short, "erin") as (client, _):
        await connect(setup, setup.short, "erin")
        assert text_of(await call(client, "whoami")) == "erin"
        revoked_before = len(setup.short.auth.revoked_tokens())
        async with httpx.AsyncClient(timeout=30) as http:
            await connect_form(http, f"{setup.deputy.url}/connect/short", "erin")  # signs her in
            page = await http.get(f"{setup.deputy.url}/connections")
            assert page.status_code == 200 and "Upstream short" in page_text(page.text)
            form = next(f for f in parse_forms(page.text) if f.action.endswith("/short/disconnect"))
            done = await http.post(urljoin(str(page.url), form.action), data=form.data())
            assert done.status_code == 303 and done.headers["location"] == "/connections"
        assert len(setup.short.auth.revoked_tokens()) > revoked_before
        # Same process, no cache to outlive: the very next call asks again.
        data = connect_answer(setup, await call(client, "whoami"), setup.short)
        assert data["reason"] == "not_connected"


async def connected_at_both(setup: Setup, username: str) -> tuple[dict[str, int], list[str]]:
    """Connect at ``ext`` and ``short``, a call through each; each AS's revocation count, the SDK's client ids."""
    client_ids = []
    for upstream in (setup.ext, setup.short):
        async with sdk_client(setup, upstream, username) as (client, storage):
            await connect(setup, upstream, username)
            assert text_of(await call(client, "whoami")) == username
        assert storage.client_info is not None and storage.client_info.client_id
        client_ids.append(storage.client_info.client_id)
    return {upstream.name: len(upstream.auth.revoked_tokens()) for upstream in (setup.ext, setup.short)}, client_ids


@pytest.mark.parametrize(("username", "ending"), [("frank", "users disable"), ("grace", "consents revoke")])
async def test_disabling_her_or_revoking_her_consent_revokes_her_connections_at_the_upstreams(
        setup: Setup, username: str, ending: str) -> None:
    before, client_ids = await connected_at_both(setup, username)
    command = (["users", "disable", username] if ending == "users disable" else
               ["consents", "revoke", "--user", username, "--client", client_ids[0]])
    done = setup.deputy.cli(*command)
    assert done.returncode == 0, done.stderr
    for upstream in (setup.ext, setup.short):
        assert len(upstream.auth.revoked_tokens()) > before[upstream.name], f"{upstream.name}'s AS saw no revocation"
    listed = setup.deputy.cli("connections", "list", "--user", username)
    assert listed.returncode == 0 and "no connections" in listed.stdout, listed.stdout + listed.stderr


# ----------------------------------------------------------------------------- URL elicitation (MCP 2026-07-28)


async def test_a_url_elicitation_client_is_sent_to_connect_and_its_retry_succeeds(setup: Setup) -> None:
    """The SDK shows ``/connect/ext`` (input_required, URL mode); she connects there; the SDK's retry of the very
    same call reaches the upstream with her token."""
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("ext"), username="bob",
                                      password=PASSWORDS["bob"])
    shown: list[ElicitRequestURLParams] = []

    async def on_elicitation(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        assert isinstance(params, ElicitRequestURLParams), params
        shown.append(params)
        await connect(setup, setup.ext, "bob")
        return ElicitResult(action="accept")

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
        Client(streamable_http_client(setup.deputy.resource("ext"), http_client=http), mode=STATELESS,
               elicitation_callback=on_elicitation) as client,
    ):
        assert text_of(await client.call_tool("whoami", {})) == "bob"
    assert [params.url for params in shown] == [f"{setup.deputy.url}/connect/ext"]
