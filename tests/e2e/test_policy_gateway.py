"""Cedar decides each call on the real request path: the demo policies through a running Deputy.

A server `guarded` (the demo app behind a recorder) uses `deputy/demo/policies`; a server `stepup` uses a
policy that needs `stepup:admin` for `delete_user`. Each test asserts what the client got AND
whether the upstream saw the call — a denied call is never forwarded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.delegation import AGENT_A, AGENT_B, AGENT_C, agent_own_token, delegation_config, exchange_token
from tests.support.demo_policies import BROKEN_POLICY, DEMO_POLICIES, GuardedDeputy
from tests.support.deputy_process import running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import OMIT, mcp_post, tokens_for_alice
from tests.support.recording_upstream import recording_upstream

POLICY_DENIED = -32003
STEP_UP_POLICY = '''
@id("stepup-tools")
permit (principal, action == Deputy::Action::"echo", resource);

@id("stepup-add-for-configured-agents")
permit (principal, action == Deputy::Action::"add", resource)
when { context.agent.registration == "config" };

@id("stepup-list-users-via-agent-a")
permit (principal, action == Deputy::Action::"list_users", resource)
when { context.actor_client_ids.contains("agent-a") };

@id("stepup-delete-needs-admin")
@requires_scope("stepup:admin")
permit (principal, action == Deputy::Action::"delete_user", resource);
'''



Setup = GuardedDeputy


@pytest.fixture(scope="module")
def setup(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp(f"deputy-policy-{backend}")
    (directory / "stepup-policies").mkdir()
    (directory / "stepup-policies" / "stepup.cedar").write_text(STEP_UP_POLICY)
    (directory / "broken-policies").mkdir()
    (directory / "broken-policies" / "broken.cedar").write_text(BROKEN_POLICY)
    with recording_upstream() as (recorded_url, recorder):
        extra = f'''
[[delegation.may_act]]
client = "{AGENT_B}"
actors = ["{AGENT_C}"]

[servers.guarded]
url = "{recorded_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{DEMO_POLICIES}"

[servers.stepup]
url = "{recorded_url}"
scopes = ["stepup:tools", "stepup:admin"]
policies = "stepup-policies"

# Its upstream tokens are minted by Deputy (exchange), so its policies are validated on first need, not at
# start (an invalid set on a server readable at start stops start-up: tests/e2e/test_policy_lifecycle.py).
[servers.broken]
url = "{recorded_url}"
credentials = "exchange"
scopes = ["broken:tools"]
policies = "broken-policies"

[servers.unreachable]
url = "http://127.0.0.1:9/mcp"
scopes = ["unreachable:tools"]
policies = "stepup-policies"
'''
        with (database_url(backend, directory) as db_url,
              running_deputy(directory, db_url, upstream_url, delegation_config(extra=extra)) as deputy):
            yield Setup(deputy, recorder)


@pytest.fixture(scope="module")
async def alice(setup: Setup) -> str:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("guarded"))
    return token


async def call(setup: Setup, token: str, tool: str, arguments: dict[str, Any], *, server: str = "guarded",
               request_id: int = 1) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}
    return await post(setup, token, body, server=server)


async def post(setup: Setup, token: str, body: dict[str, Any], *, server: str = "guarded") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(setup.deputy.resource(server), content=json.dumps(body), headers=headers)


def forwarded_calls(setup: Setup, tool: str) -> int:
    """How many tools/call requests for `tool` the upstream received."""
    count = 0
    for request in setup.recorder.seen:
        try:
            message = json.loads(request.body or b"null")
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("method") == "tools/call" and \
                message.get("params", {}).get("name") == tool:
            count += 1
    return count


def denial(response: httpx.Response, request_id: int = 1) -> dict[str, Any]:
    """The JSON-RPC error of a call denied by policy, checked for its stable shape."""
    body = response.json()
    assert body["id"] == request_id, body
    error = body["error"]
    assert error["code"] == POLICY_DENIED, body
    assert error["message"].startswith("denied by policy"), body
    assert len(error["data"]["decision_id"]) == 32
    data: dict[str, Any] = error["data"]
    return data


async def test_a_permitted_call_is_forwarded(setup: Setup, alice: str) -> None:
    before = forwarded_calls(setup, "echo")
    response = await call(setup, alice, "echo", {"text": "hello"})
    assert response.status_code == 200, response.text
    assert "error" not in response.json(), response.text
    assert forwarded_calls(setup, "echo") == before + 1


async def test_a_forbid_on_a_nested_argument_is_an_explicit_denial(setup: Setup, alice: str) -> None:
    """`delete_user` with id < 100 is forbidden: the client is told so, with the deciding policy."""
    response = await call(setup, alice, "delete_user", {"id": 42, "reason": "cleanup"}, request_id=7)
    assert response.status_code == 200
    data = denial(response, 7)
    assert data["outcome"] == "deny"
    assert data["policies"] == ["demo-protect-low-ids"]
    assert forwarded_calls(setup, "delete_user") == 0


def test_policy_explain_of_an_unknown_decision_fails(setup: Setup) -> None:
    unknown = setup.deputy.cli("policy", "explain", "0" * 32)
    assert unknown.returncode == 1 and "no decision" in unknown.stderr


async def test_a_denial_can_be_explained(setup: Setup, alice: str) -> None:
    """`deputy policy explain` finds a denial in the audit log by its id: who, what, and the forbid that decided."""
    response = await call(setup, alice, "delete_user", {"id": 17, "reason": "explain me"}, request_id=8)
    data = denial(response, 8)
    explained = setup.deputy.cli("policy", "explain", data["decision_id"])
    assert explained.returncode == 0, explained.stderr
    text = " ".join(explained.stdout.split())
    assert data["decision_id"] in text and "deny" in text
    assert "tools/call delete_user on guarded" in text and '"id": 17' in text and "explain me" in text
    assert "demo-protect-low-ids tools.cedar:" in text and "context.input.id < 100" in text
    assert "still the active files" in text


async def test_other_deletions_need_an_approval(setup: Setup, alice: str) -> None:
    data = denial(await call(setup, alice, "delete_user", {"id": 4242, "reason": "left the company"}))
    assert data["outcome"] == "approval_required"
    assert data["policies"] == ["demo-delete-needs-approval"]
    assert forwarded_calls(setup, "delete_user") == 0


async def test_arguments_the_schema_does_not_allow_are_denied_not_forwarded(setup: Setup, alice: str) -> None:
    """A float where the tool takes an integer: Deputy cannot decide it exactly, so it is denied (fail closed)."""
    data = denial(await call(setup, alice, "delete_user", {"id": 4242.5, "reason": "x"}))
    assert data["outcome"] == "deny"
    assert forwarded_calls(setup, "delete_user") == 0


async def test_an_unknown_tool_is_denied_by_policy_not_reported_missing(setup: Setup, alice: str) -> None:
    data = denial(await call(setup, alice, "format_disk", {}))
    assert data["outcome"] == "deny"
    assert forwarded_calls(setup, "format_disk") == 0


async def test_an_unrecognised_method_is_denied_unless_permitted(setup: Setup, alice: str) -> None:
    response = await post(setup, alice, {"jsonrpc": "2.0", "id": 3, "method": "vendor/backdoor", "params": {}})
    assert denial(response, 3)["outcome"] == "deny"
    assert not any(b"vendor/backdoor" in request.body for request in setup.recorder.seen)


async def test_housekeeping_passes(setup: Setup, alice: str) -> None:
    response = await post(setup, alice, {"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert response.status_code == 200, response.text
    assert response.json().get("result") == {}


async def test_a_call_through_three_agents_is_denied_by_the_chain_rule(setup: Setup, alice: str) -> None:
    deputy = setup.deputy
    guarded = deputy.resource("guarded")
    token = alice
    for agent in (AGENT_A, AGENT_B, AGENT_C):
        actor = await agent_own_token(deputy, agent, resource=guarded)
        response = await exchange_token(deputy, agent, token, actor)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        if agent == AGENT_B:  # two agents: still allowed
            assert "error" not in (await call(setup, token, "echo", {"text": "via two"})).json()
    before = forwarded_calls(setup, "echo")
    data = denial(await call(setup, token, "echo", {"text": "via three"}))
    # The chain rule forbids every action, the list's too: to this caller echo is a tool that is not there, so the
    # answer names no policy (tests/security/test_hidden_tools.py); the record says which.
    assert data["policies"] == []

    async def recorded() -> list[str]:
        found = (await read_log(setup.deputy.database_url)).decisions(decision_id=data["decision_id"])
        assert len(found) == 1
        return list(found[0].record["policies"])

    assert await eventually(recorded) == ["demo-at-most-two-agents"]
    assert forwarded_calls(setup, "echo") == before


async def test_policy_sees_deputys_own_clients_in_the_chain(setup: Setup) -> None:
    """`list_users` on `stepup` is permitted only through agent-a (context.actor_client_ids): alice's own token is
    denied; agent-a acting for her, a hop Deputy vouches for (its own iss), is allowed."""
    deputy = setup.deputy
    resource = deputy.resource("stepup")
    own, _ = await tokens_for_alice(deputy, resource, scope="stepup:tools")
    assert denial(await call(setup, own, "list_users", {}, server="stepup"))["outcome"] == "deny"
    actor = await agent_own_token(deputy, AGENT_A, resource=resource)
    exchanged = await exchange_token(deputy, AGENT_A, own, actor)
    assert exchanged.status_code == 200, exchanged.text
    before = forwarded_calls(setup, "list_users")
    response = await call(setup, exchanged.json()["access_token"], "list_users", {}, server="stepup")
    assert response.status_code == 200 and "error" not in response.json(), response.text
    assert forwarded_calls(setup, "list_users") == before + 1


async def test_policy_sees_how_the_agent_was_registered(setup: Setup) -> None:
    """`add` on `stepup` is permitted only to agents registered in the configuration — as alice's client is."""
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("stepup"), scope="stepup:tools")
    before = forwarded_calls(setup, "add")
    response = await call(setup, token, "add", {"a": 2, "b": 3}, server="stepup")
    assert response.status_code == 200 and "error" not in response.json(), response.text
    assert forwarded_calls(setup, "add") == before + 1


async def test_step_up_is_an_insufficient_scope_challenge_then_the_call_passes(setup: Setup) -> None:
    deputy = setup.deputy
    resource = deputy.resource("stepup")
    narrow, _ = await tokens_for_alice(deputy, resource, scope="stepup:tools")
    response = await call(setup, narrow, "delete_user", {"id": 4, "reason": "x"}, server="stepup")
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="stepup:admin stepup:tools"' in challenge
    assert f'resource_metadata="{deputy.url}/.well-known/oauth-protected-resource/mcp/stepup"' in challenge
    assert response.json()["error"]["data"]["required_scopes"] == ["stepup:admin"]
    assert forwarded_calls(setup, "delete_user") == 0
    # The client re-authorizes with what the challenge named and retries.
    wide, _ = await tokens_for_alice(deputy, resource, scope="stepup:tools stepup:admin")
    retried = await call(setup, wide, "delete_user", {"id": 4, "reason": "x"}, server="stepup")
    assert retried.status_code == 200, retried.text
    assert "error" not in retried.json(), retried.text
    assert forwarded_calls(setup, "delete_user") == 1


async def test_servers_without_policies_are_not_decided(setup: Setup) -> None:
    """`demo` has no policies configured: today its calls pass as before (policy is per server)."""
    token, _ = await tokens_for_alice(setup.deputy, scope=OMIT)
    initialized = await mcp_post(setup.deputy, token)
    assert initialized.status_code == 200, initialized.text
    session = {"Mcp-Session-Id": initialized.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "delete_user", "arguments": {"id": 999999, "reason": "x"}}}
    response = await mcp_post(setup.deputy, token, body=body, headers=session)
    assert response.status_code == 200, response.text
    assert "No user with id 999999" in response.text, response.text  # the upstream itself answered
    assert str(POLICY_DENIED) not in response.text


@pytest.mark.parametrize("server", ["broken", "unreachable"])
async def test_no_decision_means_no_call(setup: Setup, server: str) -> None:
    """Policies that do not validate against the server's tools (found on first need), or tools that
    cannot be read: every call to that server is refused (503, retry later) and nothing is forwarded —
    fail closed, not open."""
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource(server))
    before = forwarded_calls(setup, "echo")
    for _ in range(2):  # the second try is answered from the remembered failure
        response = await call(setup, token, "echo", {"text": "hi"}, server=server)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"]["code"] == -32603
        assert "policy decisions are unavailable" in response.json()["error"]["message"]
    assert forwarded_calls(setup, "echo") == before


def test_policy_authors_check_against_the_live_server(setup: Setup) -> None:
    """`deputy policy validate|schema --server NAME` read the server's tools as the gateway does."""
    valid = setup.deputy.cli("policy", "validate", "--server", "guarded")
    assert valid.returncode == 0, valid.stderr
    assert "6 policies" in valid.stdout and "valid against the schema of 4 tool(s)" in valid.stdout
    broken = setup.deputy.cli("policy", "validate", "--server", "broken")
    assert broken.returncode == 1
    assert "broken.cedar:4:22" in broken.stderr and "input.volume" in broken.stderr
    schema = setup.deputy.cli("policy", "schema", "--server", "guarded")
    assert schema.returncode == 0, schema.stderr
    assert 'action "delete_user"' in schema.stdout
    unreachable = setup.deputy.cli("policy", "schema", "--server", "unreachable")
    assert unreachable.returncode == 2 and "unreachable: tools/list failed" in unreachable.stderr
