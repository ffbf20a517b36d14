"""Issue 14, items 2 and 6: signing in through a real OpenID Provider, end to end.

panva's ``oidc-provider`` (:mod:`tests.support.oidc_op`) is the organisation's identity provider ``corp``; a real
``deputy serve`` on each database backend is its relying party with no local users, so an authorization goes
straight to the OP. The MCP Python SDK client discovers, registers, is sent through the OP's login (walked like a
browser by the form driver), Deputy's consent, gets a token and calls a tool of the demo upstream. In Chromium the
same happens through the real pages. A server whose Cedar policy decides by the OP's groups permits alice (finance)
and denies bob (engineering) the same call.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp.shared.exceptions import MCPError

from tests.support.audit_log import read_log
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.corp_op import corp_provider_toml, deputy_port, op
from tests.support.databases import database_url, require
from tests.support.deputy_process import PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy, running_deputy
from tests.support.oidc_op import ALICE, BOB, OpenIdProvider
from tests.support.sdk_client import sdk_oauth_client

__all__ = ["deputy_port", "op"]  # the module-scope fixtures, used by name below

POLICY_DENIED = -32003
# The server "books" decides by the OP's groups: alice is in finance, bob in engineering (tests.support.oidc_op).
GROUP_POLICIES = '''
@id("browse")
permit (principal, action == Deputy::Action::"tools/list", resource);

@id("finance-adds")
permit (principal, action == Deputy::Action::"add", resource) when { context.user.groups.contains("finance") };
'''


@pytest.fixture(scope="module")
def fed_deputy(backend: str, op: OpenIdProvider, deputy_port: int, upstream_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-op-{backend}")
    (directory / "group-policies").mkdir()
    (directory / "group-policies" / "groups.cedar").write_text(GROUP_POLICIES)
    extra = f'''
[servers.books]
url = "{upstream_url}"
scopes = ["books:tools"]
policies = "group-policies"
''' + corp_provider_toml(op, ["openid", "email", "profile", "groups"], required_groups=["finance", "engineering"])
    with database_url(backend, directory) as url, \
            running_deputy(directory, url, upstream_url, extra, port=deputy_port) as running:
        yield running


async def test_sdk_client_signs_in_through_the_op_and_calls_a_tool(fed_deputy: RunningDeputy) -> None:
    resource = fed_deputy.resource("demo")
    async with sdk_oauth_client(resource, ALICE.username, ALICE.password) as (client, run):
        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert not result.is_error and result.structured_content == {"result": 42}
    assert run.redirects[0].iss == fed_deputy.url
    token = run.storage.tokens
    assert token is not None
    async with httpx.AsyncClient() as http:
        keys = KeySet.import_key_set((await http.get(f"{fed_deputy.url}/.well-known/jwks.json")).json())
    claims = jwt.decode(token.access_token, keys).claims
    users = fed_deputy.cli("users", "list")
    assert "alice@corp" in users.stdout, users.stdout
    assert claims["aud"] == resource
    log = await read_log(fed_deputy.database_url)
    succeeded = [leaf.record for leaf in log.of_type("signin.succeeded")]
    assert any(r["username"] == "alice@corp" and r["idp"] == "corp" and r["user"] == claims["sub"]
               for r in succeeded)


async def test_bob_signs_in_too_with_his_own_groups(fed_deputy: RunningDeputy) -> None:
    async with sdk_oauth_client(fed_deputy.resource("demo"), BOB.username, BOB.password) as (client, _run):
        result = await client.call_tool("add", {"a": 1, "b": 1})
        assert result.structured_content == {"result": 2}
    assert "bob@corp" in fed_deputy.cli("users", "list").stdout


async def test_the_ops_groups_decide_the_call(fed_deputy: RunningDeputy) -> None:
    """The same call, permitted for the OP's finance group and denied for its engineering group."""
    async with sdk_oauth_client(fed_deputy.resource("books"), ALICE.username, ALICE.password) as (client, _run):
        result = await client.call_tool("add", {"a": 40, "b": 2})
        assert not result.is_error and result.structured_content == {"result": 42}
    async with sdk_oauth_client(fed_deputy.resource("books"), BOB.username, BOB.password) as (client, _run):
        with pytest.raises(MCPError) as denied:
            await client.call_tool("add", {"a": 40, "b": 2})
    assert denied.value.error.code == POLICY_DENIED
    assert isinstance(denied.value.error.data, dict) and denied.value.error.data["policies"] == []  # no permit
    log = await read_log(fed_deputy.database_url)
    decisions = [leaf.record for leaf in log.of_type("decision") if leaf.record.get("tool") == "add"]
    assert any(r.get("user_attributes", {}).get("groups") == ["engineering"] and r["outcome"] == "deny"
               for r in decisions), decisions


@pytest.mark.browser
async def test_person_signs_in_through_the_op_in_chromium(fed_deputy: RunningDeputy) -> None:
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    url = f"{fed_deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI, "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": fed_deputy.resource("other"),
        "scope": "other:tools", "prompt": "login"})
    callbacks: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()

        async def capture(route, request):  # type: ignore[no-untyped-def]
            callbacks.append(request.url)
            await route.fulfill(status=200, content_type="text/html", body="<p>client received the code</p>")

        await page.route(f"{REDIRECT_URI}*", capture)
        await page.goto(url)  # one provider, no local users: straight to the OP's login page
        await page.fill("input[name=username]", ALICE.username)
        await page.fill("input[name=password]", ALICE.password)
        await page.click("button#sign-in")
        await page.wait_for_selector("text=Allow access?")
        consent = await page.inner_text("main")
        assert "alice@corp" in consent and "other:tools" in consent
        await page.click("button[value=approve]")
        await page.wait_for_selector("text=client received the code")
        await browser.close()

    [callback] = callbacks
    answer = parse_qs(urlsplit(callback).query)
    assert answer["state"] == [state] and answer["iss"] == [fed_deputy.url]
    async with httpx.AsyncClient() as http:
        token = await http.post(f"{fed_deputy.url}/token", data={
            "grant_type": "authorization_code", "code": answer["code"][0], "redirect_uri": REDIRECT_URI,
            "client_id": PUBLIC_CLIENT, "code_verifier": verifier, "resource": fed_deputy.resource("other")})
    assert token.status_code == 200, token.text
