"""The demo policies (deputy/demo/policies) against the schema of the demo server's real tools/list.

The tools come from the demo server itself, built in process with the SDK's ``MCPServer``
(``build_demo_server().list_tools()``), not from a captured fixture, so a change to the
demo's tools that breaks the policies fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from deputy.act_chain import Actor
from deputy.gateway.principal import Principal
from deputy.policy import Outcome, PolicyEngine, PolicySchema, build_schema
from deputy.policy.user_attributes import UserAttributes
from tests.support.demo_policies import DEMO_POLICIES


@pytest.fixture
def engine(demo_tools: list[dict[str, Any]]) -> PolicyEngine:
    schema: PolicySchema = build_schema(demo_tools)
    assert schema.tools == {"echo", "add", "list_users", "delete_user"} and not schema.skipped
    return PolicyEngine(DEMO_POLICIES, schema)


def alice(scopes: frozenset[str] = frozenset({"demo:tools"}), agents: int = 0) -> Principal:
    actors = tuple(Actor(f"agent-{i}", f"agent-{i}", "http://127.0.0.1:8000") for i in range(agents))
    return Principal(user="alice", agent="agent-0" if agents else "demo-client", scopes=scopes, token_id="t",
                     server="demo", actors=actors)


def test_the_demo_policies_validate_and_carry_ids(engine: PolicyEngine) -> None:
    assert set(engine.loaded.sources) == {"demo-tools", "demo-protect-low-ids", "demo-delete-needs-approval",
                                          "demo-at-most-two-agents", "demo-browse", "demo-idp-delete-needs-admins"}


@pytest.mark.parametrize(("tool", "arguments"), [
    ("echo", {"text": "hi"}), ("add", {"a": 1, "b": 2}), ("list_users", {}), ("list_users", None),
])
def test_rule_1_demo_tools_may_call_the_harmless_tools(engine: PolicyEngine, tool: str, arguments: Any) -> None:
    decision = engine.decide(alice(), "tools/call", tool, arguments)
    assert decision.outcome is Outcome.ALLOW and decision.determining == ("demo-tools",)
    assert engine.decide(alice(frozenset({"other"})), "tools/call", tool, arguments).outcome is Outcome.DENY


@pytest.mark.parametrize("user_id", [0, 1, 99, -5])
def test_rule_2_deleting_a_low_id_is_forbidden_even_when_approved(engine: PolicyEngine, user_id: int) -> None:
    decision = engine.decide(alice(), "tools/call", "delete_user", {"id": user_id, "reason": "x"}, approved=True)
    assert decision.outcome is Outcome.DENY and decision.determining == ("demo-protect-low-ids",)


def test_rule_3_other_deletes_need_approval(engine: PolicyEngine) -> None:
    arguments = {"id": 100, "reason": "left the company"}
    pending = engine.decide(alice(), "tools/call", "delete_user", arguments)
    assert pending.outcome is Outcome.APPROVAL_REQUIRED and pending.determining == ("demo-delete-needs-approval",)
    approved = engine.decide(alice(), "tools/call", "delete_user", arguments, approved=True)
    assert approved.outcome is Outcome.ALLOW
    assert engine.decide(alice(frozenset()), "tools/call", "delete_user", arguments).outcome is Outcome.DENY


def test_rule_4_more_than_two_agents_are_denied(engine: PolicyEngine) -> None:
    assert engine.decide(alice(agents=2), "tools/call", "echo", {"text": "x"}).allowed
    decision = engine.decide(alice(agents=3), "tools/call", "echo", {"text": "x"})
    assert decision.outcome is Outcome.DENY and decision.determining == ("demo-at-most-two-agents",)
    listed = engine.decide_each(alice(agents=3), "tools/list", ["echo"])
    assert listed[0].outcome is Outcome.DENY


def test_listing_shows_every_tool_whatever_the_argument_rules(engine: PolicyEngine) -> None:
    decisions = engine.decide_each(alice(), "tools/list", ["echo", "add", "list_users", "delete_user"])
    assert [d.outcome for d in decisions] == [Outcome.ALLOW] * 4
    assert engine.decide(alice(), "resources/read", "demo://readme").allowed
    assert engine.decide(alice(), "prompts/get", "greet", {"name": "Ada"}).allowed
    assert not engine.decide(alice(frozenset()), "resources/read", "demo://readme").allowed


def test_every_list_method_has_a_list_time_action(engine: PolicyEngine) -> None:
    for method, item in [("prompts/list", "greet"), ("resources/list", "demo://readme"),
                         ("resources/templates/list", "demo://users/{id}")]:
        assert [d.outcome for d in engine.decide_each(alice(), method, [item])] == [Outcome.ALLOW], method
    refused = engine.decide_each(alice(), "tools/call", ["echo"])  # not a list-time action
    assert refused[0].outcome is Outcome.DENY and refused[0].errors


@pytest.mark.parametrize(("user", "outcome"), [
    (UserAttributes(idp="corp", groups=frozenset({"admins", "finance"})), Outcome.APPROVAL_REQUIRED),
    (UserAttributes(idp="corp", groups=frozenset({"finance"})), Outcome.DENY),
    (UserAttributes(idp="corp"), Outcome.DENY),
    (UserAttributes(idp="local", name="alice"), Outcome.APPROVAL_REQUIRED),  # the demo's own users: unaffected
    (UserAttributes(), Outcome.APPROVAL_REQUIRED),  # no user: an agent by client credentials
])
def test_an_identity_providers_user_deletes_users_only_as_an_admin(engine: PolicyEngine, user: UserAttributes,
                                                                   outcome: Outcome) -> None:
    caller = Principal(user="u", agent="demo-client", scopes=frozenset({"demo:tools"}), token_id="t", server="demo",
                       user_attributes=user)
    decision = engine.decide(caller, "tools/call", "delete_user", {"id": 500, "reason": "x"})
    assert decision.outcome is outcome
    if outcome is Outcome.DENY:
        assert decision.determining == ("demo-idp-delete-needs-admins",)
    assert engine.decide(caller, "tools/call", "echo", {"text": "x"}).allowed  # other tools: as before
