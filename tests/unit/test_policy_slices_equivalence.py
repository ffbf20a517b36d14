"""Per-action policy sets decide exactly as the whole set: outcome, determining policies, errors — over generated
policy sets and many requests — plus the cases that matter most (groups, lists, unconstrained scopes, a failing
forbid, reload)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from deputy.gateway.principal import Principal
from deputy.policy import Decision, Outcome, PolicyEngine, build_schema
from deputy.policy.engine import LoadedPolicies

TOOLS: list[dict[str, Any]] = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "add", "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    {"name": "wipe", "inputSchema": {"type": "object", "properties": {}}},
]
ACTION = 'Deputy::Action::"{}"'
SCOPES = [  # (action scope, tool whose input a condition may use)
    ("action", None),
    (f"action == {ACTION.format('echo')}", "echo"),
    (f"action == {ACTION.format('add')}", "add"),
    (f"action in [{ACTION.format('echo')}, {ACTION.format('add')}]", None),
    (f"action in {ACTION.format('tools/call')}", None),
    (f"action in [{ACTION.format('tools/call')}, {ACTION.format('resources/read')}]", None),
    (f"action == {ACTION.format('resources/read')}", None),
    (f"action == {ACTION.format('tools/list')}", None),
    (f"action in {ACTION.format('wipe')}", None),
]
CONDITIONS = [
    "true",
    'context.scopes.contains("s1")',
    'principal == Deputy::User::"bob"',
    "context.time * 4611686018427387904 > 0",  # an evaluation error (overflow) when time >= 2
    f"action == {ACTION.format('echo')}",
]
INPUT_CONDITIONS = {"echo": 'context.input has text && context.input.text like "*x*"',
                    "add": "context.input has a && context.input.a * 4611686018427387904 > 1"}


def generated_policies(rng: random.Random, count: int) -> str:
    policies = []
    for k in range(count):
        scope, tool = rng.choice(SCOPES)
        effect = rng.choice(["permit", "permit", "forbid"])
        conditions = [rng.choice(CONDITIONS)] + ([INPUT_CONDITIONS[tool]] if tool and rng.random() < 0.5 else [])
        annotations = ""
        if effect == "permit":
            annotations = rng.choice(["", "", '@requires_scope("s2")\n', '@approval("required")\n'])
        policies.append(f'@id("g{k}")\n{annotations}{effect} (principal, {scope}, resource)\n'
                        f'when {{ {" && ".join(conditions)} }};')
    return "\n\n".join(policies) + "\n"


def who(user: str = "alice", scopes: frozenset[str] = frozenset()) -> Principal:
    return Principal(user=user, agent="agent-a", scopes=scopes, token_id="t", server="srv", actors=(), txn=None)


CALLERS = [who(), who("bob"), who(scopes=frozenset({"s1"})), who("bob", frozenset({"s1", "s2"}))]
CALLS: list[tuple[str, str, Any]] = [
    ("tools/call", "echo", {"text": "x"}), ("tools/call", "echo", {"text": "y"}), ("tools/call", "add", {"a": 1}),
    ("tools/call", "add", {"a": 3}), ("tools/call", "wipe", {}), ("tools/call", "missing", {}),
    ("resources/read", "demo://r", None), ("prompts/get", "p", {}),
]


def same(decision: Decision) -> Decision:
    return dataclasses.replace(decision, decision_id="")


def whole_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LoadedPolicies, "policy_set_for", lambda self, action: self.policy_set)


@pytest.mark.parametrize("seed", range(12))
def test_sliced_decisions_equal_whole_set_decisions(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    (tmp_path / "g.cedar").write_text(generated_policies(rng, rng.randint(1, 40)))
    engine = PolicyEngine(tmp_path, build_schema(TOOLS))
    assert engine.loaded.action_sets  # slicing is on
    sliced: list[Decision] = []
    for caller in CALLERS:
        for now in (1, 5):
            for method, name, arguments in CALLS:
                for approved in (False, True):
                    sliced.append(engine.decide(caller, method, name, arguments, approved=approved, now=now))
            sliced += engine.decide_each(caller, "tools/list", ["echo", "add", "wipe"], now=now)
    with monkeypatch.context() as patched:
        whole_set(patched)
        whole: list[Decision] = []
        for caller in CALLERS:
            for now in (1, 5):
                for method, name, arguments in CALLS:
                    for approved in (False, True):
                        whole.append(engine.decide(caller, method, name, arguments, approved=approved, now=now))
                whole += engine.decide_each(caller, "tools/list", ["echo", "add", "wipe"], now=now)
    assert [same(d) for d in sliced] == [same(d) for d in whole]
    assert any(d.errors for d in whole) or any(d.determining for d in whole)  # the sets do decide something


def engine_with(tmp_path: Path, text: str) -> PolicyEngine:
    (tmp_path / "p.cedar").write_text(text)
    return PolicyEngine(tmp_path, build_schema(TOOLS))


def test_a_group_permit_reaches_every_tool_and_nothing_else(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, '@id("tools") permit (principal, action in Deputy::Action::"tools/call", resource);')
    assert all(engine.decide(who(), "tools/call", tool, {}).determining == ("tools",) for tool in ("echo", "wipe"))
    assert engine.decide(who(), "resources/read", "demo://r").outcome is Outcome.DENY


def test_a_group_forbid_applies_to_a_call_without_entities(tmp_path: Path) -> None:
    # Regression: the empty entity store was made without the schema, so it held no action entities and a
    # group scope never matched a request that brought no entities of its own: this forbid was not applied.
    engine = engine_with(tmp_path, '@id("open") permit (principal, action, resource);\n'
                                   '@id("no-tools") forbid (principal, action in Deputy::Action::"tools/call", '
                                   'resource == Deputy::Server::"srv");')
    for tool in ("echo", "add", "wipe"):
        decision = engine.decide(who(), "tools/call", tool, {})
        assert decision.outcome is Outcome.DENY and decision.determining == ("no-tools",)
    assert engine.decide(who(), "resources/read", "demo://r").determining == ("open",)


def test_a_list_of_actions_and_an_unconstrained_scope(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, '@id("two") permit (principal, action in [Deputy::Action::"echo", '
                                   'Deputy::Action::"add"], resource);\n'
                                   '@id("all") forbid (principal, action, resource) '
                                   'when { principal == Deputy::User::"bob" };')
    assert engine.decide(who(), "tools/call", "add", {}).determining == ("two",)
    assert engine.decide(who(), "tools/call", "wipe", {}).outcome is Outcome.DENY
    for method, name in (("tools/call", "echo"), ("tools/call", "wipe"), ("prompts/get", "p")):
        assert engine.decide(who("bob"), method, name, {}).determining == ("all",)
    assert [d.determining for d in engine.decide_each(who("bob"), "tools/list", ["echo"])] == [("all",)]


def test_a_forbid_whose_condition_fails_on_the_action_still_denies(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, '@id("open") permit (principal, action, resource);\n'
                                   '@id("broken") forbid (principal, action == Deputy::Action::"add", resource) '
                                   'when { context.time * 4611686018427387904 > 0 };')
    decision = engine.decide(who(), "tools/call", "add", {"a": 1}, now=5)
    assert decision.outcome is Outcome.DENY and decision.determining == ("broken",)
    assert "overflow" in decision.errors[0]
    assert engine.decide(who(), "tools/call", "echo", {}, now=5).determining == ("open",)  # not evaluated there


def test_reload_and_a_new_schema_give_fresh_sets(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, '@id("echo") permit (principal, action == Deputy::Action::"echo", resource);')
    assert not engine.decide(who(), "tools/call", "add", {}).allowed
    (tmp_path / "p.cedar").write_text('@id("add") permit (principal, action == Deputy::Action::"add", resource);\n'
                                      '@id("group") forbid (principal, action in Deputy::Action::"tools/call", '
                                      'resource) when { principal == Deputy::User::"bob" };')
    assert engine.reload().applied
    assert engine.decide(who(), "tools/call", "add", {}).determining == ("add",)
    assert not engine.decide(who(), "tools/call", "echo", {}).allowed
    assert engine.use_schema(build_schema([*TOOLS, {"name": "new", "inputSchema": {"type": "object"}}])).applied
    assert "new" in engine.loaded.action_sets
    assert engine.decide(who("bob"), "tools/call", "new", {}).determining == ("group",)
