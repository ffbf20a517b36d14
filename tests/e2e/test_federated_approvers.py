"""A federated approver is named by her provider's group, never by her Deputy username, end to end.

panva's ``oidc-provider`` (:mod:`tests.support.oidc_op`) is the organisation's provider ``corp``; a real ``deputy
serve`` on each database backend has ``[approvals] approver_groups = { corp = ["security-oncall"] }``, and the
server ``guarded`` holds every ``delete_user`` for an approval. Mallory signs in first with ``preferred_username``
"Bob!", so she is ``bob@corp`` (a first-come label, OpenID Connect Core 1.0 §5.7); Bob, a member of the group, is
``bob-2@corp``. Signed in through the OP from the approval page, Mallory is refused the call's page and a forged
decision (with a valid CSRF token), and ``deputy approvals approve ID --as bob@corp`` — what an operator who trusts
the label would type — is refused too; Bob approves on the page, and the call then runs once. In Chromium the same.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from deputy.clock import now
from deputy.web.csrf import CsrfTokens
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.corp_op import corp_openid_provider, corp_provider_toml, deputy_port
from tests.support.databases import database_url, require
from tests.support.demo_policies import GuardedDeputy
from tests.support.deputy_process import running_deputy
from tests.support.forked_deputy import run_deputy
from tests.support.oauth_flow import mcp_post
from tests.support.oidc_op import OpenIdProvider, sign_in_at_op_async
from tests.support.recording_upstream import recording_upstream
from tests.support.sdk_client import page_text, parse_form, parse_forms, sdk_oauth_client

__all__ = ["deputy_port"]  # the module-scope fixture, used by name below

POLICY_DENIED = -32003
ONCALL = "security-oncall"
START = "/login/start/corp"
NOT_APPROVER = "You are not one of the approvers of held calls."
PASSWORDS = {"mallory": "mallory-password", "bob": "bob-password", "carol": "carol-password"}
ACCOUNTS = {
    # First to sign in, as "Bob!": her label is bob, so she is bob@corp. Not in the group.
    "mallory": {"password": PASSWORDS["mallory"], "preferred_username": "Bob!", "email": "mallory@corp.example",
                "email_verified": True, "name": "Mallory", "groups": ["staff"]},
    "bob": {"password": PASSWORDS["bob"], "preferred_username": "bob", "email": "bob@corp.example",
            "email_verified": True, "name": "Bob", "groups": [ONCALL, "staff"]},
    "carol": {"password": PASSWORDS["carol"], "email": "carol@corp.example", "email_verified": True,
              "name": "Carol", "groups": ["staff"]},
}
POLICIES = '''
@id("browse")
permit (principal, action == Deputy::Action::"tools/list", resource);

@id("deletes-need-approval")
@approval("required")
permit (principal, action == Deputy::Action::"delete_user", resource);
'''


@pytest.fixture(scope="module")
def op(deputy_port: int) -> Iterator[OpenIdProvider]:
    with corp_openid_provider(deputy_port, ACCOUNTS) as running:
        yield running


@pytest.fixture(scope="module")
def stack(backend: str, op: OpenIdProvider, deputy_port: int, upstream_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-federated-approvers-{backend}")
    (directory / "approval-policies").mkdir()
    (directory / "approval-policies" / "approvals.cedar").write_text(POLICIES)
    with recording_upstream() as (recorded_url, recorder):
        # Every request here comes from 127.0.0.1: the per-address sign-in limits are tested elsewhere.
        extra = f'''
[servers.guarded]
url = "{recorded_url}"
scopes = ["guarded:tools"]
policies = "approval-policies"

[approvals]
approver_groups = {{ corp = ["{ONCALL}"] }}

[limits]
signin_starts_per_minute = 1000
signin_failures_per_minute = 1000
''' + corp_provider_toml(op, ["openid", "email", "profile", "groups"])
        with (database_url(backend, directory) as url,
              running_deputy(directory, url, upstream_url, extra, port=deputy_port) as deputy):
            yield GuardedDeputy(deputy, recorder)


@pytest.fixture(scope="module")
async def carol(stack: GuardedDeputy) -> str:
    """Carol's access token for ``guarded``: she signed in through the OP (the one whose calls are held)."""
    async with sdk_oauth_client(stack.deputy.resource("guarded"), "carol", PASSWORDS["carol"]) as (_client, run):
        pass
    assert run.storage.tokens is not None
    return run.storage.tokens.access_token


async def delete_user(stack: GuardedDeputy, token: str, arguments: dict[str, Any]) -> dict[str, Any]:
    response = await mcp_post(stack.deputy, token, server="guarded", headers={"MCP-Protocol-Version": "2025-06-18"},
                              body={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                    "params": {"name": "delete_user", "arguments": arguments}})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def held(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["error"]["code"] == POLICY_DENIED, answer
    data: dict[str, Any] = answer["error"]["data"]
    assert data["outcome"] == "approval_required" and data["expires_at"] > now(), data
    return data


def forwarded(stack: GuardedDeputy, user_id: int) -> int:
    """How many tools/call delete_user requests for ``user_id`` the upstream received."""
    calls = [json.loads(request.body or b"null") for request in stack.recorder.seen]
    return sum(1 for call in calls if isinstance(call, dict) and call.get("method") == "tools/call"
               and call["params"].get("name") == "delete_user" and call["params"]["arguments"].get("id") == user_id)


def cli(stack: GuardedDeputy, *args: str) -> tuple[int, str]:
    """A command on a terminal wide enough for every column: (exit code, standard output and error)."""
    result = run_deputy(list(args), {**stack.deputy.env, "COLUMNS": "400"}, timeout=60)
    return result.returncode, result.stdout + result.stderr


@asynccontextmanager
async def signed_in_through_corp(approval_url: str, login: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own (Deputy's cookies and the OP's) that pressed the provider's button on the approval
    page, signed in at the OP as ``login``, and is back on the approval page."""
    async with httpx.AsyncClient(timeout=30) as http:
        page = await http.get(approval_url)
        assert page.status_code == 200, page_text(page.text)
        [button] = [form for form in parse_forms(page.text) if form.action == START]
        assert button.fields["approval_id"] == approval_url.rsplit("/", 1)[1]
        started = await http.post(urljoin(approval_url, START), data=button.data())
        assert started.status_code == 303, page_text(started.text)
        back = await sign_in_at_op_async(http, started.headers["location"], login, PASSWORDS[login])
        landed = await http.get(back.url)
        assert landed.status_code == 303 and landed.headers["location"] == urlsplit(approval_url).path, \
            page_text(landed.text)
        yield http


async def test_the_squatter_of_bobs_label_cannot_approve_and_the_group_member_can(stack: GuardedDeputy,
                                                                                  carol: str) -> None:
    arguments = {"id": 7100, "reason": "label squatting"}
    data = held(await delete_user(stack, carol, arguments))
    url = data["approval_url"]
    async with signed_in_through_corp(url, "mallory") as mallory:
        page = await mallory.get(url)
        assert page.status_code == 403 and NOT_APPROVER in page_text(page.text)
        assert "7100" not in page.text and "label squatting" not in page.text  # the call is not hers to see
        # The token Deputy would put in her form: what refuses the forged POST is who she is, not the CSRF check.
        csrf = CsrfTokens.from_data_dir(stack.deputy.data_dir).token(  # bound to her session and this approval
            "approval", f"{mallory.cookies['deputy_session']}\x00{data['approval_id']}")
        forged = await mallory.post(url, data={"csrf_token": csrf, "decision": "approve"})
        assert forged.status_code == 403 and NOT_APPROVER in page_text(forged.text)
    code, users = cli(stack, "users", "list")
    assert code == 0, users
    [squatter] = [row for row in users.splitlines() if " bob@corp " in row]
    assert "mallory@corp.example" in squatter  # the label is hers: she signed in first
    code, said = cli(stack, "approvals", "approve", data["approval_id"], "--as", "bob@corp")
    assert code == 1 and "bob@corp is not one of the configured approvers" in said, said
    assert held(await delete_user(stack, carol, arguments))["approval_id"] == data["approval_id"]  # still pending
    assert forwarded(stack, 7100) == 0

    async with signed_in_through_corp(url, "bob") as bob:
        page = await bob.get(url)
        assert page.status_code == 200 and "label squatting" in page_text(page.text)
        form = parse_form(page.text)
        assert ("decision", "approve") in form.buttons
        decided = await bob.post(urljoin(url, form.action), data=form.data(("decision", "approve")))
        assert decided.status_code == 303, page_text(decided.text)
        assert "approved" in page_text((await bob.get(url)).text)
    code, users = cli(stack, "users", "list")
    assert any(" bob-2@corp " in row and "bob@corp.example" in row for row in users.splitlines()), users
    answer = await delete_user(stack, carol, arguments)
    assert "error" not in answer and "result" in answer, answer
    assert forwarded(stack, 7100) == 1


@pytest.mark.browser
async def test_in_chromium_the_squatter_is_refused_and_the_group_member_approves(stack: GuardedDeputy,
                                                                                 carol: str) -> None:
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    arguments = {"id": 7200, "reason": "decided in a browser"}
    data = held(await delete_user(stack, carol, arguments))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for login in ("mallory", "bob"):  # each in a browser profile of her own: no cookie carried over
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(data["approval_url"])
            await page.click("text=Corp sign-in")
            await page.fill("input[name=username]", login)
            await page.fill("input[name=password]", PASSWORDS[login])
            await page.click("button#sign-in")
            if login == "mallory":
                await page.wait_for_selector(f"text={NOT_APPROVER}")
                assert "decided in a browser" not in await page.content()
            else:
                await page.wait_for_selector("text=Approve this call?")
                assert "decided in a browser" in await page.inner_text("main")
                await page.click("button[value=approve]")
                await page.wait_for_selector("#status:has-text('approved')")
            await context.close()
        await browser.close()
    answer = await delete_user(stack, carol, arguments)
    assert "error" not in answer and "result" in answer, answer
    assert forwarded(stack, 7200) == 1
