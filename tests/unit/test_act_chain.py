"""The ``act`` and ``may_act`` claims (RFC 8693 §4.1, §4.4): building, parsing, matching."""

from __future__ import annotations

from typing import Any

import pytest

from deputy.act_chain import (
    MAX_PARSED_DEPTH,
    Actor,
    MalformedChain,
    act_claim,
    may_act_allows,
    may_act_claim,
    parse_act,
)

ISS = "https://deputy.example.com"
A = Actor("agent-a", "agent-a", ISS)
B = Actor("agent-b", "agent-b", ISS)
C = Actor("agent-c", "agent-c", ISS)


def nested(depth: int) -> dict[str, Any]:
    claim: dict[str, Any] = {"sub": f"actor-{depth - 1}"}
    for index in range(depth - 2, -1, -1):
        claim = {"sub": f"actor-{index}", "act": claim}
    return claim


# --- building and parsing -------------------------------------------------------------------------


def test_chain_round_trips_current_actor_outermost() -> None:
    chain = (C, B, A)  # C acts now, for B, who acted for A
    claim = act_claim(chain)
    assert claim == {"sub": "agent-c", "client_id": "agent-c", "iss": ISS,
                     "act": {"sub": "agent-b", "client_id": "agent-b", "iss": ISS,
                             "act": {"sub": "agent-a", "client_id": "agent-a", "iss": ISS}}}
    assert parse_act(claim) == chain


def test_single_actor_has_no_nested_act() -> None:
    claim = act_claim([A])
    assert claim == {"sub": "agent-a", "client_id": "agent-a", "iss": ISS}
    assert parse_act(claim) == (A,)


def test_no_chain() -> None:
    assert act_claim(()) is None
    assert act_claim(iter(())) is None
    assert parse_act(None) == ()


def test_actor_writes_only_the_claims_it_has() -> None:
    bare = Actor("workload-7")
    assert bare.claim() == {"sub": "workload-7"}
    assert parse_act({"sub": "workload-7"}) == (bare,)
    assert Actor("x", iss=ISS).claim() == {"sub": "x", "iss": ISS}


def test_actor_from_another_issuer_parses_with_its_issuer() -> None:
    claim = {"sub": "agent-b", "client_id": "agent-b", "iss": ISS,
             "act": {"sub": "spiffe://corp/agent", "iss": "https://idp.example.com"}}
    assert parse_act(claim) == (B, Actor("spiffe://corp/agent", None, "https://idp.example.com"))


def test_unknown_members_of_act_are_ignored() -> None:
    assert parse_act({"sub": "agent-a", "client_id": "agent-a", "iss": ISS, "name": "A"}) == (A,)


def test_describe() -> None:
    assert A.describe() == f"agent-a via {ISS}"
    assert Actor("alice-bot", "agent-a", ISS).describe() == f"alice-bot (client agent-a) via {ISS}"
    assert Actor("w").describe() == "w"


def test_deepest_parsed_chain_is_accepted() -> None:
    chain = parse_act(nested(MAX_PARSED_DEPTH))
    assert len(chain) == MAX_PARSED_DEPTH
    assert chain[0].sub == "actor-0"
    assert chain[-1].sub == f"actor-{MAX_PARSED_DEPTH - 1}"


# --- malformed chains -----------------------------------------------------------------------------


@pytest.mark.parametrize("claim", [
    "agent-a",
    ["agent-a"],
    [{"sub": "agent-a"}],
    42,
    True,
    {"sub": "agent-a", "act": "agent-b"},
    {"sub": "agent-a", "act": [{"sub": "agent-b"}]},
], ids=["string", "list of strings", "list of objects", "number", "bool", "nested string", "nested list"])
def test_non_object_act_is_malformed(claim: Any) -> None:
    with pytest.raises(MalformedChain, match="JSON object"):
        parse_act(claim)


@pytest.mark.parametrize("claim", [
    {},
    {"client_id": "agent-a"},
    {"sub": ""},
    {"sub": 7},
    {"sub": None},
    {"sub": ["agent-a"]},
    {"sub": "agent-b", "act": {"client_id": "agent-a"}},
    {"sub": "agent-b", "act": {}},
], ids=["empty", "client_id only", "empty sub", "number sub", "null sub", "list sub", "nested without sub",
        "nested empty"])
def test_actor_without_sub_is_malformed(claim: Any) -> None:
    with pytest.raises(MalformedChain, match="sub"):
        parse_act(claim)


@pytest.mark.parametrize("name", ["exp", "nbf", "aud"])
@pytest.mark.parametrize("level", ["outer", "nested"])
def test_exp_nbf_aud_inside_act_are_malformed(name: str, level: str) -> None:
    inner: dict[str, Any] = {"sub": "agent-a"}
    outer: dict[str, Any] = {"sub": "agent-b", "act": inner}
    (outer if level == "outer" else inner)[name] = 1_900_000_000 if name != "aud" else "https://x.example"
    with pytest.raises(MalformedChain, match="RFC 8693"):
        parse_act(outer)


@pytest.mark.parametrize("claim", [
    {"sub": "agent-a", "client_id": 7},
    {"sub": "agent-a", "iss": ["https://a.example"]},
    {"sub": "agent-b", "act": {"sub": "agent-a", "client_id": {"id": "x"}}},
])
def test_non_string_client_id_or_iss_is_malformed(claim: Any) -> None:
    with pytest.raises(MalformedChain, match="strings"):
        parse_act(claim)


def test_chain_nested_too_deeply_is_malformed() -> None:
    with pytest.raises(MalformedChain, match="too deeply"):
        parse_act(nested(MAX_PARSED_DEPTH + 1))


def test_self_referencing_act_is_malformed_not_endless() -> None:
    """A claim object that contains itself (only possible in memory, never from JSON) still terminates."""
    loop: dict[str, Any] = {"sub": "agent-a"}
    loop["act"] = loop
    with pytest.raises(MalformedChain, match="too deeply"):
        parse_act(loop)


# --- may_act --------------------------------------------------------------------------------------


def test_may_act_claim_names_clients_once_in_order() -> None:
    assert may_act_claim([]) is None
    assert may_act_claim(iter(())) is None
    assert may_act_claim(["agent-a"]) == {"client_id": "agent-a"}
    assert may_act_claim(["agent-b", "agent-a", "agent-b"]) == {"client_id": ["agent-a", "agent-b"]}
    assert may_act_claim(["agent-a", "agent-a"]) == {"client_id": "agent-a"}


def test_may_act_string_member() -> None:
    assert may_act_allows({"client_id": "agent-a"}, A)
    assert not may_act_allows({"client_id": "agent-b"}, A)
    assert may_act_allows({"sub": "agent-a"}, A)  # the RFC 8693 §4.4 shape
    assert not may_act_allows({"sub": "agent-a "}, A)
    assert not may_act_allows({"client_id": "AGENT-A"}, A)


def test_may_act_list_member() -> None:
    may_act = {"client_id": ["agent-a", "agent-b"]}
    assert may_act_allows(may_act, A)
    assert may_act_allows(may_act, B)
    assert not may_act_allows(may_act, C)
    assert not may_act_allows({"client_id": []}, A)


def test_every_member_present_must_match() -> None:
    assert may_act_allows({"sub": "agent-a", "client_id": "agent-a", "iss": ISS}, A)
    assert not may_act_allows({"sub": "agent-a", "iss": "https://other.example"}, A)
    assert not may_act_allows({"client_id": ["agent-a", "agent-b"], "sub": "agent-b"}, A)


def test_member_the_actor_lacks_does_not_match() -> None:
    bare = Actor("agent-a")
    assert not may_act_allows({"client_id": "agent-a"}, bare)
    assert not may_act_allows({"iss": ISS}, bare)
    assert may_act_allows({"sub": "agent-a"}, bare)


@pytest.mark.parametrize("may_act", [
    {"client_id": "agent-a", "scope": "demo:tools"},
    {"email": "a@example.com"},
    {"act": {"sub": "agent-a"}},
], ids=["known and unknown", "unknown only", "nested act"])
def test_may_act_with_a_member_deputy_cannot_check_admits_nobody(may_act: dict[str, Any]) -> None:
    assert not may_act_allows(may_act, A)


@pytest.mark.parametrize("may_act", [
    None, {}, "agent-a", ["agent-a"], {"client_id": None}, {"client_id": 7}, {"client_id": ["agent-a", 7]},
    {"client_id": {"agent-a": True}},
], ids=["none", "empty", "string", "list", "null member", "number member", "list with number", "object member"])
def test_absent_empty_or_malformed_may_act_admits_nobody(may_act: Any) -> None:
    assert not may_act_allows(may_act, A)
