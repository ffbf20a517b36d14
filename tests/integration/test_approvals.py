"""Approvals on both backends: bound to the exact call, decided by someone else, used once, expiring."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import update

from deputy.clock import now
from deputy.config import ApprovalSettings
from deputy.storage.approvals import (
    Approval,
    ApprovalRefused,
    ApprovalRepository,
    Status,
    call_hash,
    chain_hash,
)
from deputy.storage.db import Database
from deputy.storage.tables import approvals as approvals_table
from deputy.storage.users import User
from tests.integration.conftest import unique

bob = User("bob", "bob")
carol = User("carol", "carol")
ONE_HOP = [{"sub": "agent-1"}]  # the chain `held` records for agent-1


@pytest.fixture
def repo(db: Database) -> ApprovalRepository:
    return ApprovalRepository(db.engine)


async def held(repo: ApprovalRepository, arguments: Any = None, *, user: str | None = None,
               agent: str = "agent-1") -> Approval:
    return await repo.create(server="demo", tool="delete_user",
                             arguments=arguments if arguments is not None else {"id": 4242, "reason": "left"},
                             user_id=user or unique("alice"), agent=agent, actors=[{"sub": agent}],
                             decision_id="d" * 32)


async def expire(db: Database, approval_id: str) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(update(approvals_table).where(approvals_table.c.approval_id == approval_id)
                           .values(expires_at=now() - 1))


def test_call_hash_is_canonical() -> None:
    """Key order and number spelling do not matter (RFC 8785); the server, tool and every argument do."""
    base = call_hash("demo", "delete_user", {"id": 4242, "reason": "left"})
    assert len(base) == 64 and int(base, 16) >= 0
    assert call_hash("demo", "delete_user", {"reason": "left", "id": 4242.0}) == base
    assert call_hash("demo", "delete_user", {"id": 4243, "reason": "left"}) != base
    assert call_hash("demo", "delete_user", {"id": 4242, "reason": "left", "extra": None}) != base
    assert call_hash("other", "delete_user", {"id": 4242, "reason": "left"}) != base
    assert call_hash("demo", "remove_user", {"id": 4242, "reason": "left"}) != base


def test_call_hash_holds_integers_beyond_2_53_exactly() -> None:
    """An integer the audit log holds as digits is hashed exactly; neither its neighbour nor its digits as a
    string (which a client could send to reuse the approval of another call) hash the same."""
    big = 2**53 + 1
    base = call_hash("demo", "delete_user", {"id": big})
    assert call_hash("demo", "delete_user", {"id": big}) == base
    assert call_hash("demo", "delete_user", {"id": big - 1}) != base
    assert call_hash("demo", "delete_user", {"id": str(big)}) != base
    assert call_hash("demo", "delete_user", {"id": [big]}) != call_hash("demo", "delete_user", {"id": [str(big)]})


async def test_held_approved_used_once(repo: ApprovalRepository) -> None:
    approval = await held(repo)
    assert re.fullmatch("[0-9a-f]{32}", approval.approval_id)  # url-safe, and never read as a CLI option
    assert approval.status is Status.PENDING
    assert approval.expires_at - approval.created_at == ApprovalSettings().ttl
    assert approval.arguments == {"id": 4242, "reason": "left"}
    assert approval.actors == [{"sub": "agent-1"}]
    digest = approval.call_hash
    assert digest == call_hash("demo", "delete_user", {"id": 4242, "reason": "left"})
    assert await repo.consume(digest, approval.user_id, "agent-1", ONE_HOP) is None  # pending: no use
    approved = await repo.approve(approval.approval_id, bob)
    assert approved.status is Status.APPROVED and approved.decided_by == "bob" and approved.decided_at is not None
    assert await repo.consume(digest, approval.user_id, "agent-2", ONE_HOP) is None  # another agent
    assert await repo.consume(digest, "mallory", "agent-1", ONE_HOP) is None  # another user
    assert await repo.consume(digest, approval.user_id, "agent-1", ONE_HOP) == approval.approval_id
    assert await repo.consume(digest, approval.user_id, "agent-1", ONE_HOP) is None  # replay
    used = await repo.get(approval.approval_id)
    assert used is not None and used.status is Status.USED and used.used_at is not None


async def test_a_retry_reuses_the_live_approval(repo: ApprovalRepository) -> None:
    first = await held(repo)
    again = await held(repo, user=first.user_id)
    assert again.approval_id == first.approval_id
    other_arguments = await held(repo, {"id": 4243, "reason": "left"}, user=first.user_id)
    assert other_arguments.approval_id != first.approval_id
    other_agent = await held(repo, user=first.user_id, agent="agent-2")
    assert other_agent.approval_id != first.approval_id
    await repo.approve(first.approval_id, bob)
    assert (await held(repo, user=first.user_id)).approval_id == first.approval_id  # approved, not yet used
    assert await repo.consume(first.call_hash, first.user_id, "agent-1", ONE_HOP) == first.approval_id
    after_use = await held(repo, user=first.user_id)
    assert after_use.approval_id != first.approval_id and after_use.status is Status.PENDING


async def test_the_requesting_user_cannot_decide(repo: ApprovalRepository) -> None:
    approval = await held(repo)
    for decide in (repo.approve, repo.deny):
        with pytest.raises(ApprovalRefused) as refused:
            await decide(approval.approval_id, User(approval.user_id, "alice"))
        assert refused.value.reason == "own_request"
    still = await repo.get(approval.approval_id)
    assert still is not None and still.status is Status.PENDING


async def test_self_approval_only_when_policy_said_so(repo: ApprovalRepository) -> None:
    """@approval("self") lets the requesting user decide; the approval records it, so nothing else can."""
    own = await repo.create(server="demo", tool="delete_user", arguments={"id": 4242}, user_id=unique("alice"),
                            agent="agent-1", self_approval=True)
    assert own.self_approval is True
    approved = await repo.approve(own.approval_id, User(own.user_id, "alice"))
    assert approved.status is Status.APPROVED and approved.decided_by == own.user_id


async def test_only_configured_approvers_decide(db: Database) -> None:
    strict = ApprovalRepository(db.engine, ApprovalSettings(approvers=("carol",)))
    approval = await held(strict)
    with pytest.raises(ApprovalRefused) as refused:
        await strict.approve(approval.approval_id, bob)
    assert refused.value.reason == "not_approver"
    assert (await strict.get(approval.approval_id)).status is Status.PENDING  # type: ignore[union-attr]
    assert (await strict.approve(approval.approval_id, carol)).status is Status.APPROVED


async def test_ttl_comes_from_settings(db: Database) -> None:
    short = ApprovalRepository(db.engine, ApprovalSettings(ttl=45))
    approval = await held(short)
    assert approval.expires_at - approval.created_at == 45


async def test_denied_is_final_and_never_used(repo: ApprovalRepository) -> None:
    approval = await held(repo)
    denied = await repo.deny(approval.approval_id, bob)
    assert denied.status is Status.DENIED
    with pytest.raises(ApprovalRefused) as refused:
        await repo.approve(approval.approval_id, carol)
    assert refused.value.reason == "decided"
    assert await repo.consume(approval.call_hash, approval.user_id, "agent-1", ONE_HOP) is None
    assert (await held(repo, user=approval.user_id)).approval_id != approval.approval_id


async def test_unknown_approval(repo: ApprovalRepository) -> None:
    with pytest.raises(ApprovalRefused) as refused:
        await repo.approve("no-such-approval", bob)
    assert refused.value.reason == "unknown"
    assert await repo.get("no-such-approval") is None


async def test_expired_cannot_be_decided(db: Database, repo: ApprovalRepository) -> None:
    approval = await held(repo)
    await expire(db, approval.approval_id)
    with pytest.raises(ApprovalRefused) as refused:
        await repo.approve(approval.approval_id, bob)
    assert refused.value.reason == "expired"
    read = await repo.get(approval.approval_id)
    assert read is not None and read.status is Status.EXPIRED
    assert approval.approval_id in {a.approval_id for a in await repo.list(Status.EXPIRED)}
    assert approval.approval_id not in {a.approval_id for a in await repo.list(Status.PENDING)}
    assert (await held(repo, user=approval.user_id)).approval_id != approval.approval_id


async def test_expired_after_approval_cannot_be_used(db: Database, repo: ApprovalRepository) -> None:
    approval = await held(repo)
    await repo.approve(approval.approval_id, bob)
    await expire(db, approval.approval_id)
    assert await repo.consume(approval.call_hash, approval.user_id, "agent-1", ONE_HOP) is None
    read = await repo.get(approval.approval_id)
    assert read is not None and read.status is Status.EXPIRED and read.used_at is None


async def test_list_by_status(repo: ApprovalRepository) -> None:
    pending = await held(repo)
    approved = await held(repo)
    await repo.approve(approved.approval_id, bob)
    pending_ids = {a.approval_id for a in await repo.list(Status.PENDING)}
    approved_ids = {a.approval_id for a in await repo.list(Status.APPROVED)}
    all_ids = {a.approval_id for a in await repo.list()}
    assert pending.approval_id in pending_ids and pending.approval_id not in approved_ids
    assert approved.approval_id in approved_ids and approved.approval_id not in pending_ids
    assert {pending.approval_id, approved.approval_id} <= all_ids


async def test_racing_consumers_get_one_use(url: str, repo: ApprovalRepository) -> None:
    """Eight consumers on two engines (two replicas) race for one approved call: exactly one wins."""
    other = Database(url)
    try:
        replica = ApprovalRepository(other.engine)
        for _ in range(3):
            approval = await held(repo)
            await repo.approve(approval.approval_id, bob)
            results = await asyncio.gather(*(
                (repo if n % 2 else replica).consume(approval.call_hash, approval.user_id, "agent-1", ONE_HOP)
                for n in range(8)))
            assert results.count(approval.approval_id) == 1, results
            assert results.count(None) == 7, results
    finally:
        await other.dispose()


async def test_an_approval_is_bound_to_the_whole_actor_chain(repo: ApprovalRepository) -> None:
    """Issue 11 finding 8: approved for the chain A→B (current actor first), usable by that chain only — not by
    C→B, A alone, B→A, a longer chain, or no chain — for the same user, agent and call."""
    user = unique("alice")
    a_then_b = [{"sub": user, "client_id": "agent-b"}, {"sub": user, "client_id": "agent-a"}]
    c_then_b = [{"sub": user, "client_id": "agent-b"}, {"sub": user, "client_id": "agent-c"}]
    approval = await repo.create(server="demo", tool="delete_user", arguments={"id": 4242, "reason": "chain"},
                                 user_id=user, agent="agent-b", actors=a_then_b)
    assert approval.chain_hash == chain_hash(a_then_b) != chain_hash(c_then_b)
    # Another chain asking for the same call gets its own approval, not this one.
    other = await repo.create(server="demo", tool="delete_user", arguments={"id": 4242, "reason": "chain"},
                              user_id=user, agent="agent-b", actors=c_then_b)
    assert other.approval_id != approval.approval_id
    await repo.approve(approval.approval_id, bob)
    digest = approval.call_hash
    for chain in (c_then_b, a_then_b[:1], a_then_b[::-1], [*a_then_b, {"sub": user}], [], None):
        assert await repo.consume(digest, user, "agent-b", chain) is None, chain
    assert await repo.consume(digest, user, "agent-b", a_then_b) == approval.approval_id
