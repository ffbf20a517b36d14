"""deputy.policy.slices: which policies an action's set keeps, read from Cedar's JSON policy format and the
schema's action hierarchy; anything not understood is kept in every set (fail safe)."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest

from deputy.policy import build_schema
from deputy.policy.slices import action_ancestors, action_members, scope_of, sliced_policy_sets

TOOLS: list[dict[str, Any]] = [{"name": name, "inputSchema": {"type": "object", "properties": {}}}
                               for name in ("echo", "add", "wipe")]
SCHEMA_JSON = build_schema(TOOLS).json_text


def ests(text: str) -> dict[str, Any]:
    """The policies of ``text`` in Cedar's JSON format, named p0, p1, ... in order."""
    parsed = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    return {f"p{key[len('policy'):]}": parsed[key] for key in sorted(parsed, key=lambda k: int(k[6:]))}


def members(text: str, schema_json: str = SCHEMA_JSON) -> dict[str, tuple[str, ...]]:
    return action_members(ests(text), schema_json)


POLICIES = """
permit (principal, action, resource);
permit (principal, action == Deputy::Action::"echo", resource);
permit (principal, action in [Deputy::Action::"echo", Deputy::Action::"add"], resource);
permit (principal, action in Deputy::Action::"tools/call", resource);
permit (principal, action == Deputy::Action::"resources/read", resource);
forbid (principal, action in Deputy::Action::"echo", resource);
permit (principal, action in [Deputy::Action::"tools/call", Deputy::Action::"prompts/get"], resource);
permit (principal, action == Deputy::Action::"tools/call", resource);
"""


def test_each_scope_form_against_the_schema_hierarchy() -> None:
    sets = members(POLICIES)
    assert sets["echo"] == ("p0", "p1", "p2", "p3", "p5", "p6")  # == echo, in [echo, add], group, in echo
    assert sets["add"] == ("p0", "p2", "p3", "p6")
    assert sets["wipe"] == ("p0", "p3", "p6")                      # only unconstrained and the tools/call group
    assert sets["resources/read"] == ("p0", "p4")
    assert sets["prompts/get"] == ("p0", "p6")
    assert sets["tools/list"] == ("p0",)                            # list-time actions are not in tools/call
    assert sets["tools/call"] == ("p0", "p3", "p6", "p7")           # == the group itself is the group's alone
    assert set(sets) == {"echo", "add", "wipe", "tools/call", "resources/read", "prompts/get", "tools/list",
                         "prompts/list", "resources/list", "resources/templates/list"}


def test_a_policy_for_an_action_unknown_to_the_schema_is_in_no_known_actions_set() -> None:
    # (Validation refuses it at load; here the slicing alone: it can match only a request for "nope",
    # which no set covers, so such a request would be decided on the whole set.)
    sets = members('permit (principal, action == Deputy::Action::"nope", resource);\n'
                   'permit (principal, action in [Deputy::Action::"nope", Deputy::Action::"add"], resource);')
    assert sets["echo"] == () and sets["add"] == ("p1",) and "nope" not in sets


def nested_schema(**member_of: list[Any] | None) -> str:
    actions = {name: ({} if parents is None else {"memberOf": parents}) for name, parents in member_of.items()}
    return json.dumps({"Deputy": {"entityTypes": {}, "actions": actions}})


def test_groups_are_followed_transitively() -> None:
    schema_json = nested_schema(a=[{"id": "g1"}], g1=[{"id": "g2", "type": "Deputy::Action"}], g2=None, b=None)
    assert action_ancestors(schema_json) == {"a": {"g1", "g2"}, "g1": {"g2"}, "g2": frozenset(), "b": frozenset()}
    sets = members('permit (principal, action in Deputy::Action::"g2", resource);\n'
                   'permit (principal, action == Deputy::Action::"g2", resource);', schema_json)
    assert sets == {"a": ("p0",), "g1": ("p0",), "g2": ("p0", "p1"), "b": ()}


@pytest.mark.parametrize("parents", [
    [{"id": "g", "type": "Other::Action"}],   # another namespace's action: not read here
    [{"id": "g", "type": "Action"}],          # a relative type name: its resolution is Cedar's
    [{"id": 7}],
    ["g"],
    "g",
])
def test_an_action_whose_groups_are_uncertain_gets_the_whole_set(parents: Any) -> None:
    schema_json = nested_schema(a=parents, child=[{"id": "a"}], g=None)
    ancestors = action_ancestors(schema_json)
    assert ancestors["a"] is None and ancestors["child"] is None  # a descendant inherits the uncertainty
    assert set(members("permit (principal, action == Deputy::Action::\"g\", resource);", schema_json)) == {"g"}


@pytest.mark.parametrize("action_scope", [
    {"op": "All"},
    {"op": "is", "entity_type": "Deputy::Action"},                               # a form not known here
    {"op": "==", "slot": "?action"},
    {"op": "==", "entity": {"__entity": {"type": "Deputy::Action", "id": "echo"}}},  # another spelling
    {"op": "==", "entity": {"type": "Action", "id": "echo"}},
    {"op": "in", "entities": []},
    {"op": "in", "entities": [{"type": "Deputy::Action", "id": "echo"}, {"type": "X::Action", "id": "y"}]},
    {"op": "in", "entity": {"type": "Deputy::Action", "id": "echo"}, "extra": 1},
    "All",
    None,
])
def test_a_scope_not_understood_is_kept_for_every_action(action_scope: Any) -> None:
    est = {"effect": "forbid", "principal": {"op": "All"}, "resource": {"op": "All"}, "conditions": [],
           "action": action_scope}
    assert scope_of(est) is None
    sets = action_members({"odd": est}, SCHEMA_JSON)
    assert all(kept == ("odd",) for kept in sets.values())


def test_a_missing_action_scope_is_kept() -> None:
    assert scope_of({"effect": "permit"}) is None


def test_actions_with_the_same_policies_share_one_set() -> None:
    sets = sliced_policy_sets(ests(POLICIES), SCHEMA_JSON)
    assert sets["prompts/list"] is sets["tools/list"] is sets["resources/list"]
    assert sets["echo"] is not sets["add"]
    assert len({id(s) for s in sets.values()}) <= len(sets)
