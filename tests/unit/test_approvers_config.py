"""Who may decide a held call: ``[approvals] approvers``, ``approver_groups`` and ``approver_subjects``.

A federated user's username is a first-come label (``bob@corp`` is whoever signed in as "Bob!" first,
:mod:`deputy.storage.federated_users`), so it never names an approver: OpenID Connect names a user by (issuer,
``sub``) alone (Core 1.0 §2, §5.7). Abuse first: a federated username in ``approvers`` stops start-up saying what to
write instead; the two tables name only configured providers and hold only non-empty lists of printable strings;
a federated user is never matched by her username, a group or ``sub`` of one provider never counts for another,
nor for the same name re-pointed at another issuer. Then what a good table reads as.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deputy.config_approvals import ApprovalSettings, ProviderApprovers, approval_settings
from deputy.storage.users import User
from tests.support.config_files import config_error, load, offline_config

CORP = "https://login.corp.example"
PARTNER = "https://login.partner.example"


def provider(name: str, issuer: str) -> str:
    return (f'[[identity_providers]]\nname = "{name}"\nissuer = "{issuer}"\nclient_id = "deputy"\n'
            'client_secret = "s"\n')


PROVIDERS = provider("corp", CORP) + provider("partner", PARTNER)


def approvals_error(tmp_path: Path, approvals: str, providers: str = PROVIDERS) -> tuple[str, str]:
    """(key, problem) of the error loading ``[approvals]`` with these lines, after ``providers``."""
    error = config_error(tmp_path, offline_config(tmp_path, providers + "[approvals]\n" + approvals).read_text())
    return error.key, error.problem


def federated(idp: str, issuer: str, subject: str, username: str, groups: tuple[str, ...] = ()) -> User:
    return User(f"id-{subject}", username, source=idp, groups=groups, issuer=issuer, subject=subject)


GROUPS_AT_CORP = ApprovalSettings(providers={"corp": ProviderApprovers(CORP, frozenset({"security-oncall"}))})


# --- abuse: a federated username is no approver ------------------------------------------------------------------

def test_a_federated_username_in_approvers_stops_start_up_naming_the_two_keys(tmp_path: Path) -> None:
    """Mallory, who signed in first as "Bob!", is ``bob@corp``: the entry would make her an approver."""
    key, problem = approvals_error(tmp_path, 'approvers = ["alice", "bob@corp"]\n')
    assert key == "approvals.approvers[1]"
    assert "first-come label" in problem and "not an identity" in problem and "§5.7" in problem
    assert 'approver_groups = { corp = ["GROUP"] }' in problem
    assert 'approver_subjects = { corp = ["SUB"] }' in problem


def test_any_name_with_an_at_sign_is_refused_even_without_providers(tmp_path: Path) -> None:
    key, problem = approvals_error(tmp_path, 'approvers = ["carol@elsewhere"]\n', providers="")
    assert key == "approvals.approvers[0]"
    assert 'approver_groups = { IDP = ["GROUP"] }' in problem  # no provider of that name to suggest


def test_a_federated_user_is_never_matched_by_her_username() -> None:
    """Even settings built around the loader: the squatter's label, or a label with no ``@``, is no approver."""
    by_names = ApprovalSettings(approvers=("bob@corp", "bob"),
                                providers={"corp": ProviderApprovers(CORP, frozenset({"security-oncall"}))})
    assert not by_names.may_decide(federated("corp", CORP, "mallory-sub", "bob@corp"))
    assert not by_names.may_decide(federated("corp", CORP, "mallory-sub", "bob"))
    assert by_names.may_decide(User("id-bob", "bob"))  # the local bob


# --- abuse: the tables name configured providers only -------------------------------------------------------------

@pytest.mark.parametrize("key", ["approver_groups", "approver_subjects"])
def test_an_unknown_provider_is_refused(tmp_path: Path, key: str) -> None:
    assert approvals_error(tmp_path, f'{key} = {{ crop = ["x"] }}\n') == (
        f"approvals.{key}.crop", "names no [[identity_providers]] entry; did you mean corp?")
    assert approvals_error(tmp_path, f'{key} = {{ elsewhere = ["x"] }}\n') == (
        f"approvals.{key}.elsewhere", "names no [[identity_providers]] entry (configured: corp, partner)")
    assert approvals_error(tmp_path, f'{key} = {{ corp = ["x"] }}\n', providers="") == (
        f"approvals.{key}.corp", "names no [[identity_providers]] entry (configured: none)")


@pytest.mark.parametrize("key", ["approver_groups", "approver_subjects"])
@pytest.mark.parametrize(("value", "path"), [
    ('["corp"]', ""),  # not a table
    ('"corp"', ""),
    ("{ corp = \"security-oncall\" }", ".corp"),  # not a list
    ("{ corp = [] }", ".corp"),  # empty: it would read as "any user"
    ('{ corp = ["ok", 3] }', ".corp[1]"),
    ('{ corp = ["ok", ""] }', ".corp[1]"),
    ('{ corp = ["line\\nbreak"] }', ".corp[0]"),
    ('{ corp = ["\\u202egroup"] }', ".corp[0]"),  # a bidi override
    (f'{{ corp = ["{"x" * 257}"] }}', ".corp[0]"),
    ("{ corp = [" + ", ".join(f'"g{n}"' for n in range(65)) + "] }", ".corp"),
])
def test_a_badly_typed_table_is_refused(tmp_path: Path, key: str, value: str, path: str) -> None:
    assert approvals_error(tmp_path, f"{key} = {value}\n")[0] == f"approvals.{key}{path}"


def test_a_sub_longer_than_255_characters_is_refused(tmp_path: Path) -> None:
    """OpenID Connect Core 1.0 §2: no ``sub`` exceeds 255 characters, so such an entry could never match."""
    assert approvals_error(tmp_path, f'approver_subjects = {{ corp = ["{"s" * 256}"] }}\n')[0] == \
        "approvals.approver_subjects.corp[0]"


# --- abuse: one provider's words never count for another ----------------------------------------------------------

def test_a_group_of_one_provider_does_not_count_for_another() -> None:
    assert GROUPS_AT_CORP.may_decide(federated("corp", CORP, "s1", "oncall@corp", ("security-oncall",)))
    assert not GROUPS_AT_CORP.may_decide(federated("partner", PARTNER, "s1", "oncall@partner", ("security-oncall",)))


def test_a_provider_name_re_pointed_at_another_issuer_does_not_carry_its_users() -> None:
    """A user stored under an issuer ``corp`` no longer has is not that provider's user: (issuer, sub) decides."""
    assert not GROUPS_AT_CORP.may_decide(federated("corp", PARTNER, "s1", "oncall@corp", ("security-oncall",)))
    by_sub = ApprovalSettings(providers={"corp": ProviderApprovers(CORP, subjects=frozenset({"s1"}))})
    assert by_sub.may_decide(federated("corp", CORP, "s1", "bob-2@corp"))
    assert not by_sub.may_decide(federated("corp", PARTNER, "s1", "bob-2@corp"))
    assert not by_sub.may_decide(federated("partner", CORP, "s1", "bob-2@partner"))
    assert not by_sub.may_decide(federated("corp", CORP, "S1", "bob-2@corp"))  # sub is case sensitive (Core §2)


def test_naming_only_federated_approvers_leaves_out_local_users() -> None:
    """Empty means any user only when all three are empty."""
    assert not GROUPS_AT_CORP.anyone
    assert not GROUPS_AT_CORP.may_decide(User("id-carol", "carol"))
    assert ApprovalSettings().may_decide(User("id-carol", "carol"))
    assert ApprovalSettings().may_decide(federated("corp", CORP, "s9", "anyone@corp"))


# --- what a good table reads as ----------------------------------------------------------------------------------

def test_the_three_keys_read_as_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, offline_config(tmp_path, PROVIDERS + '''
[approvals]
ttl = 60
approvers = ["bob"]
approver_groups = { corp = ["security-oncall", "security-oncall", "sre"] }

[approvals.approver_subjects]
corp = ["00u1a2b3c4"]
partner = ["p-77"]
''').read_text())
    approvals = settings.approvals
    assert approvals.ttl == 60 and approvals.approvers == ("bob",)
    assert approvals.providers == {
        "corp": ProviderApprovers(CORP, frozenset({"security-oncall", "sre"}), frozenset({"00u1a2b3c4"})),
        "partner": ProviderApprovers(PARTNER, frozenset(), frozenset({"p-77"})),
    }


def test_without_the_keys_any_user_decides() -> None:
    settings = approval_settings({}, {"corp": CORP})
    assert settings.anyone and settings.providers == {} and settings.approvers == ()
