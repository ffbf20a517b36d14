"""Who decides a held call, on both backends, with users made as sign-in makes them (``upsert_federated``).

Mallory signs in at ``corp`` first with ``preferred_username`` "Bob!" and is ``bob@corp``; Bob, after her, is
``bob-2@corp`` (:mod:`deputy.storage.federated_users`). Whatever list of usernames an operator might have written,
the label decides nothing: a federated approver is a member of one of her provider's ``approver_groups`` or one of
its ``approver_subjects``, matched against her stored (issuer, ``sub``) (OpenID Connect Core 1.0 §2, §5.7).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from deputy.config_approvals import ApprovalSettings, approval_settings
from deputy.storage.approvals import Approval, ApprovalRefused, ApprovalRepository, Status
from deputy.storage.db import Database
from deputy.storage.users import User, UserRepository
from tests.integration.conftest import unique

ONCALL = "security-oncall"


@pytest.fixture
def users(db: Database) -> UserRepository:
    return UserRepository(db.engine)


@pytest.fixture
def issuers() -> dict[str, str]:
    """Two providers of this test's own (the module's database is shared): corp and partner."""
    return {"corp": f"https://{unique('corp')}.example", "partner": f"https://{unique('partner')}.example"}


def settings(issuers: dict[str, str], **approvals: object) -> ApprovalSettings:
    """``[approvals]`` as the configuration reads it, the providers being ``issuers``."""
    return approval_settings({"approvals": approvals}, issuers)


async def signed_in(users: UserRepository, idp: str, issuer: str, subject: str, hint: str,
                    groups: tuple[str, ...] = ()) -> User:
    return await users.upsert_federated(idp, issuer, subject, hint, None, hint, list(groups), {})


async def held(repo: ApprovalRepository, requester: str, *, self_approval: bool = False,
               user_id: int = 4242) -> Approval:
    return await repo.create(server="demo", tool="delete_user", arguments={"id": user_id}, user_id=requester,
                             agent="agent-1", actors=[{"sub": "agent-1"}], self_approval=self_approval)


async def refused(repo: ApprovalRepository, approval: Approval, user: User) -> str:
    with pytest.raises(ApprovalRefused) as info:
        await repo.approve(approval.approval_id, user)
    still = await repo.get(approval.approval_id)
    assert still is not None and still.status is Status.PENDING
    return info.value.reason


async def squatted(users: UserRepository, issuer: str) -> tuple[User, User]:
    """(mallory, bob): mallory signed in first as "Bob!" and took the label ``bob``."""
    label = unique("bob")
    mallory = await signed_in(users, "corp", issuer, unique("mallory-sub"), label.capitalize() + "!")
    bob = await signed_in(users, "corp", issuer, unique("bob-sub"), label, (ONCALL,))
    assert (mallory.username, bob.username) == (f"{label}@corp", f"{label}-2@corp")
    return mallory, bob


# --- abuse -------------------------------------------------------------------------------------------------------

async def test_the_squatter_of_a_listed_label_without_the_group_is_refused(db: Database, users: UserRepository,
                                                                          issuers: dict[str, str]) -> None:
    """Even were ``approvers`` to name her label (the configuration refuses that), she is not an approver."""
    mallory, bob = await squatted(users, issuers["corp"])
    configured = settings(issuers, approver_groups={"corp": [ONCALL]})
    repo = ApprovalRepository(db.engine, replace(configured, approvers=(mallory.username,)))
    approval = await held(repo, unique("alice"))
    for decide in (repo.approve, repo.deny):
        with pytest.raises(ApprovalRefused) as info:
            await decide(approval.approval_id, mallory)
        assert info.value.reason == "not_approver"
    approved = await repo.approve(approval.approval_id, bob)
    assert approved.status is Status.APPROVED and approved.decided_by == bob.user_id


async def test_a_group_at_one_provider_does_not_count_for_another(db: Database, users: UserRepository,
                                                                  issuers: dict[str, str]) -> None:
    repo = ApprovalRepository(db.engine, settings(issuers, approver_groups={"partner": [ONCALL]}))
    at_corp = await signed_in(users, "corp", issuers["corp"], unique("sub"), unique("oncall"), (ONCALL,))
    approval = await held(repo, unique("alice"))
    assert await refused(repo, approval, at_corp) == "not_approver"
    at_partner = await signed_in(users, "partner", issuers["partner"], unique("sub"), unique("oncall"), (ONCALL,))
    assert (await repo.approve(approval.approval_id, at_partner)).status is Status.APPROVED


async def test_a_sub_of_one_provider_does_not_count_for_another(db: Database, users: UserRepository,
                                                                issuers: dict[str, str]) -> None:
    """Sub values are unique within their issuer only (Core §2): ``00u1`` at partner is someone else."""
    sub = unique("00u1")
    repo = ApprovalRepository(db.engine, settings(issuers, approver_subjects={"corp": [sub]}))
    elsewhere = await signed_in(users, "partner", issuers["partner"], sub, "bob")
    approval = await held(repo, unique("alice"))
    assert await refused(repo, approval, elsewhere) == "not_approver"


async def test_a_group_as_the_provider_last_stated_it_decides(db: Database, users: UserRepository,
                                                              issuers: dict[str, str]) -> None:
    """Groups are refreshed at each sign-in: one who left the group is refused from her next sign-in on."""
    repo = ApprovalRepository(db.engine, settings(issuers, approver_groups={"corp": [ONCALL]}))
    sub, hint = unique("sub"), unique("oncall")
    member = await signed_in(users, "corp", issuers["corp"], sub, hint, (ONCALL,))
    first = await held(repo, unique("alice"))
    assert (await repo.approve(first.approval_id, member)).status is Status.APPROVED
    left = await signed_in(users, "corp", issuers["corp"], sub, hint, ("staff",))
    assert left.user_id == member.user_id
    second = await held(repo, unique("alice"))
    assert await refused(repo, second, left) == "not_approver"


async def test_the_requester_cannot_decide_her_own_call_unless_self_approval(db: Database, users: UserRepository,
                                                                            issuers: dict[str, str]) -> None:
    repo = ApprovalRepository(db.engine, settings(issuers, approver_groups={"corp": [ONCALL]}))
    member = await signed_in(users, "corp", issuers["corp"], unique("sub"), unique("oncall"), (ONCALL,))
    own = await held(repo, member.user_id)
    assert await refused(repo, own, member) == "own_request"
    allowed = await held(repo, member.user_id, self_approval=True, user_id=4343)  # another call: its own approval
    assert (await repo.approve(allowed.approval_id, member)).decided_by == member.user_id


# --- who may ------------------------------------------------------------------------------------------------------

async def test_a_user_with_a_configured_sub_approves(db: Database, users: UserRepository,
                                                     issuers: dict[str, str]) -> None:
    mallory, bob = await squatted(users, issuers["corp"])
    assert bob.subject is not None and bob.issuer == issuers["corp"]  # read back from the users table
    repo = ApprovalRepository(db.engine, settings(issuers, approver_subjects={"corp": [bob.subject]}))
    approval = await held(repo, unique("alice"))
    assert await refused(repo, approval, mallory) == "not_approver"
    assert (await repo.deny(approval.approval_id, bob)).status is Status.DENIED


async def test_a_local_user_named_in_approvers_approves(db: Database, users: UserRepository,
                                                        issuers: dict[str, str]) -> None:
    """Naming federated approvers leaves local ones to ``approvers``; a local user not named there is refused."""
    named, other = await users.add(unique("bob"), "pw"), await users.add(unique("carol"), "pw")
    repo = ApprovalRepository(db.engine, settings(issuers, approvers=[named.username],
                                                  approver_groups={"corp": [ONCALL]}))
    approval = await held(repo, unique("alice"))
    assert await refused(repo, approval, other) == "not_approver"
    stored = await users.get(named.user_id)
    assert stored is not None and (stored.issuer, stored.subject) == (None, None)
    assert (await repo.approve(approval.approval_id, stored)).status is Status.APPROVED
