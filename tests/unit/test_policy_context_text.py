"""The request context sent to Cedar as JSON text, its caller part made once per caller (deputy.policy.engine)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deputy.act_chain import Actor
from deputy.gateway.principal import Principal
from deputy.policy import Outcome, PolicyEngine, build_schema
from deputy.policy.engine import COMMON_FIELDS, CommonContexts, common_context, context_text
from deputy.policy.user_attributes import UserAttributes

ALICE = Principal(user="alice", agent="agent-a", scopes=frozenset({"t", "u"}), token_id="tok", server="bank",
                  actors=(Actor("agent-b", "client-b", "https://as.example"), Actor("bob")), txn="txn-1",
                  user_attributes=UserAttributes(idp="https://idp.example", name="Alice \"A\" Ünïcode\n",
                                                 email="a@example.com", groups=frozenset({"ops", "dev"}),
                                                 claims={"dept": "eng", "level": "3"}))
PLAIN = Principal(user="bob", agent="agent-b", scopes=frozenset(), token_id="tok2", server="bank")
CLAIMS = ("dept", "level")


def as_dict(caller: Principal, specific: dict[str, Any], now: int, registration: str = "cli") -> dict[str, Any]:
    """The context as the engine built it as a dict: the request part, then the common context over it."""
    return {**specific, **common_context(caller, registration, now, CLAIMS)}


@pytest.mark.parametrize("caller", [ALICE, PLAIN])
@pytest.mark.parametrize("specific", [
    {"input": {"text": "\"time\": 1, \"scopes\": []", "n": 2**53 - 1, "nested": {"a": [1, {"b": None}]}}},
    {"uri": "file:///etc/passwd"},
    {"name": "p", "arguments": {"k": "v"}},
    {},
])
def test_the_text_is_the_same_context_as_the_dict(caller: Principal, specific: dict[str, Any]) -> None:
    common = CommonContexts().text(caller, "cli", CLAIMS)
    assert json.loads(context_text(common, 1_796_000_000, specific)) == as_dict(caller, specific, 1_796_000_000)


def test_a_request_part_naming_a_common_field_is_merged_as_the_dict_merged_it() -> None:
    common = CommonContexts().text(ALICE, "cli", CLAIMS)
    forged = {"input": {"a": 1}, "scopes": ["admin"], "time": 0, "actor_count": 0}
    text = context_text(common, 7, forged)
    assert json.loads(text) == as_dict(ALICE, forged, 7)
    assert json.loads(text)["scopes"] != ["admin"] and json.loads(text)["time"] == 7
    assert text.count('"scopes"') == 1  # one key, never two that Cedar would have to choose between


def test_the_common_fields_are_every_field_common_context_sets() -> None:
    assert set(common_context(ALICE, "cli", 0, CLAIMS)) <= COMMON_FIELDS


def test_callers_that_differ_in_anything_the_context_holds_never_share_a_text() -> None:
    contexts = CommonContexts()
    base = contexts.text(ALICE, "cli", CLAIMS)
    # UserAttributes' hash leaves out its claims: a caller differing only there must still get its own text.
    others = [replace(ALICE, user_attributes=replace(ALICE.user_attributes, claims={"dept": "sales", "level": "3"})),
              replace(ALICE, scopes=frozenset({"t"})), replace(ALICE, actors=ALICE.actors[:1]),
              replace(ALICE, txn=None), replace(ALICE, agent="agent-z")]
    for other in others:
        assert json.loads(contexts.text(other, "cli", CLAIMS)) == {
            k: v for k, v in common_context(other, "cli", 0, CLAIMS).items() if k != "time"}
        assert contexts.text(other, "cli", CLAIMS) != base
    assert contexts.text(ALICE, "dynamic", CLAIMS) != base  # the agent's registration is part of it
    assert contexts.text(ALICE, "cli", ("dept",)) != base  # so are the claims the schema types
    assert contexts.text(replace(ALICE, token_id="other", user="carol"), "cli", CLAIMS) == base  # not in the context


def test_unhashable_callers_are_served_unkept_and_the_kept_texts_are_bounded() -> None:
    class Loose:  # a Caller of plain (mutable) values
        user, agent, server, txn, actors = "eve", "agent-e", "bank", None, ()
        scopes = ["t"]
        user_attributes = ALICE.user_attributes

    contexts = CommonContexts(kept=3)
    loose = Loose()
    assert json.loads(contexts.text(loose, "cli", CLAIMS))["scopes"] == ["t"]  # type: ignore[arg-type]
    loose.scopes = ["t", "u"]
    assert json.loads(contexts.text(loose, "cli", CLAIMS))["scopes"] == ["t", "u"]  # type: ignore[arg-type]
    for index in range(10):
        contexts.text(replace(PLAIN, agent=f"agent-{index}"), "cli", CLAIMS)
        assert len(contexts._texts) <= 3


def test_decisions_read_the_context_sent_as_text(tmp_path: Path) -> None:
    (tmp_path / "main.cedar").write_text("""
@id("ops-in-time") permit (principal, action == Deputy::Action::"echo", resource)
when { context.user.groups.contains("ops") && context.time > 100 && context.input.text == "hi"
       && context.actor_count == 2 && context has txn && context.txn == "txn-1" && context.scopes.contains("u") };
@id("ops-list") permit (principal, action == Deputy::Action::"tools/list", resource)
when { context.user.groups.contains("ops") && context.name == "echo" };
""")
    engine = PolicyEngine(tmp_path, build_schema([{"name": "echo", "inputSchema": {
        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}]))
    assert engine.decide(ALICE, "tools/call", "echo", {"text": "hi"}, now=101).outcome is Outcome.ALLOW
    assert engine.decide(ALICE, "tools/call", "echo", {"text": "hi"}, now=100).outcome is Outcome.DENY
    assert engine.decide(ALICE, "tools/call", "echo", {"text": "ho"}, now=101).outcome is Outcome.DENY
    assert engine.decide(replace(ALICE, txn=None), "tools/call", "echo", {"text": "hi"}, now=101).outcome \
        is Outcome.DENY
    listed = engine.decide_each(ALICE, "tools/list", ["echo", "other"], now=101)
    assert [d.outcome for d in listed] == [Outcome.ALLOW, Outcome.DENY]
