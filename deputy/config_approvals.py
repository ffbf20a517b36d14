"""``[approvals]``: how long a held call's approval lives, and who may give one.

Who may decide is named three ways, and a federated user is never named by her username:

- ``approvers``: local usernames (Deputy's own password users);
- ``approver_groups = { IDP = ["GROUP", …] }``: a user who signs in through the identity provider named ``IDP``
  (``[[identity_providers]] name``) and whose groups, as it stated them at her last sign-in, hold one of these;
- ``approver_subjects = { IDP = ["SUB", …] }``: the user of that provider with one of these ``sub`` values.

All three empty: any user may decide (never the requesting one, unless the policy said ``@approval("self")``).

**Why not a federated user's username.** Hers is a label, ``LABEL@IDP``, taken from ``preferred_username`` or the
e-mail by whoever signs in with it first (:mod:`deputy.storage.federated_users`): those claims are not unique and
no claim but ``sub`` may serve as a key (OpenID Connect Core 1.0 §5.7). Mallory, signing in first as "Bob!", is
``bob@corp``; Bob is then ``bob-2@corp``. A federated user is the pair (issuer, ``sub``), ``sub`` unique and never
reassigned within its issuer (Core §2), so ``approver_subjects`` is matched against exactly that pair (the
provider's configured issuer and the user's stored one must be equal, and so must her ``source`` and the
provider's name), and ``approver_groups`` against the groups of a user of that same issuer. An ``approvers`` entry
with ``@`` is refused at start-up, saying which of the two to write instead.

Its own module, below :mod:`deputy.config`, because storage applies it (:class:`deputy.storage.approvals.
ApprovalRepository`) and storage does not import the configuration; :mod:`deputy.config` reads the table into it
with :func:`approval_settings`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from deputy.config_values import ConfigError, Table, at, check_known, close_key, read_int, read_strings, read_table

APPROVALS = Table(frozenset({"ttl", "approvers", "approver_groups", "approver_subjects"}))
MAX_LISTED = 64  # groups or subjects of one provider
MAX_GROUP = 256  # the longest group a stored profile holds (deputy.storage.federated_users.MAX_GROUP)
MAX_SUBJECT = 255  # OpenID Connect Core 1.0 §2: sub is at most 255 characters


class Approver(Protocol):
    """What deciding looks at in a user (:class:`deputy.storage.users.User` is one)."""

    @property
    def username(self) -> str: ...
    @property
    def is_local(self) -> bool: ...
    @property
    def source(self) -> str: ...
    @property
    def issuer(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def groups(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class ProviderApprovers:
    """Who of one identity provider's users may decide: its ``approver_groups`` and ``approver_subjects``."""

    issuer: str  # the provider's Issuer Identifier: a user's stored issuer must be exactly it
    groups: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    """``[approvals]``: how long a held call's approval lives, and who may give one (the module says why a
    federated user is named by her provider's groups or her ``sub``, never by her username)."""

    ttl: int = 15 * 60  # seconds from the call being held: to be decided and then used
    approvers: tuple[str, ...] = ()  # local usernames, never one with "@"
    providers: Mapping[str, ProviderApprovers] = field(default_factory=dict)  # by [[identity_providers]] name

    @property
    def anyone(self) -> bool:
        """Nobody is named in any of the three keys: any user may decide."""
        return not self.approvers and not any(p.groups or p.subjects for p in self.providers.values())

    def may_decide(self, user: Approver) -> bool:
        """Whether ``user`` is one of the approvers (whether this is her own call is the approval's to say).

        A local user by her username; a federated one by (source, issuer) and then her ``sub`` (OpenID Connect
        Core 1.0 §2) or her groups; never a federated user by her username (§5.7: it is a first-come label)."""
        if self.anyone:
            return True
        if user.is_local:
            return user.username in self.approvers
        named = self.providers.get(user.source)
        if named is None or user.issuer is None or user.issuer != named.issuer or not user.subject:
            return False
        return user.subject in named.subjects or not named.groups.isdisjoint(user.groups)


def approval_settings(raw: Mapping[str, Any], issuers: Mapping[str, str]) -> ApprovalSettings:
    """``[approvals]``; ``issuers`` maps each configured ``[[identity_providers]]`` name to its issuer."""
    table = read_table(raw, "approvals", "")
    check_known(table, "approvals", APPROVALS.keys)
    approvers = read_strings(table, "approvers", "approvals", what="local usernames")
    for index, name in enumerate(approvers):
        if "@" in name:
            raise ConfigError(at("approvals.approvers", index), _federated_name_problem(name, issuers))
    groups = _per_provider(table, "approver_groups", issuers, "group names", MAX_GROUP)
    subjects = _per_provider(table, "approver_subjects", issuers, "sub values", MAX_SUBJECT)
    providers = {name: ProviderApprovers(issuers[name], frozenset(groups.get(name, ())),
                                         frozenset(subjects.get(name, ())))
                 for name in (*groups, *subjects)}
    return ApprovalSettings(ttl=read_int(table, "ttl", "approvals", 15 * 60, 30, 7 * 24 * 3600, digits=True),
                            approvers=approvers, providers=providers)


def _federated_name_problem(name: str, issuers: Mapping[str, str]) -> str:
    """Why a name with ``@`` is refused, and what to write instead (the provider's own name when it is one)."""
    idp = name.rpartition("@")[2]
    idp = idp if idp in issuers else "IDP"
    return ("names a federated user by her username, which is a first-come label (LABEL@IDP, from "
            "preferred_username or the e-mail of whoever signed in with it first; OpenID Connect Core 1.0 §5.7), "
            "not an identity; approvers are local usernames only. Name federated approvers by their provider's "
            f'groups, approver_groups = {{ {idp} = ["GROUP"] }}, or by their sub, '
            f'approver_subjects = {{ {idp} = ["SUB"] }}')


def _per_provider(table: Mapping[str, Any], key: str, issuers: Mapping[str, str], what: str,
                  longest: int) -> dict[str, tuple[str, ...]]:
    """``key = { IDP = ["…", …] }``: each IDP a configured provider, each list non-empty, each entry printable."""
    where = at("approvals", key)
    per = read_table(table, key, "approvals")
    found: dict[str, tuple[str, ...]] = {}
    for idp in per:
        if idp not in issuers:
            meant = close_key(idp, issuers) if issuers else None
            raise ConfigError(at(where, idp), "names no [[identity_providers]] entry" +
                              (f"; did you mean {meant}?" if meant else
                               f" (configured: {', '.join(sorted(issuers)) or 'none'})"))
        values = read_strings(per, idp, where, non_empty=True, what=what)
        for index, value in enumerate(values):
            if len(value) > longest or any(unicodedata.category(c)[0] == "C" for c in value):
                raise ConfigError(at(at(where, idp), index), f"must be printable, at most {longest} characters")
        if len(values) > MAX_LISTED:
            raise ConfigError(at(where, idp), f"at most {MAX_LISTED} {what}")
        found[idp] = tuple(dict.fromkeys(values))
    return found
