"""The policy engine: decisions, annotations, fail-closed rules, loading, errors located, reload."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from deputy.act_chain import Actor
from deputy.gateway.principal import Principal
from deputy.policy import Outcome, PolicyEngine, PolicyLoadError, build_schema, load_policies
from deputy.policy.schema import ACTION_TYPE, SERVER_TYPE, USER_TYPE

TOOLS: list[dict[str, Any]] = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                                     "required": ["text"]}},
    {"name": "transfer", "inputSchema": {"type": "object", "required": ["amount", "target"], "properties": {
        "amount": {"type": "integer"},
        "target": {"type": "object", "required": ["account"], "properties": {
            "account": {"type": "string"},
            "bank": {"type": "object", "properties": {"country": {"type": "string"}}},
        }},
    }}},
]

BASE = """
@id("echo-for-tools")
permit (principal, action == Deputy::Action::"echo", resource) when { context.scopes.contains("t") };

@id("transfer-for-tools")
permit (principal, action == Deputy::Action::"transfer", resource) when { context.scopes.contains("t") };

@id("no-transfers-abroad")
forbid (principal, action == Deputy::Action::"transfer", resource)
when { context.input.target has bank && context.input.target.bank has country
       && context.input.target.bank.country != "CH" };

@id("short-chains")
forbid (principal, action, resource) when { context.actor_count > 2 };
"""


def caller(scopes: set[str] | None = None, actors: tuple[Actor, ...] = ()) -> Principal:
    return Principal(user="alice", agent="agent-a", scopes=frozenset({"t"} if scopes is None else scopes),
                     token_id="tok", server="bank", actors=actors, txn="txn-1")


def engine_with(tmp_path: Path, text: str = BASE, tools: list[dict[str, Any]] = TOOLS) -> PolicyEngine:
    (tmp_path / "main.cedar").write_text(text)
    return PolicyEngine(tmp_path, build_schema(tools))


def test_a_permit_allows_and_names_its_policy(tmp_path: Path) -> None:
    decision = engine_with(tmp_path).decide(caller(), "tools/call", "echo", {"text": "hi"})
    assert decision.outcome is Outcome.ALLOW and decision.allowed
    assert decision.determining == ("echo-for-tools",)
    assert decision.action == "echo" and decision.server == "bank" and decision.errors == ()


def test_without_a_permit_it_is_denied_with_no_determining_policy(tmp_path: Path) -> None:
    decision = engine_with(tmp_path).decide(caller(scopes=set()), "tools/call", "echo", {"text": "hi"})
    assert decision.outcome is Outcome.DENY and not decision.allowed
    assert decision.determining == ()


def test_forbid_on_a_nested_argument(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    home = {"amount": 5, "target": {"account": "1", "bank": {"country": "CH"}}}
    abroad = {"amount": 5, "target": {"account": "1", "bank": {"country": "FR"}}}
    assert engine.decide(caller(), "tools/call", "transfer", home).allowed
    denied = engine.decide(caller(), "tools/call", "transfer", abroad)
    assert denied.outcome is Outcome.DENY
    assert denied.determining == ("no-transfers-abroad",)


def test_forbid_on_the_actor_chain(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    two = (Actor("b", "b"), Actor("a", "a", "https://issuer"))
    three = (Actor("c", "c"), *two)
    assert engine.decide(caller(actors=two), "tools/call", "echo", {"text": "x"}).allowed
    denied = engine.decide(caller(actors=three), "tools/call", "echo", {"text": "x"})
    assert denied.outcome is Outcome.DENY and denied.determining == ("short-chains",)


def test_the_chain_keeps_its_order(tmp_path: Path) -> None:
    text = BASE + """
@id("first-hop-must-be-a")
forbid (principal, action, resource)
when { context.actor_count > 0 && !context.actors.contains({index: 1, sub: "a", client_id: "a", iss: ""}) };
"""
    engine = engine_with(tmp_path, text)
    good = (Actor("b", "b"), Actor("a", "a"))
    assert engine.decide(caller(actors=good), "tools/call", "echo", {"text": "x"}).allowed
    swapped = engine.decide(caller(actors=good[::-1]), "tools/call", "echo", {"text": "x"})
    assert swapped.determining == ("first-hop-must-be-a",)


DEPUTY = "https://deputy.example"


def test_actor_client_ids_name_only_the_clients_deputy_vouches_for(tmp_path: Path) -> None:
    """An outside issuer's token exchanged in keeps its hops, relabelled with that issuer: its client
    "trusted-agent" is not Deputy's "trusted-agent", and must not pass a rule meant for Deputy's."""
    text = """
@id("only-via-trusted-agent")
permit (principal, action == Deputy::Action::"echo", resource)
when { context.actor_client_ids.contains("trusted-agent") };
"""
    engine = engine_with(tmp_path, text)

    def decided(*actors: Actor) -> bool:
        principal = Principal(user="alice", agent="agent-a", scopes=frozenset(), token_id="tok", server="bank",
                              actors=actors, issuer=DEPUTY)
        return engine.decide(principal, "tools/call", "echo", {"text": "x"}).allowed

    assert decided(Actor("agent-a", "agent-a", DEPUTY), Actor("t", "trusted-agent", DEPUTY))
    assert decided(Actor("t", "trusted-agent"))  # a hop without iss: only Deputy ever wrote one
    assert not decided(Actor("agent-a", "agent-a", DEPUTY), Actor("t", "trusted-agent", "https://idp.example"))
    assert not decided(Actor("t", "trusted-agent", DEPUTY + "/"))  # issuers compare exactly


def test_an_unknown_tool_is_denied(tmp_path: Path) -> None:
    decision = engine_with(tmp_path, "permit (principal, action, resource);").decide(
        caller(), "tools/call", "format_disk", {})
    assert decision.outcome is Outcome.DENY
    assert "format_disk" in decision.errors[0]


def test_an_unknown_method_is_denied(tmp_path: Path) -> None:
    decision = engine_with(tmp_path, "permit (principal, action, resource);").decide(
        caller(), "sampling/createMessage", "x")
    assert decision.outcome is Outcome.DENY and decision.errors


OVERFLOW = """
@id("everyone")
permit (principal, action, resource);

@id("no-big-sums")
forbid (principal, action == Deputy::Action::"transfer", resource) when { context.input.amount * 1000 > 5000000 };
"""


def test_an_evaluation_error_is_a_deny_where_cedar_itself_would_allow(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, OVERFLOW)
    arguments = {"amount": 2**62, "target": {"account": "1"}}
    # Cedar skips the forbid whose condition overflows and answers Allow ...
    loaded = engine.loaded
    request = {"principal": {"type": USER_TYPE, "id": "alice"}, "action": {"type": ACTION_TYPE, "id": "transfer"},
               "resource": {"type": SERVER_TYPE, "id": "bank"},
               "context": {"input": arguments, "scopes": [], "agent": {"client_id": "a", "registration": "x"},
                           "actors": [], "actor_count": 0, "actor_client_ids": [], "time": 0,
                               "user": {"name": "", "email": "", "groups": [], "idp": "", "claims": {}}}}
    raw = cedarpy.is_authorized(request, loaded.policy_set, [], schema=loaded.schema.handle)
    assert raw.allowed and raw.diagnostics.errors
    # ... Deputy denies, and names the policy that failed.
    decision = engine.decide(caller(), "tools/call", "transfer", arguments)
    assert decision.outcome is Outcome.DENY
    assert decision.determining == ("no-big-sums",)
    assert "overflow" in decision.errors[0]
    assert engine.decide(caller(), "tools/call", "transfer", {"amount": 3, "target": {"account": "1"}}).allowed


@pytest.mark.parametrize("arguments", [
    {"amount": 2.5, "target": {"account": "1"}},               # float where the schema says Long
    {"amount": 2.0, "target": {"account": "1"}},               # even an integral float: never truncated
    {"amount": "5", "target": {"account": "1"}},
    {"amount": 5},                                             # missing required argument
    {"amount": 5, "target": {"account": "1"}, "memo": "x"},    # an argument no policy could see
    {"amount": 5, "target": {"account": "1", "bank": {"country": 7}}},
    {"amount": 2**63, "target": {"account": "1"}},
    "not an object",
])
def test_arguments_that_do_not_fit_the_schema_are_denied(tmp_path: Path, arguments: Any) -> None:
    decision = engine_with(tmp_path, "permit (principal, action, resource);").decide(
        caller(), "tools/call", "transfer", arguments)
    assert decision.outcome is Outcome.DENY
    assert decision.errors and decision.errors[0].startswith("arguments_invalid: ")


STEP_UP = """
@id("read")
permit (principal, action == Deputy::Action::"echo", resource);

@id("admin-transfer")
@requires_scope("bank:admin bank:write")
permit (principal, action == Deputy::Action::"transfer", resource);

@id("writer-transfer")
@requires_scope("bank:write")
@approval("required")
permit (principal, action == Deputy::Action::"transfer", resource);
"""


def test_step_up_names_the_fewest_missing_scopes(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, STEP_UP)
    arguments = {"amount": 1, "target": {"account": "1"}}
    decision = engine.decide(caller(scopes=set()), "tools/call", "transfer", arguments)
    assert decision.outcome is Outcome.STEP_UP and not decision.allowed
    assert decision.required_scopes == ("bank:write",)
    assert set(decision.determining) == {"admin-transfer", "writer-transfer"}


def test_approval_is_required_unless_presented_and_a_plain_permit_wins(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, STEP_UP)
    arguments = {"amount": 1, "target": {"account": "1"}}
    writer = engine.decide(caller(scopes={"bank:write"}), "tools/call", "transfer", arguments)
    assert writer.outcome is Outcome.APPROVAL_REQUIRED and writer.approval_required
    assert writer.determining == ("writer-transfer",)
    approved = engine.decide(caller(scopes={"bank:write"}), "tools/call", "transfer", arguments, approved=True)
    assert approved.outcome is Outcome.ALLOW and approved.approval_required
    admin = engine.decide(caller(scopes={"bank:write", "bank:admin"}), "tools/call", "transfer", arguments)
    assert admin.outcome is Outcome.ALLOW and not admin.approval_required
    assert admin.determining == ("admin-transfer",)


def test_a_forbid_beats_step_up(tmp_path: Path) -> None:
    text = STEP_UP + '@id("frozen") forbid (principal, action == Deputy::Action::"transfer", resource);'
    decision = engine_with(tmp_path, text).decide(caller(scopes=set()), "tools/call", "transfer",
                                                  {"amount": 1, "target": {"account": "1"}})
    assert decision.outcome is Outcome.DENY and decision.determining == ("frozen",)
    assert decision.required_scopes == ()


def test_a_denial_carries_what_the_jsonrpc_error_needs(tmp_path: Path) -> None:
    decision = engine_with(tmp_path, STEP_UP).decide(caller(scopes=set()), "tools/call", "transfer",
                                                     {"amount": 1, "target": {"account": "1"}})
    data = decision.error_data()
    assert data["decision_id"] == decision.decision_id and len(decision.decision_id) == 32
    assert data["outcome"] == "step_up" and data["required_scopes"] == ["bank:write"]
    assert sorted(data["policies"]) == ["admin-transfer", "writer-transfer"]


def test_policies_without_id_are_named_by_file_and_position(tmp_path: Path) -> None:
    (tmp_path / "a.cedar").write_text('@id("named") permit (principal, action == Deputy::Action::"echo", resource);')
    (tmp_path / "b.cedar").write_text("// two unnamed\nforbid (principal, action, resource) when { false };\n"
                                      'permit (principal, action == Deputy::Action::"transfer", resource);\n')
    engine = PolicyEngine(tmp_path, build_schema(TOOLS))
    assert list(engine.loaded.sources) == ["named", "b.cedar#1", "b.cedar#2"]
    second = engine.loaded.sources["b.cedar#2"]
    assert (second.file, second.line, second.column) == ("b.cedar", 3, 1)
    decision = engine.decide(caller(), "tools/call", "transfer", {"amount": 1, "target": {"account": "1"}})
    assert decision.determining == ("b.cedar#2",)


def test_list_time_decisions_ignore_argument_rules(tmp_path: Path) -> None:
    text = BASE + '@id("list") permit (principal, action == Deputy::Action::"tools/list", resource)' \
                  ' when { context.name != "transfer" || context.scopes.contains("t") };'
    engine = engine_with(tmp_path, text)
    shown = engine.decide_each(caller(), "tools/list", ["echo", "transfer"])
    assert [d.outcome for d in shown] == [Outcome.ALLOW, Outcome.ALLOW]
    hidden = engine.decide_each(caller(scopes=set()), "tools/list", ["echo", "transfer"])
    assert [d.outcome for d in hidden] == [Outcome.ALLOW, Outcome.DENY]


def test_invalid_policy_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "ok.cedar").write_text('permit (principal, action == Deputy::Action::"echo", resource);\n')
    (tmp_path / "typo.cedar").write_text('// line 1\n\n@id("t")\n'
                                         'permit (principal, action == Deputy::Action::"transfer", resource)\n'
                                         "  when { context.input.amout > 3 };\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path, build_schema(TOOLS))
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == ("typo.cedar", 5)
    assert problem.column == len("  when { context.input.") + 1
    assert str(problem).startswith("typo.cedar:5:24: policy 't'")


def test_a_syntax_error_points_at_the_bad_token(tmp_path: Path) -> None:
    (tmp_path / "bad.cedar").write_text('permit (principal, action, resource)\n  when { context.scopes == "a;b" + };\n')
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path, build_schema(TOOLS))
    problem = caught.value.problems[0]
    assert (problem.line, problem.column) == (2, len('  when { context.scopes == "a;b" + ') + 1)


@pytest.mark.parametrize("text", [
    '@aproval("required") permit (principal, action, resource);',
    '@approval("required") forbid (principal, action, resource);',
    '@approval("maybe") permit (principal, action, resource);',
    '@requires_scope("") permit (principal, action, resource);',
    '@id("x") permit (principal, action, resource);\n@id("x") permit (principal, action, resource);',
    "permit (principal == ?principal, action, resource);",
])
def test_annotations_and_ids_are_checked(tmp_path: Path, text: str) -> None:
    (tmp_path / "p.cedar").write_text(text)
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path, build_schema(TOOLS))
    assert caught.value.problems[0].file == "p.cedar" and caught.value.problems[0].line >= 1


def test_reload_keeps_the_old_set_when_the_new_one_is_invalid(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_with(tmp_path)
    before = engine.version
    (tmp_path / "main.cedar").write_text(BASE + "forbid (principal, action, resource) when { context.nope };")
    with caplog.at_level(logging.ERROR, logger="deputy.policy.engine"):
        result = engine.reload()
    assert not result.applied and result.error is not None and result.version == before
    assert result.error.problems[0].file == "main.cedar"
    assert "REFUSED" in caplog.text
    assert engine.version == before
    assert engine.decide(caller(), "tools/call", "echo", {"text": "x"}).allowed


def test_version_follows_content_and_a_valid_reload_applies(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    first = engine.version
    assert engine.reload().version == first  # same files, same version
    (tmp_path / "main.cedar").write_text(BASE.replace('contains("t") };', 'contains("u") };', 1))
    result = engine.reload()
    assert result.applied and result.version != first
    decision = engine.decide(caller(), "tools/call", "echo", {"text": "x"})
    assert decision.outcome is Outcome.DENY and decision.policy_version == result.version
    (tmp_path / "renamed.cedar").write_text((tmp_path / "main.cedar").read_text())
    (tmp_path / "main.cedar").unlink()
    assert engine.reload().version != result.version  # the file name is part of the version


def test_a_new_schema_that_breaks_a_policy_is_refused(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    schema_before = engine.loaded.schema.version
    result = engine.use_schema(build_schema(TOOLS[:1]))  # "transfer" disappeared upstream
    assert not result.applied
    assert engine.loaded.schema.version == schema_before
    assert engine.decide(caller(), "tools/call", "transfer", {"amount": 1, "target": {"account": "1"}}).allowed


def test_a_missing_directory_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError):
        load_policies(tmp_path / "absent", build_schema(TOOLS))
