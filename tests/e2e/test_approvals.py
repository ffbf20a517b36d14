"""Human approval bound to the exact call, through a running Deputy with the demo policies.

`delete_user` with an id ≥ 100 needs an approval (`deputy/demo/policies`). Each test asserts what the
client got AND how many times the upstream (a recorder in front of the demo server) saw the call:
held → approved by another user (`deputy approvals approve`) → the identical call proceeds exactly
once → a replay is held again; changed arguments, an expired or a denied approval never let it through.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ElicitRequestParams, ElicitRequestURLParams, ElicitResult, ErrorData
from sqlalchemy import update

from deputy.clock import now
from deputy.storage.db import Database
from deputy.storage.tables import approvals
from deputy.web.csrf import CsrfTokens
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import database_url, require
from tests.support.delegation import AGENT_A, AGENT_B, AGENT_C, agent_own_token, delegation_config, exchange_token
from tests.support.demo_policies import DEMO_POLICIES, GuardedDeputy
from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, running_deputy
from tests.support.forked_deputy import run_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.recording_upstream import recording_upstream
from tests.support.sdk_client import page_text, parse_form, parse_forms

POLICY_DENIED = -32003
BOB_PASSWORD = "bob's own long passphrase"


Setup = GuardedDeputy


@pytest.fixture(scope="module")
def setup(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp(f"deputy-approvals-{backend}")
    with recording_upstream() as (recorded_url, recorder):
        extra = f'''
[servers.guarded]
url = "{recorded_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{DEMO_POLICIES}"

# Besides A then B (delegation_config): C may act for Alice, and B for C, so B's calls come by two chains.
[[delegation.may_act]]
client = "{PUBLIC_CLIENT}"
actors = ["{AGENT_C}"]

[[delegation.may_act]]
client = "{AGENT_C}"
actors = ["{AGENT_B}"]
'''
        with (database_url(backend, directory) as db_url,
              running_deputy(directory, db_url, upstream_url, delegation_config(extra=extra)) as deputy):
            added = deputy.cli("users", "add", "bob", "--password", BOB_PASSWORD)
            assert added.returncode == 0, added.stderr
            yield Setup(deputy, recorder)


@pytest.fixture(scope="module")
async def alice(setup: Setup) -> str:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("guarded"))
    return token


async def delete_user(setup: Setup, token: str, arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    response = await mcp_post(setup.deputy, token, server="guarded", headers={"MCP-Protocol-Version": "2025-06-18"},
                              body={"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                    "params": {"name": "delete_user", "arguments": arguments}})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["id"] == request_id, answer
    return answer


def held(setup: Setup, answer: dict[str, Any]) -> dict[str, Any]:
    """The approval a held call names, checked for its stable shape."""
    error = answer["error"]
    assert error["code"] == POLICY_DENIED, answer
    assert error["message"] == "denied by policy: needs a human approval", answer
    data: dict[str, Any] = error["data"]
    assert data["outcome"] == "approval_required"
    assert data["policies"] == ["demo-delete-needs-approval"]
    assert data["approval_url"] == f"{setup.deputy.url}/approvals/{data['approval_id']}"
    assert data["expires_at"] > now()
    return data


def forwarded(setup: Setup, user_id: int) -> int:
    """How many tools/call delete_user requests for `user_id` the upstream received."""
    count = 0
    for request in setup.recorder.seen:
        try:
            message = json.loads(request.body or b"null")
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params", {})
            if params.get("name") == "delete_user" and params.get("arguments", {}).get("id") == user_id:
                count += 1
    return count


def decide(setup: Setup, verb: str, approval_id: str, approver: str) -> None:
    result = setup.deputy.cli("approvals", verb, approval_id, "--as", approver)
    assert result.returncode == 0, result.stderr


def listed(setup: Setup, status: str) -> str:
    """`deputy approvals list --status STATUS` on a terminal wide enough for every column."""
    result = run_deputy(["approvals", "list", "--status", status], {**setup.deputy.env, "COLUMNS": "400"},
                        timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def proceeded(answer: dict[str, Any]) -> bool:
    """The upstream answered the call itself (the demo has no such user: a tool result, not Deputy's error)."""
    return "error" not in answer and "result" in answer


async def test_approved_call_proceeds_once_then_is_held_again(setup: Setup, alice: str) -> None:
    arguments = {"id": 4242, "reason": "left the company"}
    first = held(setup, await delete_user(setup, alice, arguments))
    assert forwarded(setup, 4242) == 0
    retried = held(setup, await delete_user(setup, alice, arguments))
    assert retried["approval_id"] == first["approval_id"]  # a retry does not pile up approvals

    pending = listed(setup, "pending")
    assert first["approval_id"] in pending and "delete_user" in pending and "alice" in pending
    assert '{"id":4242,"reason":"left the company"}' in pending

    decide(setup, "approve", first["approval_id"], "bob")
    # The same call, its keys in another order: the same canonical JSON, so the approval covers it.
    answer = await delete_user(setup, alice, {"reason": "left the company", "id": 4242}, request_id=2)
    assert proceeded(answer), answer
    assert forwarded(setup, 4242) == 1

    replay = held(setup, await delete_user(setup, alice, arguments, request_id=3))
    assert replay["approval_id"] != first["approval_id"]
    assert forwarded(setup, 4242) == 1
    assert first["approval_id"] in listed(setup, "used")
    assert first["approval_id"] not in listed(setup, "pending")


async def test_changed_arguments_need_their_own_approval(setup: Setup, alice: str) -> None:
    approved = held(setup, await delete_user(setup, alice, {"id": 5000, "reason": "x"}))
    decide(setup, "approve", approved["approval_id"], "bob")
    for changed in ({"id": 5001, "reason": "x"}, {"id": 5000, "reason": "y"}):
        other = held(setup, await delete_user(setup, alice, changed))
        assert other["approval_id"] != approved["approval_id"]
    assert forwarded(setup, 5000) == 0 and forwarded(setup, 5001) == 0
    assert proceeded(await delete_user(setup, alice, {"id": 5000, "reason": "x"}))
    assert forwarded(setup, 5000) == 1


async def through(setup: Setup, alice: str, *agents: str) -> str:
    """Alice's token exchanged by each agent in turn (RFC 8693): the last one calls, the chain behind it."""
    resource = setup.deputy.resource("guarded")
    token = alice
    for agent in agents:
        exchanged = await exchange_token(setup.deputy, agent, token,
                                         await agent_own_token(setup.deputy, agent, resource=resource))
        assert exchanged.status_code == 200, exchanged.text
        token = exchanged.json()["access_token"]
    return token


async def test_an_approval_is_bound_to_the_whole_actor_chain(setup: Setup, alice: str) -> None:
    """Issue 11 finding 8: an approval given to a call made through A→B is not usable by the same user and
    agent (B) coming through C→B, nor without delegation; through A→B it is, once."""
    by_a_then_b = await through(setup, alice, AGENT_A, AGENT_B)
    by_c_then_b = await through(setup, alice, AGENT_C, AGENT_B)
    call = {"id": 9150, "reason": "chain-bound"}
    approved = held(setup, await delete_user(setup, by_a_then_b, call))
    decide(setup, "approve", approved["approval_id"], "bob")

    other_chain = held(setup, await delete_user(setup, by_c_then_b, call))
    assert other_chain["approval_id"] != approved["approval_id"], "another chain is another request"
    no_chain = held(setup, await delete_user(setup, alice, call))
    assert no_chain["approval_id"] not in (approved["approval_id"], other_chain["approval_id"])
    assert forwarded(setup, 9150) == 0

    assert proceeded(await delete_user(setup, by_a_then_b, call))
    assert forwarded(setup, 9150) == 1


async def test_the_requesting_user_cannot_approve(setup: Setup, alice: str) -> None:
    data = held(setup, await delete_user(setup, alice, {"id": 6000, "reason": "mine"}))
    own = setup.deputy.cli("approvals", "approve", data["approval_id"], "--as", "alice")
    assert own.returncode == 1
    assert "own request" in own.stderr
    again = held(setup, await delete_user(setup, alice, {"id": 6000, "reason": "mine"}))
    assert again["approval_id"] == data["approval_id"]  # still pending
    assert forwarded(setup, 6000) == 0


async def test_unknown_approval_or_approver(setup: Setup) -> None:
    unknown = setup.deputy.cli("approvals", "approve", "no-such-approval", "--as", "bob")
    assert unknown.returncode == 1 and "no approval no-such-approval" in unknown.stderr
    nobody = setup.deputy.cli("approvals", "approve", "no-such-approval", "--as", "nobody")
    assert nobody.returncode == 1 and "no user nobody" in nobody.stderr


async def expire(setup: Setup, approval_id: str) -> None:
    database = Database(setup.deputy.database_url)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(update(approvals).where(approvals.c.approval_id == approval_id)
                               .values(expires_at=now() - 1))
    finally:
        await database.dispose()


async def test_an_expired_approval_fails(setup: Setup, alice: str) -> None:
    arguments = {"id": 7000, "reason": "too late"}
    # Expired before it was decided: it can no longer be approved.
    late = held(setup, await delete_user(setup, alice, arguments))
    await expire(setup, late["approval_id"])
    refused = setup.deputy.cli("approvals", "approve", late["approval_id"], "--as", "bob")
    assert refused.returncode == 1 and "expired" in refused.stderr
    fresh = held(setup, await delete_user(setup, alice, arguments))
    assert fresh["approval_id"] != late["approval_id"]
    # Approved, then expired before use: the call stays held.
    decide(setup, "approve", fresh["approval_id"], "bob")
    await expire(setup, fresh["approval_id"])
    after = held(setup, await delete_user(setup, alice, arguments))
    assert after["approval_id"] not in (late["approval_id"], fresh["approval_id"])
    assert forwarded(setup, 7000) == 0


async def test_a_denied_call_stays_held(setup: Setup, alice: str) -> None:
    arguments = {"id": 8000, "reason": "no"}
    data = held(setup, await delete_user(setup, alice, arguments))
    decide(setup, "deny", data["approval_id"], "bob")
    again = held(setup, await delete_user(setup, alice, arguments))
    assert again["approval_id"] != data["approval_id"]
    assert forwarded(setup, 8000) == 0
    decided = setup.deputy.cli("approvals", "approve", data["approval_id"], "--as", "bob")
    assert decided.returncode == 1 and "already denied" in decided.stderr


async def test_a_forbid_wins_over_any_approval(setup: Setup, alice: str) -> None:
    """A protected id is denied outright: no approval is offered, nothing is forwarded."""
    answer = await delete_user(setup, alice, {"id": 42, "reason": "x"})
    data = answer["error"]["data"]
    assert data["outcome"] == "deny" and "approval_id" not in data
    assert forwarded(setup, 42) == 0


# -- the approval page ------------------------------------------------------------------------


@asynccontextmanager
async def signed_in(approval_url: str, username: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client signed in through the approval page's own sign-in form."""
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.get(approval_url)
        assert first.status_code == 200 and "Sign in" in first.text
        form = parse_form(first.text)
        assert "request_id" not in form.fields
        answer = await http.post(urljoin(approval_url, form.action),
                                 data={**form.fields, "username": username, "password": password})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == urlsplit(approval_url).path
        yield http


async def test_an_approver_approves_on_the_page_and_the_call_proceeds_once(setup: Setup, alice: str) -> None:
    arguments = {"id": 9100, "reason": "<b>OPS-1</b> approved on the page"}
    data = held(setup, await delete_user(setup, alice, arguments))
    async with signed_in(data["approval_url"], "bob", BOB_PASSWORD) as bob:
        page = await bob.get(data["approval_url"])
        assert page.status_code == 200
        text = page_text(page.text)
        assert "delete_user" in text and "alice" in text and "pending" in text
        assert "<b>OPS-1</b>" not in page.text and "&lt;b&gt;OPS-1&lt;/b&gt;" in page.text  # escaped
        assert '"id": 9100' in text
        form = parse_form(page.text)
        assert ("decision", "approve") in form.buttons and ("decision", "deny") in form.buttons
        decided = await bob.post(urljoin(data["approval_url"], form.action),
                                 data={**form.fields, "decision": "approve"})
        assert decided.status_code == 303
        assert "approved" in page_text((await bob.get(data["approval_url"])).text)
    assert proceeded(await delete_user(setup, alice, arguments))
    assert forwarded(setup, 9100) == 1
    again = held(setup, await delete_user(setup, alice, arguments))
    assert again["approval_id"] != data["approval_id"]
    assert forwarded(setup, 9100) == 1


async def test_the_page_refuses_the_requesting_user_and_forged_forms(setup: Setup, alice: str) -> None:
    data = held(setup, await delete_user(setup, alice, {"id": 9200, "reason": "mine"}))
    async with signed_in(data["approval_url"], "alice", PASSWORD) as own:
        page = await own.get(data["approval_url"])
        assert page.status_code == 200 and "another user has to approve it" in page_text(page.text)
        assert not any(form.buttons for form in parse_forms(page.text))  # no buttons to press
        # The token Deputy would put in alice's form if she could decide (its own key, her session):
        # what refuses the forced POST is the approval rule, not the CSRF check.
        csrf = CsrfTokens.from_data_dir(setup.deputy.data_dir).token(  # bound to her session and this approval
            "approval", f"{own.cookies['deputy_session']}\x00{data['approval_id']}")
        forced = await own.post(data["approval_url"], data={"csrf_token": csrf, "decision": "approve"})
        assert forced.status_code == 409 and "another user has to approve it" in page_text(forced.text)
    other = held(setup, await delete_user(setup, alice, {"id": 9201, "reason": "another call"}))
    async with signed_in(data["approval_url"], "bob", BOB_PASSWORD) as bob:
        # The token of another call's page, his own and good there, decides nothing here.
        other_page = await bob.get(other["approval_url"])
        other_token = next(form.data()["csrf_token"] for form in parse_forms(other_page.text) if form.buttons)
        crossed = await bob.post(data["approval_url"], data={"csrf_token": other_token, "decision": "approve"})
        assert crossed.status_code == 403
        no_csrf = await bob.post(data["approval_url"], data={"decision": "approve"})
        assert no_csrf.status_code == 403
        wrong = await bob.post(data["approval_url"], data={"csrf_token": "x" * 43, "decision": "approve"})
        assert wrong.status_code == 403
    async with httpx.AsyncClient(timeout=30) as anonymous:  # not signed in: the sign-in form, no call details
        page = await anonymous.get(data["approval_url"])
        assert "9200" not in page.text and "delete_user" not in page.text
    again = held(setup, await delete_user(setup, alice, {"id": 9200, "reason": "mine"}))
    assert again["approval_id"] == data["approval_id"]  # still pending
    assert forwarded(setup, 9200) == 0


# -- URL-mode elicitation (MCP 2026-07-28 multi round-trip requests) ---------------------------


async def call_with_elicitation(setup: Setup, token: str, arguments: dict[str, Any],
                                answer: Callable[[ElicitRequestURLParams], Awaitable[str]]) -> CallToolResult:
    """``delete_user`` through the SDK client (2026-07-28) whose elicitation callback runs `answer`."""

    async def on_elicitation(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        assert isinstance(params, ElicitRequestURLParams), params
        return ElicitResult(action=await answer(params))  # type: ignore[arg-type]

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
        Client(streamable_http_client(setup.deputy.resource("guarded"), http_client=http), mode="2026-07-28",
               elicitation_callback=on_elicitation) as client,
    ):
        return await client.call_tool("delete_user", arguments)


async def test_a_client_with_url_elicitation_is_sent_to_the_page(setup: Setup, alice: str) -> None:
    """The SDK shows the approval page's URL; once approved there, its retry of the same call proceeds."""
    shown: list[ElicitRequestURLParams] = []

    async def approve_on_the_page(params: ElicitRequestURLParams) -> str:
        shown.append(params)
        if len(shown) == 1:  # the user opens the page; the approver acts there before the client retries
            async with signed_in(params.url, "bob", BOB_PASSWORD) as bob:
                form = parse_form((await bob.get(params.url)).text)
                decided = await bob.post(urljoin(params.url, form.action),
                                         data={**form.fields, "decision": "approve"})
                assert decided.status_code == 303
        return "accept"

    result = await call_with_elicitation(setup, alice, {"id": 9300, "reason": "elicited"}, approve_on_the_page)
    # The demo's own answer (it has no such user): the call reached the upstream, not a denial.
    assert "No user with id 9300" in str(result.content), result
    assert len(shown) == 1
    assert urlsplit(shown[0].url).path.startswith("/approvals/") and shown[0].url.startswith(setup.deputy.url)
    assert "approval" in shown[0].message
    assert forwarded(setup, 9300) == 1


async def test_a_declined_elicitation_is_the_denial(setup: Setup, alice: str) -> None:
    async def decline(_params: ElicitRequestURLParams) -> str:
        return "decline"

    with pytest.raises((MCPError, ExceptionGroup)) as raised:  # the SDK's task group may wrap it
        await call_with_elicitation(setup, alice, {"id": 9400, "reason": "declined"}, decline)
    denied = raised.value
    while isinstance(denied, ExceptionGroup) and len(denied.exceptions) == 1:
        denied = denied.exceptions[0]
    assert isinstance(denied, MCPError), raised.value
    assert denied.error.code == POLICY_DENIED
    data = denied.error.data
    assert isinstance(data, dict) and data["outcome"] == "approval_required" and data["approval_url"]
    assert forwarded(setup, 9400) == 0


@pytest.mark.browser
async def test_an_approver_approves_in_chromium(setup: Setup, alice: str,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """The approval page in a real browser: sign in, read the exact call, press Approve; the call then runs once."""
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    arguments = {"id": 9500, "reason": "approved in a browser"}
    data = held(setup, await delete_user(setup, alice, arguments))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.goto(data["approval_url"])
        assert "Sign in" in await page.title()
        await page.fill("#username", "bob")
        await page.fill("#password", BOB_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=Approve this call?")
        shown = await page.inner_text("main")
        assert "delete_user" in shown and "alice" in shown and "approved in a browser" in shown
        assert await page.inner_text("#status") == "pending"
        await page.screenshot(path=str(tmp_path_factory.mktemp("screens") / "approval.png"))
        await page.click("button[value=approve]")
        await page.wait_for_selector("#status:has-text('approved')")
        await browser.close()
    assert proceeded(await delete_user(setup, alice, arguments))
    assert forwarded(setup, 9500) == 1
