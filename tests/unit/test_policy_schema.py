"""The Cedar schema built from Deputy's stub and a tools/list: names, context, determinism, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deputy.policy import SchemaError, UnknownAction, build_schema, load_tools
from deputy.policy.names import stand_in
from deputy.policy.schema import COMMON_CONTEXT, DEPUTY_ACTIONS, NAMESPACE

SEARCH = {"name": "search-files", "inputSchema": {"type": "object", "required": ["file-path"], "properties": {
    "file-path": {"type": "string"},
    "max-depth": {"type": "integer"},
    "filters": {"type": "object", "properties": {"if": {"type": "string"}, "min-size": {"type": "integer"}}},
}}}
PLAIN = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}


def actions(tools: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(build_schema(tools).json_text)[NAMESPACE]["actions"]
    return result


def test_one_action_per_tool_in_the_tools_call_group_plus_deputys_own() -> None:
    found = actions([PLAIN, SEARCH])
    assert set(found) == {"echo", "search-files"} | DEPUTY_ACTIONS
    assert found["echo"]["memberOf"] == [{"id": "tools/call"}]
    assert not found["tools/call"].get("appliesTo", {}).get("principalTypes")  # a group, never a request


def test_every_requestable_action_has_the_common_context() -> None:
    for name, action in actions([PLAIN]).items():
        if name == "tools/call":
            assert "context" not in action.get("appliesTo", {})
            continue
        attributes = action["appliesTo"]["context"]["attributes"]
        assert COMMON_CONTEXT.keys() <= attributes.keys(), name
        assert attributes["txn"].get("required") is False
    assert "input" in actions([PLAIN])["echo"]["appliesTo"]["context"]["attributes"]


def test_names_that_are_not_cedar_identifiers_keep_their_real_names() -> None:
    schema = build_schema([SEARCH])
    assert "search-files" in schema.tools and schema.skipped == {}
    assert 'action "search-files"' in schema.cedar_text
    assert '"file-path": String' in schema.cedar_text and '"min-size"?: Long' in schema.cedar_text
    assert "if?: String" in schema.cedar_text or '"if"?: String' in schema.cedar_text
    assert stand_in("search-files").startswith("x_search_files_") and stand_in("echo") == "echo"
    action, context, _ = schema.request("tools/call", "search-files",
                                        {"file-path": "/a", "filters": {"if": "x", "min-size": 3}})
    assert action == "search-files"
    assert context == {"input": {"file-path": "/a", "filters": {"if": "x", "min-size": 3}}}


def test_the_schema_is_deterministic_and_hashed() -> None:
    one, two = build_schema([PLAIN, SEARCH]), build_schema([SEARCH, PLAIN])
    assert one.json_text == two.json_text and one.cedar_text == two.cedar_text and one.version == two.version
    changed = build_schema([PLAIN, {**SEARCH, "inputSchema": {"type": "object", "properties": {}}}])
    assert changed.version != one.version
    assert len(one.version) == 64


def test_tools_that_cannot_be_typed_are_left_out_and_named() -> None:
    broken = {"name": "broken", "inputSchema": {"type": "object", "properties": {"p": {"$ref": "#/$defs/absent"}}}}
    clash = {"name": "resources/read", "inputSchema": {"type": "object"}}
    twice = {"name": "echo", "inputSchema": {"type": "object"}}
    schema = build_schema([PLAIN, broken, clash, twice, {"inputSchema": {}}])
    assert schema.tools == frozenset()  # echo is listed twice: neither copy can be trusted
    assert set(schema.skipped) == {"broken", "resources/read", "echo", "None"}
    with pytest.raises(UnknownAction, match="broken"):
        schema.request("tools/call", "broken", {})
    assert "resources/read" in json.loads(schema.json_text)[NAMESPACE]["actions"]  # Deputy's, untouched


def test_a_stand_in_that_equals_a_real_name_is_refused() -> None:
    alias = stand_in("a-b")
    with pytest.raises(SchemaError, match="stand-in"):
        build_schema([{"name": "a-b", "inputSchema": {"type": "object"}}, {"name": alias, "inputSchema": {}}])


@pytest.mark.parametrize("document", [
    [PLAIN], {"tools": [PLAIN]}, {"jsonrpc": "2.0", "id": 1, "result": {"tools": [PLAIN]}},
])
def test_load_tools_accepts_the_shapes_of_a_tools_list_answer(document: Any) -> None:
    assert load_tools(document) == [PLAIN]


def test_load_tools_refuses_anything_else() -> None:
    with pytest.raises(SchemaError):
        load_tools({"result": {"prompts": []}})
