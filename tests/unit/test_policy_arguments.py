"""Arguments → Cedar values: each generated type accepts exactly what it should, and Cedar agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deputy.gateway.jsonrpc import parse_message
from deputy.gateway.principal import Principal
from deputy.policy import ArgumentError, Outcome, PolicyEngine, build_schema

KINDS = {"name": "kinds", "inputSchema": {"type": "object", "properties": {
    "price": {"type": "number"},
    "count": {"type": "integer"},
    "flag": {"type": "boolean"},
    "mode": {"type": "string", "enum": ["fast", "slow"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "when": {"type": "string", "format": "date-time"},
    "day": {"type": "string", "format": "date"},
    "wait": {"type": "string", "format": "duration"},
    "host": {"type": "string", "format": "ipv4"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "maybe": {"type": ["string", "null"]},
    "anything": {},
    "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}},
                                          "required": ["x"]}},
}}}
SCHEMA = build_schema([KINDS])


def convert(**arguments: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    _, context, entities = SCHEMA.request("tools/call", "kinds", arguments)
    return context["input"], entities


def refused(**arguments: Any) -> str:
    with pytest.raises(ArgumentError) as caught:
        convert(**arguments)
    return str(caught.value)


def test_numbers_are_exact_decimals_or_refused() -> None:
    assert convert(price=0.1)[0]["price"] == {"__extn": {"fn": "decimal", "arg": "0.1"}}
    assert convert(price=12)[0]["price"] == {"__extn": {"fn": "decimal", "arg": "12.0"}}
    assert convert(price=-3.25)[0]["price"] == {"__extn": {"fn": "decimal", "arg": "-3.25"}}
    assert "not rounded" in refused(price=0.12345)
    assert "not rounded" in refused(price=1e20)
    assert "expected a number" in refused(price=True)


def test_integers_are_longs_and_floats_are_never_truncated() -> None:
    assert convert(count=-7)[0]["count"] == -7
    assert "not truncated" in refused(count=3.0)
    assert "64-bit" in refused(count=-(2**63) - 1)
    assert "expected an integer" in refused(count=False)


def test_strings_booleans_enums_and_sets() -> None:
    value, _ = convert(flag=False, mode="slow", tags=["a", "b", "a"])
    assert value["flag"] is False
    assert value["mode"] == {"__entity": {"type": "Deputy::kinds::Input::mode", "id": "slow"}}
    assert value["tags"] == ["a", "b", "a"]
    assert "one of" in refused(mode="medium")
    assert "expected an array" in refused(tags="a")
    assert "tags[1]" in refused(tags=["a", 2])
    assert "true or false" in refused(flag="yes")


def test_dates_durations_and_addresses() -> None:
    value, _ = convert(when="2026-11-26T10:00:00.250+01:30", day="2026-11-26", wait="P1DT2H3M4.5S",
                       host="10.0.0.1")
    assert value["when"]["__extn"] == {"fn": "datetime", "arg": "2026-11-26T10:00:00.250+0130"}
    assert value["day"]["__extn"] == {"fn": "datetime", "arg": "2026-11-26"}
    assert value["wait"]["__extn"] == {"fn": "duration", "arg": "1d2h3m4s500ms"}
    assert value["host"]["__extn"] == {"fn": "ip", "arg": "10.0.0.1"}
    assert convert(when="2026-11-26T10:00:00Z")[0]["when"]["__extn"]["arg"] == "2026-11-26T10:00:00Z"
    assert "RFC 3339" in refused(when="yesterday")
    assert "duration" in refused(wait="P1M")  # a month has no fixed length
    assert "IP" in refused(host="10.0.0.300")


def test_open_objects_become_tagged_entities_named_by_path() -> None:
    value, entities = convert(labels={"team": "red", "env": "prod"})
    uid = {"type": "Deputy::kinds::Input::labels", "id": "input.labels"}
    assert value["labels"] == {"__entity": uid}
    assert entities == [{"uid": uid, "attrs": {}, "parents": [], "tags": {"team": "red", "env": "prod"}}]
    assert "labels.team" in refused(labels={"team": 1})


def test_unions_nulls_and_unknowns() -> None:
    assert convert(maybe="x")[0]["maybe"] == {"typeChoice0": "x"}
    assert convert(maybe=None)[0]["maybe"] == {"typeChoice1": {"__entity": {"type": "Deputy::Null", "id": "null"}}}
    assert "none of the types" in refused(maybe=3)
    one, two = convert(anything={"a": [1]})[0], convert(anything={"a": [1]})[0]
    assert one == two and one["anything"]["__entity"]["type"] == "Deputy::Unknown"
    assert convert(anything={"a": [2]})[0] != one


def test_records_in_sets_are_checked_member_by_member() -> None:
    assert convert(points=[{"x": 1}, {"x": 2}])[0]["points"] == [{"x": 1}, {"x": 2}]
    assert "points[1].x" in refused(points=[{"x": 1}, {}])
    assert "points[0].y" in refused(points=[{"x": 1, "y": 2}])


POLICIES = """
permit (principal, action, resource);
@id("cheap-only") forbid (principal, action == Deputy::Action::"kinds", resource)
  when { context.input has price && context.input.price.greaterThan(decimal("10.5")) };
@id("no-prod") forbid (principal, action == Deputy::Action::"kinds", resource)
  when { context.input has labels && context.input.labels.hasTag("env")
         && context.input.labels.getTag("env") == "prod" };
@id("not-slow") forbid (principal, action == Deputy::Action::"kinds", resource)
  when { context.input has mode && context.input.mode == Deputy::kinds::Input::mode::"slow" };
@id("not-late") forbid (principal, action == Deputy::Action::"kinds", resource)
  when { context.input has when && context.input.when > datetime("2030-01-01") };
@id("not-2-53-plus-1") forbid (principal, action == Deputy::Action::"kinds", resource)
  when { context.input has count && context.input.count == 9007199254740993 };
"""


@pytest.mark.parametrize(("arguments", "denied_by"), [
    ({"price": 10.5}, None),
    ({"price": 10.5001}, "cheap-only"),
    ({"labels": {"env": "dev"}}, None),
    ({"labels": {"env": "prod"}}, "no-prod"),
    ({"mode": "fast"}, None),
    ({"mode": "slow"}, "not-slow"),
    ({"when": "2031-01-01T00:00:00Z"}, "not-late"),
    ({"count": 2**53 + 1}, "not-2-53-plus-1"),
    ({"count": 2**53}, None),
    ({"count": 2**63 - 1}, None),
    ({"count": -(2**63)}, None),
])
def test_cedar_sees_the_converted_values(tmp_path: Path, arguments: dict[str, Any], denied_by: str | None) -> None:
    (tmp_path / "p.cedar").write_text(POLICIES)
    engine = PolicyEngine(tmp_path, SCHEMA)
    caller = Principal(user="u", agent="a", scopes=frozenset(), token_id="t", server="s")
    decision = engine.decide(caller, "tools/call", "kinds", arguments)
    if denied_by is None:
        assert decision.outcome is Outcome.ALLOW, decision
    else:
        assert decision.outcome is Outcome.DENY and decision.determining == (denied_by,)


@pytest.mark.parametrize(("digits", "denied_by"), [("9007199254740993", "not-2-53-plus-1"), ("9007199254740992", None)])
def test_cedar_decides_on_the_integer_the_gateway_parsed_digit_for_digit(tmp_path: Path, digits: str,
                                                                         denied_by: str | None) -> None:
    """Issue 11, finding 7: the value Cedar decides on is the one the forwarded bytes carry, beyond 2^53 too."""
    body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kinds","arguments":{"count":'
            + digits + "}}}")
    arguments = parse_message(body.encode()).operation.arguments
    assert str(arguments["count"]) == digits
    (tmp_path / "p.cedar").write_text(POLICIES)
    caller = Principal(user="u", agent="a", scopes=frozenset(), token_id="t", server="s")
    decision = PolicyEngine(tmp_path, SCHEMA).decide(caller, "tools/call", "kinds", arguments)
    assert decision.outcome is (Outcome.DENY if denied_by else Outcome.ALLOW), decision
    if denied_by:
        assert decision.determining == (denied_by,)


DEFAULTS = build_schema([{"name": "delete_path", "inputSchema": {"type": "object", "required": ["path"], "properties": {
    "path": {"type": "string"},
    "recursive": {"type": "boolean", "default": True},
    "depth": {"type": "integer", "default": "deep"},  # a default its own type refuses
    "mode": {"$ref": "#/$defs/Mode", "default": "fast"},  # beside a $ref, as Pydantic writes it
    "options": {"type": "object", "properties": {"dry_run": {"type": "boolean", "default": False}}},
    "note": {"type": "string"},
}, "$defs": {"Mode": {"type": "string", "enum": ["fast", "slow"]}}}}])


def test_an_absent_argument_is_decided_as_its_schema_default_as_the_upstream_runs_it() -> None:
    """An SDK server fills in what the client left out from the tool's signature (its schema's ``default``)."""
    _, context, _ = DEFAULTS.request("tools/call", "delete_path", {"path": "/srv"})
    assert context["input"]["recursive"] is True
    assert "depth" not in context["input"], "a default that does not fit its type is no value"
    assert "note" not in context["input"], "no default: absent, as sent"
    assert context["input"]["mode"] == {"__entity": {"type": "Deputy::delete_path::Input::Mode", "id": "fast"}}
    _, said, _ = DEFAULTS.request("tools/call", "delete_path", {"path": "/srv", "recursive": False,
                                                               "options": {}})
    assert said["input"]["recursive"] is False, "what the client said wins"
    assert said["input"]["options"] == {"dry_run": False}, "defaults inside an object that was sent"
