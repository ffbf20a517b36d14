"""``has`` tests on a tool's or a prompt's arguments that can never be true are refused at load (review, 2026-12-06).

Abuse first: ``has`` on a map argument (an object with ``additionalProperties``, whose members are Cedar tags) is
refused with a pointer to ``hasTag``/``getTag``, and without the check that forbid lets the call through; a typo'd
attribute, at the top, in a nested record or under ``unless``, is refused. Then the other direction: an attribute
any one of the actions a policy may apply to declares (required or optional, at any depth) loads, ``hasTag``
loads and decides, a path the analysis cannot resolve is never refused, and the ``context.user`` checks are as
they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deputy.gateway.principal import Principal
from deputy.policy import Outcome, PolicyEngine, PolicyLoadError, build_schema, load_policies
from deputy.policy.attribute_tests import impossible_input_tests
from deputy.policy.context_types import ContextTypes, Shape, Unresolved
from deputy.policy.schema import PolicySchema
from deputy.policy.sources import PolicyFile, PolicyProblem, PolicySource, parse_policy_files

TOOLS: list[dict[str, Any]] = [
    # What the MCP SDK makes of `def run(cmd: str, env: dict[str, str])`.
    {"name": "run", "inputSchema": {"type": "object", "required": ["cmd", "env"], "properties": {
        "cmd": {"type": "string"},
        "env": {"type": "object", "additionalProperties": {"type": "string"}, "title": "Env"}}}},
    {"name": "deploy", "inputSchema": {"type": "object", "required": ["target"], "properties": {
        "target": {"type": "string"},
        "opts": {"type": "object", "properties": {
            "force": {"type": "boolean"},
            "limits": {"type": "object", "required": ["cpu"], "properties": {
                "cpu": {"type": "integer"}, "memory": {"type": "integer"}}},
            "labels": {"type": "object", "properties": {"team": {"type": "string"}},
                       "additionalProperties": {"type": "string"}}}},
        "mode": {"enum": ["fast", "slow"]},
        "ref": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"sha": {"type": "string"}}}]},
        "hosts": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}},
    {"name": "wipe", "inputSchema": {"type": "object", "properties": {"force": {"type": "boolean"}}}},
]

PERMIT_ALL = '@id("tools")\npermit (principal, action in Deputy::Action::"tools/call", resource);\n\n'


@pytest.fixture(scope="module")
def schema() -> PolicySchema:
    return build_schema(TOOLS)


def load(tmp_path: Path, schema: PolicySchema, text: str) -> PolicyEngine:
    (tmp_path / "rules.cedar").write_text(PERMIT_ALL + text)
    return PolicyEngine(tmp_path, schema)


def refusal(tmp_path: Path, schema: PolicySchema, text: str) -> PolicyProblem:
    """The one problem a refused policy file has (the policy after PERMIT_ALL, at line 4)."""
    with pytest.raises(PolicyLoadError) as refused:
        load(tmp_path, schema, text)
    assert len(refused.value.problems) == 1, refused.value
    problem = refused.value.problems[0]
    assert (problem.file, problem.line, problem.column) == ("rules.cedar", 4, 1), problem
    return problem


def alice() -> Principal:
    return Principal(user="alice", agent="agent-a", scopes=frozenset(), token_id="t", server="srv", actors=(),
                     txn=None)


# --- abuse: has tests that can never be true ---------------------------------------------------------------------


def test_has_on_a_map_argument_is_refused_and_points_to_hastag(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, '@id("no-ld-preload")\n'
                      'forbid (principal, action == Deputy::Action::"run", resource)\n'
                      'when { context.input.env has LD_PRELOAD };\n')
    assert "'no-ld-preload'" in problem.message
    assert "`context.input.env has LD_PRELOAD` is never true" in problem.message
    assert 'context.input.env.hasTag("LD_PRELOAD")' in problem.message
    assert 'context.input.env.getTag("LD_PRELOAD")' in problem.message


def test_without_the_check_that_forbid_never_forbids(tmp_path: Path, schema: PolicySchema,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Why it is refused: Cedar itself accepts the policy and the call it was written against is allowed."""
    monkeypatch.setattr("deputy.policy.engine.impossible_input_tests", lambda sources, schema_json: [],
                        raising=False)  # before the fix there is no such check: the premise holds there too
    engine = load(tmp_path, schema, 'forbid (principal, action == Deputy::Action::"run", resource)\n'
                  "when { context.input.env has LD_PRELOAD };\n")
    decision = engine.decide(alice(), "tools/call", "run", {"cmd": "id", "env": {"LD_PRELOAD": "/tmp/evil.so"}})
    assert decision.allowed and decision.determining == ("tools",)


def test_has_on_a_map_in_a_record_with_declared_members_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, 'forbid (principal, action == Deputy::Action::"deploy", resource)\n'
                      "when { context.input has opts.labels.owner };\n")
    assert 'context.input.opts.labels.hasTag("owner")' in problem.message


def test_a_typo_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, '@id("no-forced-deploys")\n'
                      'forbid (principal, action == Deputy::Action::"deploy", resource)\n'
                      "when { context.input has opts && context.input.opts has froce };\n")
    assert "'no-forced-deploys'" in problem.message
    assert "`context.input.opts has froce` is never true (a typo of 'force'?)" in problem.message


def test_a_typo_at_the_top_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, 'forbid (principal, action == Deputy::Action::"wipe", resource)\n'
                      "when { context.input has forse };\n")
    assert "`context.input has forse` is never true" in problem.message


def test_a_typo_in_a_nested_record_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, 'forbid (principal, action == Deputy::Action::"deploy", resource)\n'
                      'when { context.input has opts.limits && context.input.opts.limits has memroy };\n')
    assert "`context.input.opts.limits has memroy` is never true (a typo of 'memory'?)" in problem.message


def test_a_typo_in_a_choice_of_types_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, 'forbid (principal, action == Deputy::Action::"deploy", resource)\n'
                      "when { context.input has ref.typeChoice1.shaa };\n")
    assert "`context.input.ref.typeChoice1 has shaa` is never true" in problem.message


def test_a_has_under_unless_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    problem = refusal(tmp_path, schema, '@id("only-unforced")\n'
                      'permit (principal, action == Deputy::Action::"deploy", resource)\n'
                      'unless { context.input has opts && context.input["opts"] has "froce" };\n')
    assert "'only-unforced'" in problem.message and "context.input.opts has froce" in problem.message


def test_an_attribute_no_action_of_a_group_scope_declares_is_refused(tmp_path: Path, schema: PolicySchema) -> None:
    for scope in ('action in Deputy::Action::"tools/call"', "action",
                  'action in [Deputy::Action::"wipe", Deputy::Action::"deploy"]'):
        problem = refusal(tmp_path, schema, f"forbid (principal, {scope}, resource)\n"
                          "when { context has input && context.input has forcd };\n")
        assert "`context.input has forcd` is never true" in problem.message, scope


def test_every_dead_test_of_a_policy_is_named_once(tmp_path: Path, schema: PolicySchema) -> None:
    (tmp_path / "rules.cedar").write_text('forbid (principal, action == Deputy::Action::"run", resource)\n'
                                          "when { context.input.env has A || context.input.env has B }\n"
                                          "unless { context.input.env has A };\n")
    with pytest.raises(PolicyLoadError) as refused:
        load_policies(tmp_path, schema)
    named = [problem.message.split("`")[1] for problem in refused.value.problems]
    assert named == ["context.input.env has A", "context.input.env has B"]


# --- what still loads -------------------------------------------------------------------------------------------


def test_a_scope_where_one_action_declares_the_attribute_loads(tmp_path: Path, schema: PolicySchema) -> None:
    """``force`` is an attribute of wipe's input, not deploy's: the test may be true, on wipe's calls."""
    engine = load(tmp_path, schema, '@id("no-force")\n'
                  'forbid (principal, action in [Deputy::Action::"deploy", Deputy::Action::"wipe"], resource)\n'
                  "when { context.input has force && context.input.force };\n")
    assert engine.decide(alice(), "tools/call", "wipe", {"force": True}).determining == ("no-force",)
    assert engine.decide(alice(), "tools/call", "deploy", {"target": "prod"}).allowed


def test_a_group_scope_loads_when_one_of_its_tools_declares_it(tmp_path: Path, schema: PolicySchema) -> None:
    load(tmp_path, schema, 'forbid (principal, action in Deputy::Action::"tools/call", resource)\n'
         "when { context has input && context.input has opts && context.input.opts has force };\n")


def test_hastag_on_a_map_argument_loads_and_forbids(tmp_path: Path, schema: PolicySchema) -> None:
    engine = load(tmp_path, schema, '@id("no-ld-preload")\n'
                  'forbid (principal, action == Deputy::Action::"run", resource)\n'
                  'when { context.input.env.hasTag("LD_PRELOAD") };\n')
    preload = engine.decide(alice(), "tools/call", "run", {"cmd": "id", "env": {"LD_PRELOAD": "/tmp/evil.so"}})
    assert preload.outcome is Outcome.DENY and preload.determining == ("no-ld-preload",)
    assert engine.decide(alice(), "tools/call", "run", {"cmd": "id", "env": {"PATH": "/bin"}}).allowed


def test_a_declared_member_of_a_map_with_members_loads(tmp_path: Path, schema: PolicySchema) -> None:
    load(tmp_path, schema, 'forbid (principal, action == Deputy::Action::"deploy", resource)\n'
         'when { context.input has opts.labels.team && context.input.opts.labels.team == "ops" };\n')


def json_schema_paths(node: dict[str, Any], above: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every property path of an ``inputSchema``, objects followed into their ``properties``."""
    for name, child in node.get("properties", {}).items():
        yield (*above, name)
        yield from json_schema_paths(child, (*above, name))


@pytest.mark.parametrize("tool", [tool["name"] for tool in TOOLS])
def test_every_argument_the_tool_declares_may_be_tested_with_has(tmp_path: Path, schema: PolicySchema,
                                                                  tool: str) -> None:
    """Read from the tools' own JSON Schemas, not from the Cedar schema the check reads: no valid test refused."""
    input_schema = next(t["inputSchema"] for t in TOOLS if t["name"] == tool)
    tests = [f"context.input has {'.'.join(path)}" for path in json_schema_paths(input_schema)]
    tests += ["context.input has ref.typeChoice0", "context.input has ref.typeChoice1.sha"] if tool == "deploy" else []
    assert tests
    load(tmp_path, schema, "".join(f'forbid (principal, action == Deputy::Action::"{tool}", resource)\n'
                                   f"when {{ {test} }};\n" for test in tests))


# --- what the analysis cannot resolve is never refused -----------------------------------------------------------


def sources_of(text: str) -> list[PolicySource]:
    return parse_policy_files([PolicyFile("p.cedar", text)])


RUN_MAP_TEST = 'forbid (principal, action == Deputy::Action::"run", resource) when { context.input.env has X };'


def edited(schema: PolicySchema, edit: Any) -> str:
    document = json.loads(schema.json_text)
    edit(document)
    return json.dumps(document)


def test_the_same_test_is_refused_on_the_real_schema(schema: PolicySchema) -> None:
    assert len(impossible_input_tests(sources_of(RUN_MAP_TEST), schema.json_text)) == 1


def test_a_type_name_that_cannot_be_found_refuses_nothing(schema: PolicySchema) -> None:
    def rename(document: dict[str, Any]) -> None:
        document["Deputy"]["commonTypes"]["runInput"]["attributes"]["env"]["name"] = "Deputy::run::Input::gone"
    assert impossible_input_tests(sources_of(RUN_MAP_TEST), edited(schema, rename)) == []


def test_a_type_form_not_known_here_refuses_nothing(schema: PolicySchema) -> None:
    def unknown_form(document: dict[str, Any]) -> None:
        document["Deputy"]["actions"]["run"]["appliesTo"]["context"]["attributes"]["input"] = {"type": "Set"}
    assert impossible_input_tests(sources_of(RUN_MAP_TEST), edited(schema, unknown_form)) == []


def test_one_unresolved_action_of_the_scope_refuses_nothing(schema: PolicySchema) -> None:
    text = ('forbid (principal, action in [Deputy::Action::"run", Deputy::Action::"wipe"], resource)\n'
            "when { context.input has zzz };")
    assert len(impossible_input_tests(sources_of(text), schema.json_text)) == 1

    def unreadable_wipe(document: dict[str, Any]) -> None:
        document["Deputy"]["actions"]["wipe"]["appliesTo"]["context"] = {"type": "Deputy::Missing"}
    assert impossible_input_tests(sources_of(text), edited(schema, unreadable_wipe)) == []


def test_a_has_on_what_is_not_a_plain_path_is_left_to_cedar(schema: PolicySchema) -> None:
    text = ('forbid (principal, action == Deputy::Action::"run", resource)\n'
            "when { (if context.input.cmd == \"id\" then context.input.env else context.input.env) has X };")
    assert impossible_input_tests(sources_of(text), schema.json_text) == []


def test_context_types_resolution(schema: PolicySchema) -> None:
    types = ContextTypes(json.loads(schema.json_text))
    env = types.resolve("run", ("input", "env"))
    assert isinstance(env, Shape) and env.tags and not env.attributes
    labels = types.resolve("deploy", ("input", "opts", "labels"))
    assert isinstance(labels, Shape) and labels.tags and set(labels.attributes) == {"team"}
    limits = types.resolve("deploy", ("input", "opts", "limits"))
    assert isinstance(limits, Shape) and not limits.tags and set(limits.attributes) == {"cpu", "memory"}
    mode = types.resolve("deploy", ("input", "mode"))
    assert isinstance(mode, Shape) and not mode.attributes  # an enum's entity: no attributes
    assert types.resolve("deploy", ("input", "hosts")) is Unresolved.UNKNOWN  # a set
    assert types.resolve("deploy", ("input", "target")) is Unresolved.UNKNOWN  # a String
    assert types.resolve("deploy", ("input", "target", "x")) is Unresolved.UNKNOWN
    assert types.resolve("deploy", ("input", "nope", "x")) is Unresolved.ABSENT
    assert types.resolve("prompts/get", ("input",)) is Unresolved.ABSENT
    assert types.resolve("tools/call", ("input",)) is Unresolved.ABSENT  # a group: no request is of it
    assert types.resolve("not-an-action", ("input",)) is Unresolved.UNKNOWN


# --- context.user: as before -------------------------------------------------------------------------------------


def test_the_context_user_checks_are_unchanged(tmp_path: Path) -> None:
    schema = build_schema(TOOLS, ("department",))
    problem = refusal(tmp_path, schema, 'forbid (principal, action, resource)\n'
                      'when { context.user.claims has departmnet };\n')
    assert problem.message == ("policy 'rules.cedar#2': context.user.claims has no attribute 'departmnet', "
                               "so `context.user.claims has departmnet` is never true")
    load(tmp_path, schema, 'forbid (principal, action, resource)\n'
         'when { context.user has groups && context.user.claims has department };\n')


def test_has_on_a_prompts_arguments_is_refused_with_the_tag_test_to_write(tmp_path: Path, schema: PolicySchema) -> None:
    """A prompt's arguments are tags too (``PromptArguments``): ``has`` on them is as dead as on a map argument."""
    (tmp_path / "rules.cedar").write_text(
        '@id("no-secret-topic")\nforbid (principal, action == Deputy::Action::"prompts/get", resource)\n'
        'when { context.arguments has topic };\n')
    with pytest.raises(PolicyLoadError) as refused:
        PolicyEngine(tmp_path, schema)
    assert 'context.arguments.hasTag("topic")' in str(refused.value), str(refused.value)
    (tmp_path / "rules.cedar").write_text(
        '@id("no-secret-topic")\nforbid (principal, action == Deputy::Action::"prompts/get", resource)\n'
        'when { context.arguments.hasTag("topic") };\n')
    PolicyEngine(tmp_path, schema)
