"""The user's attributes in tokens and in Cedar (issue 14, item 4): minted, verified, bounded, typed, validated.

Abuse first: a token whose user claims were changed fails its signature; a token Deputy signed with malformed
attributes is refused; attributes beyond the bounds get no token (never cut); a policy naming an attribute the
schema lacks (a typo, an unconfigured claim, an optional claim read without ``has``) is refused at load.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt

from deputy.gateway.principal import Principal
from deputy.keys import ALGORITHM, KeyRing
from deputy.oauth.access_tokens import AccessTokenValidator, InvalidToken, mint_access_token
from deputy.policy import Outcome, PolicyEngine, PolicyLoadError, build_schema
from deputy.policy.user_attributes import (
    MAX_BYTES,
    MAX_GROUPS,
    NO_USER,
    AttributesRefused,
    UserAttributes,
    cedar_value,
    checked,
    claim_value,
    from_token_claims,
    token_claims,
)

ISSUER = "https://deputy.example.com"
RESOURCE = "https://deputy.example.com/mcp/bank"
TOOLS: list[dict[str, Any]] = [{"name": "pay", "inputSchema": {"type": "object", "properties": {
    "amount": {"type": "integer"}}, "required": ["amount"]}}]
ALICE = UserAttributes(idp="corp", name="Alice", email="alice@example.com", groups=frozenset({"finance", "staff"}),
                       claims={"department": "treasury"})

FINANCE_ONLY = """
@id("finance-pays")
permit (principal, action == Deputy::Action::"pay", resource) when { context.user.groups.contains("finance") };

@id("no-engineers")
forbid (principal, action == Deputy::Action::"pay", resource) when { context.user.groups.contains("engineering") };
"""


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.open(tmp_path_factory.mktemp("keys") / "keys", 3600)


def validator(ring: KeyRing) -> AccessTokenValidator:
    return AccessTokenValidator(ring, ISSUER, 30, lambda _grant: False)


def mint(ring: KeyRing, user: UserAttributes | None) -> str:
    token, _ = mint_access_token(ring, issuer=ISSUER, subject="u-1", client_id="agent", audience=RESOURCE,
                                 scope="s", ttl=300, grant_id="g-1", auth_time=int(time.time()), user=user)
    return token


def engine(tmp_path: Path, text: str, claims: tuple[str, ...] = ()) -> PolicyEngine:
    (tmp_path / "main.cedar").write_text(text)
    return PolicyEngine(tmp_path, build_schema(TOOLS, claims))


def caller(user: UserAttributes) -> Principal:
    return Principal(user="u-1", agent="agent", scopes=frozenset(), token_id="t", server="bank", user_attributes=user)


# --- abuse: the token ---------------------------------------------------------------------------------------------

def test_groups_changed_in_a_signed_token_fail_its_signature(ring: KeyRing) -> None:
    header, payload, signature = mint(ring, UserAttributes(idp="corp", groups=frozenset({"staff"}))).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["staff", "admins"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="signature"):
        validator(ring).validate(f"{header}.{forged}.{signature}", RESOURCE)


@pytest.mark.parametrize("bad", [
    {"deputy_user": "corp"},
    {"deputy_user": {"idp": 7}},
    {"deputy_user": {"idp": "corp", "claims": {"level": 3}}},
    {"deputy_user": {"idp": "corp"}, "groups": "admins"},
    {"deputy_user": {"idp": "corp"}, "groups": [["admins"]]},
    {"deputy_user": {"idp": "corp"}, "email": ["a@b"]},
    {"deputy_user": {"idp": "corp"}, "groups": [f"g{i}" for i in range(MAX_GROUPS + 1)]},
])
def test_malformed_attributes_in_a_signed_token_are_refused(ring: KeyRing, bad: dict[str, Any]) -> None:
    raw = dict(validator(ring).verify(mint(ring, None)).raw)
    with pytest.raises(ValueError):
        from_token_claims({**raw, **bad})
    signed = jwt.encode({"alg": ALGORITHM, "typ": "at+jwt", "kid": ring.signing_key.kid}, {**raw, **bad},
                        ring.signing_key, algorithms=[ALGORITHM])
    with pytest.raises(InvalidToken, match="user attributes"):
        validator(ring).validate(signed, RESOURCE)


def test_too_many_groups_or_bytes_get_no_token_rather_than_a_cut_list() -> None:
    with pytest.raises(AttributesRefused):
        checked(UserAttributes(idp="corp", groups=frozenset(f"g{i}" for i in range(MAX_GROUPS + 1))))
    with pytest.raises(AttributesRefused):
        checked(UserAttributes(idp="corp", groups=frozenset({"x" * 257})))
    many = frozenset(f"{i:03d}-" + "g" * 60 for i in range(MAX_BYTES // 60))
    assert len(many) <= MAX_GROUPS
    with pytest.raises(AttributesRefused, match="bytes"):
        checked(UserAttributes(idp="corp", groups=many))
    assert checked(ALICE) is ALICE


def test_a_list_valued_claim_cannot_be_one_string() -> None:
    assert (claim_value("a", "x"), claim_value("b", True), claim_value("c", 42)) == ("x", "true", "42")
    with pytest.raises(AttributesRefused):
        claim_value("d", ["x", "y"])


# --- the token round trip -----------------------------------------------------------------------------------------

def test_attributes_round_trip_in_registered_and_private_claims(ring: KeyRing) -> None:
    claims = validator(ring).validate(mint(ring, ALICE), RESOURCE)
    assert claims.user == ALICE
    assert claims.raw["groups"] == ["finance", "staff"] and claims.raw["email"] == "alice@example.com"
    assert claims.raw["deputy_user"] == {"idp": "corp", "claims": {"department": "treasury"}}
    assert token_claims(UserAttributes(idp="local", name="bob"))["groups"] == []  # always present for a user


def test_a_token_without_a_user_has_no_attributes(ring: KeyRing) -> None:
    claims = validator(ring).validate(mint(ring, None), RESOURCE)
    assert claims.user is NO_USER and "groups" not in claims.raw


# --- Cedar: validation at load ------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", [
    'context.user.grups.contains("finance")',  # a typo
    'context.user.groups == "finance"',  # a set is not a string
    'context.user.claims.department == "treasury"',  # not a configured claim
    'context.user.department == "treasury"',  # claims sit under context.user.claims
])
def test_a_policy_the_schema_does_not_type_is_refused_at_load(tmp_path: Path, condition: str) -> None:
    with pytest.raises(PolicyLoadError):
        engine(tmp_path, f'permit (principal, action == Deputy::Action::"pay", resource) when {{ {condition} }};')


@pytest.mark.parametrize("condition", [
    'context.user has grups && context.user.grups.contains("finance")',
    'context.user.claims has departmnet && context.user.claims.departmnet == "treasury"',
    'context.user.claims has "level"',  # not a configured claim
    'context["user"] has email_address',
])
def test_a_has_test_that_can_never_be_true_is_refused_at_load(tmp_path: Path, condition: str) -> None:
    """Cedar's validator types these as false and lets them through; a forbid with one would never forbid."""
    with pytest.raises(PolicyLoadError, match="is never true"):
        engine(tmp_path, f'forbid (principal, action, resource) when {{ {condition} }};\n'
                         'permit (principal, action, resource);', ("department",))


def test_has_tests_the_schema_allows_load(tmp_path: Path) -> None:
    engine(tmp_path, 'forbid (principal, action, resource) when { context has user && context.user has groups && '
                     'context.user.claims has department && context.user.claims.department == "x" };\n'
                     'permit (principal, action == Deputy::Action::"pay", resource) when { context.input has amount };',
           ("department",))


def test_a_configured_claim_is_optional_and_must_be_tested_with_has(tmp_path: Path) -> None:
    unguarded = 'permit (principal, action, resource) when { context.user.claims.department == "treasury" };'
    with pytest.raises(PolicyLoadError):
        engine(tmp_path, unguarded, ("department",))
    guarded = ('permit (principal, action, resource) when { context.user.claims has department && '
               'context.user.claims.department == "treasury" && context.user.email like "*@example.com" && '
               'context.user.idp == "corp" && context.user.name == "Alice" };')
    decide = engine(tmp_path, guarded, ("department",)).decide
    assert decide(caller(ALICE), "tools/call", "pay", {"amount": 1}).allowed
    assert not decide(caller(UserAttributes(idp="corp")), "tools/call", "pay", {"amount": 1}).allowed


def test_groups_decide(tmp_path: Path) -> None:
    decide = engine(tmp_path, FINANCE_ONLY).decide
    assert decide(caller(ALICE), "tools/call", "pay", {"amount": 1}).allowed
    both = UserAttributes(idp="corp", groups=frozenset({"finance", "engineering"}))
    assert decide(caller(both), "tools/call", "pay", {"amount": 1}).determining == ("no-engineers",)
    for nobody in (UserAttributes(idp="local", name="alice"), NO_USER):  # local users: no groups, still typed
        assert decide(caller(nobody), "tools/call", "pay", {"amount": 1}).outcome is Outcome.DENY


def test_only_the_configured_claims_reach_cedar() -> None:
    assert cedar_value(ALICE, ())["claims"] == {}
    assert cedar_value(ALICE, ("department", "level"))["claims"] == {"department": "treasury"}
