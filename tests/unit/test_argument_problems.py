"""Issue 13: a call refused because its arguments do not fit the tool's schema says which argument and why.

The JSON-RPC error's ``data`` gets ``reason: "arguments_invalid"`` and ``problems`` (an RFC 6901 pointer and
Deputy's words, never the value), bounded in count and length, safe to show; the decision's ``errors`` (what the
audit record keeps and ``deputy policy explain`` prints) say the same. Abuse cases first.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from deputy.gateway.principal import Principal
from deputy.policy import Decision, Outcome, PolicyEngine, build_schema
from deputy.policy.argument_problems import (
    MAX_POINTER,
    MAX_PROBLEM,
    MAX_PROBLEMS,
    ArgumentError,
    first_problem_only,
    pointer,
)

SECRET = "sk-live-7f3a9c0d1e2b4a6f"
TOOL = {"name": "book", "inputSchema": {
    "type": "object",
    "$defs": {"Window": {"type": "object", "properties": {"start": {"type": "string", "format": "date-time"}},
                         "required": ["start"]}},
    "properties": {
        "a": {"type": "integer"},
        "when": {"type": "string", "format": "date-time"},
        "price": {"type": "number"},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "token": {"type": "string"},
        "window": {"$ref": "#/$defs/Window"},
        "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}},
                                              "required": ["x"]}},
        "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
        "host": {"type": "string", "format": "ipv4"},
        "wait": {"type": "string", "format": "duration"},
    },
    "required": ["a"]}}
SCHEMA = build_schema([TOOL])
POLICIES = """
@id("all") permit (principal, action, resource);
@id("no-slow") forbid (principal, action == Deputy::Action::"book", resource)
  when { context.input has mode && context.input.mode == Deputy::book::Input::mode::"slow" };
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    directory: Path = tmp_path_factory.mktemp("policies")
    (directory / "p.cedar").write_text(POLICIES)
    return PolicyEngine(directory, SCHEMA)


def decide(engine: PolicyEngine, arguments: Any) -> Decision:
    caller = Principal(user="u", agent="a", scopes=frozenset(), token_id="t", server="s")
    return engine.decide(caller, "tools/call", "book", arguments)


def problems(decision: Decision) -> list[dict[str, str]]:
    data = decision.error_data()
    assert decision.outcome is Outcome.DENY and data["reason"] == "arguments_invalid", data
    assert data["policies"] == []
    listed: list[dict[str, str]] = data["problems"]
    return listed


def everything_said(decision: Decision) -> str:
    """All a client and the audit record are told about the decision."""
    return json.dumps([decision.error_message(), decision.error_data(), decision.errors], ensure_ascii=False)


# --- abuse ---------------------------------------------------------------------------------------------------

def test_a_huge_number_of_bad_arguments_is_capped(engine: PolicyEngine) -> None:
    decision = decide(engine, {"a": 1, **{f"x{i}": i for i in range(100_000)}})
    listed = problems(decision)
    assert len(listed) == MAX_PROBLEMS
    assert [p["argument"] for p in listed] == [f"/x{i}" for i in range(MAX_PROBLEMS)]
    assert decision.error_data()["problems_truncated"] is True
    assert len(decision.errors) == MAX_PROBLEMS + 1 and "more problems" in decision.errors[-1]


def test_problems_in_many_nested_containers_are_capped_as_a_whole(engine: PolicyEngine) -> None:
    decision = decide(engine, {"a": 1, "points": [{"x": "no"} for _ in range(5_000)],
                               "labels": {f"l{i}": "no" for i in range(5_000)}})
    assert len(problems(decision)) == MAX_PROBLEMS and decision.problems_truncated


def test_exactly_as_many_problems_as_the_cap_is_not_truncated(engine: PolicyEngine) -> None:
    decision = decide(engine, {"a": 1, **{f"x{i}": i for i in range(MAX_PROBLEMS)}})
    assert len(problems(decision)) == MAX_PROBLEMS and decision.error_data()["problems_truncated"] is False
    assert not any("more problems" in error for error in decision.errors)


def test_a_very_long_argument_name_is_cut(engine: PolicyEngine) -> None:
    name = "n" * 1_000_000
    decision = decide(engine, {"a": 1, name: 1})
    (problem,) = problems(decision)
    assert len(problem["argument"]) == MAX_POINTER and problem["argument"].endswith("…")
    assert problem["argument"].startswith("/nnn")
    assert len(everything_said(decision)) < 4_000


def test_a_deeply_nested_long_path_is_cut(engine: PolicyEngine) -> None:
    decision = decide(engine, {"a": 1, "labels": {"k" * 100: 1, "m" * 200: "x"}})
    (problem,) = problems(decision)
    assert len(problem["argument"]) == MAX_POINTER and problem["argument"].startswith("/labels/mmm")


@pytest.mark.parametrize("name", [
    "evil\x00name", "line\nbreak", "esc\x1b[31mred", "del\x7f", "c1\x85next", "bidi\u202eexe.txt",
    "zero\u200bwidth", "sep\u2028line", "para\u2029graph", "bom\ufeff",
])
def test_argument_names_with_characters_not_shown_as_themselves_are_made_safe(engine: PolicyEngine,
                                                                              name: str) -> None:
    decision = decide(engine, {"a": 1, name: 1})
    (problem,) = problems(decision)
    assert "\ufffd" in problem["argument"]
    for text in [problem["argument"], *decision.errors]:
        assert not [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")], text


def test_a_lone_surrogate_in_a_name_is_replaced_not_a_crash() -> None:
    assert pointer(["a\ud800b"]) == "/a\ufffdb"
    assert pointer(["x"] * 100).endswith("…") and len(pointer(["x"] * 100)) == MAX_POINTER


@pytest.mark.parametrize("arguments", [
    {"a": SECRET},                                          # a string where an integer goes
    {"a": 1, "when": SECRET},                                # not a date-time
    {"a": 1, "when": "2026-13-45T10:00:00Z"},                # the date is quoted nowhere either
    {"a": 1, "when": "2026-06-01T25:61:00Z"},
    {"a": 1, "when": "2026-06-01T10:00:00+25:00"},
    {"a": 1, "mode": SECRET},                                # not one of the enum's strings
    {"a": 1, "price": 0.123456789},                          # not exactly a Cedar decimal
    {"a": 1.5},                                              # a float where an integer goes
    {"a": 1, "host": SECRET},
    {"a": 1, "wait": SECRET},
    {"a": 1, "token": 123456789012},
    {"a": 1, "window": {"start": SECRET}},
    {"a": 1, "labels": {"k": SECRET}},
    {"a": 1, "undeclared": SECRET},
])
def test_the_value_of_a_bad_argument_is_never_said(engine: PolicyEngine, arguments: dict[str, Any]) -> None:
    decision = decide(engine, arguments)
    assert problems(decision)
    said = everything_said(decision)
    values = [SECRET, "2026-13-45", "13-45", "25:61", "+25:00", "0.123456789", "1.5", "123456789012"]
    assert not [value for value in values if value in said], said


# --- where: JSON Pointer ------------------------------------------------------------------------------------

def test_nested_arguments_are_named_by_json_pointer(engine: PolicyEngine) -> None:
    decision = decide(engine, {"a": 1, "window": {"start": "20260601"}, "points": [{"x": 1}, {}, {"x": "2"}],
                               "labels": {"ok": 1, "a/b~c": "x"}})
    assert [p["argument"] for p in problems(decision)] == [
        "/window/start", "/points/1/x", "/points/2/x", "/labels/a~1b~0c"]


def test_arguments_that_are_no_object_are_the_empty_pointer(engine: PolicyEngine) -> None:
    assert problems(decide(engine, ["a"])) == [{"argument": "", "problem": "expected an object, got an array"}]
    assert decide(engine, ["a"]).errors == (
        "arguments_invalid: (the arguments) does not fit the tool's schema: expected an object, got an array",)


# --- why: the happy path --------------------------------------------------------------------------------------

def test_a_missing_required_argument_is_named(engine: PolicyEngine) -> None:
    decision = decide(engine, {"when": "2026-06-01T10:00:00Z"})
    assert problems(decision) == [{"argument": "/a", "problem": "required argument is missing"}]
    assert decision.error_message() == "denied by policy: the arguments do not fit the tool's input schema"
    assert decision.errors == ("arguments_invalid: /a does not fit the tool's schema: required argument is missing",)


def test_a_wrong_type_is_named(engine: PolicyEngine) -> None:
    assert problems(decide(engine, {"a": "7"})) == [{"argument": "/a", "problem": "expected an integer, got a string"}]


def test_a_strict_format_violation_is_named(engine: PolicyEngine) -> None:
    (problem,) = problems(decide(engine, {"a": 1, "when": "2026-06-01 10:00"}))
    assert problem["argument"] == "/when"
    assert problem["problem"].startswith("format date-time: not an RFC 3339 date-time")
    assert len(problem["problem"]) <= MAX_PROBLEM


def test_every_problem_is_said_at_once(engine: PolicyEngine) -> None:
    """The user who forgot `a` and mistyped `when` learns both, in the order of her arguments, then the missing."""
    listed = problems(decide(engine, {"when": "tomorrow", "mode": "medium"}))
    assert [p["argument"] for p in listed] == ["/when", "/mode", "/a"]
    assert listed[1]["problem"] == "expected one of ['fast', 'slow']"
    assert listed[2]["problem"] == "required argument is missing"


def test_other_decisions_carry_no_reason(engine: PolicyEngine) -> None:
    allowed = decide(engine, {"a": 1, "mode": "fast"})
    assert allowed.allowed and allowed.reason is None
    forbidden = decide(engine, {"a": 1, "mode": "slow"})
    data = forbidden.error_data()
    assert forbidden.outcome is Outcome.DENY and data["policies"] == ["no-slow"]
    assert "reason" not in data and "problems" not in data and forbidden.error_message() == "denied by policy"


def test_an_unknown_tool_is_not_an_argument_problem(engine: PolicyEngine) -> None:
    caller = Principal(user="u", agent="a", scopes=frozenset(), token_id="t", server="s")
    decision = engine.decide(caller, "tools/call", "format_disk", {})
    assert decision.outcome is Outcome.DENY and decision.reason is None and "reason" not in decision.error_data()


def test_a_branch_of_an_any_of_stops_at_its_first_problem() -> None:
    """Problems inside a union's branch are never read: collecting them would multiply the work at each nesting."""
    shape = {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": False}
    schema = build_schema([{"name": "either", "inputSchema": {"type": "object", "properties": {
        "v": {"anyOf": [shape, {"type": "array", "items": shape}]}}}}])
    bad = {f"y{i}": i for i in range(1_000)}
    with first_problem_only(), pytest.raises(ArgumentError) as caught:
        schema.request("tools/call", "either", bad)
    assert len(caught.value.found) == 1
    with pytest.raises(ArgumentError) as caught:
        schema.request("tools/call", "either", {"v": bad})
    assert [(p.argument, p.problem) for p in caught.value.problems] == [
        ("/v", "an object matches none of the types the schema allows here")]
    with pytest.raises(ArgumentError) as caught:
        schema.request("tools/call", "either", bad)
    assert len(caught.value.problems) == MAX_PROBLEMS and caught.value.truncated
