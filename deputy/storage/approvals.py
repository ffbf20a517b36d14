"""Human approvals bound to one exact call, a user, an agent and an actor chain; each used at most once.

A call is identified by :func:`call_hash`: the hex SHA-256 of the canonical JSON (RFC 8785)
of ``{"server", "tool", "arguments"}`` — the same call, however its JSON was spelled,
has the same hash; any change to an argument gives another. Who makes it is the user, the
agent and the whole ordered delegation chain (RFC 8693 §4.1 ``act``, current actor first),
identified by :func:`chain_hash`: an approval given to a call that came through agents A→B is
not usable by the same user and agent through another chain (C→B), nor without one. An approval moves
``pending`` → ``approved`` | ``denied`` before it expires, decided by an approver
(:meth:`~deputy.config_approvals.ApprovalSettings.may_decide`: a local user named in ``[approvals] approvers``,
a federated one by her provider's groups or her ``sub``, or any user when none is named) other than the requesting
user — unless the policy that held the call said ``@approval("self")`` — and
``approved`` → ``used`` (by :meth:`ApprovalRepository.consume`, one conditional UPDATE,
so two gateways racing on the same approval grant one use).
A pending or approved approval past ``expires_at`` reads as ``expired``; it can no
longer be decided or used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.canonical_json import canonical_json
from deputy.clock import now
from deputy.config_approvals import ApprovalSettings
from deputy.exact_json import big_integers_as_digits
from deputy.storage.tables import approvals
from deputy.storage.users import User


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    USED = "used"
    EXPIRED = "expired"


_LIVE = (Status.PENDING, Status.APPROVED)


def call_hash(server: str, tool: str, arguments: Any) -> str:
    """The hex SHA-256 of the RFC 8785 canonical JSON of the call, its arguments exact (:mod:`deputy.exact_json`)."""
    representable, big_integers = big_integers_as_digits(arguments)
    call = {"server": server, "tool": tool, "arguments": representable, "big_integers": big_integers}
    return hashlib.sha256(canonical_json(call)).hexdigest()


def chain_hash(actors: Sequence[Any] | None) -> str:
    """The hex SHA-256 of the RFC 8785 canonical JSON of the ordered actor chain (``[]`` without delegation)."""
    return hashlib.sha256(canonical_json(list(actors or []))).hexdigest()


@dataclass(frozen=True, slots=True)
class Approval:
    approval_id: str
    server: str
    tool: str
    call_hash: str
    arguments: Any
    user_id: str
    agent: str
    actors: list[Any] | None
    chain_hash: str | None  # None: written before chains were bound (migration 0009); usable by none
    decision_id: str | None
    self_approval: bool
    status: Status  # as of reading: pending or approved past expires_at reads as expired
    created_at: int
    expires_at: int
    decided_by: str | None
    decided_at: int | None
    used_at: int | None


class ApprovalRefused(ValueError):
    """An approval that cannot be decided; ``reason`` is ``unknown``, ``expired``, ``own_request``, ``decided``
    or ``not_approver`` (the user is not among those ``[approvals]`` names)."""

    def __init__(self, reason: str, approval: Approval | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.approval = approval


def _approval(row: Any, at: int) -> Approval:
    status = Status(row.status)
    if status in _LIVE and row.expires_at < at:
        status = Status.EXPIRED
    return Approval(row.approval_id, row.server, row.tool, row.call_hash, row.arguments, row.user_id, row.agent,
                    row.actors, row.chain_hash, row.decision_id, row.self_approval, status, row.created_at,
                    row.expires_at, row.decided_by, row.decided_at, row.used_at)


class ApprovalRepository:
    def __init__(self, engine: AsyncEngine, settings: ApprovalSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or ApprovalSettings()

    async def create(self, *, server: str, tool: str, arguments: Any, user_id: str, agent: str,
                     actors: list[Any] | None = None, decision_id: str | None = None,
                     self_approval: bool = False) -> Approval:
        """A new pending approval for the call made through ``actors`` (current actor first), or the live
        (pending or approved, unexpired) one it already has. A pending one takes ``self_approval`` from the decision
        made now: a policy changed from ``@approval("self")`` to ``"required"`` stops self-approval of the calls
        already waiting too. One the requester approved herself, which the decision made now no longer allows
        (:meth:`consume` does not use it), is not answered again: a new one is asked for."""
        digest = call_hash(server, tool, arguments)
        chain = chain_hash(actors)
        at = now()
        async with self.engine.begin() as conn:
            existing = (await conn.execute(select(approvals).where(and_(
                approvals.c.call_hash == digest, approvals.c.user_id == user_id, approvals.c.agent == agent,
                approvals.c.chain_hash == chain, approvals.c.status.in_([s.value for s in _LIVE]),
                approvals.c.expires_at >= at,
            )).order_by(approvals.c.created_at.desc()).limit(1))).first()
            if existing is not None and existing.status == Status.PENDING.value:
                if bool(existing.self_approval) != self_approval:
                    await conn.execute(update(approvals).where(approvals.c.approval_id == existing.approval_id)
                                       .values(self_approval=self_approval))
                return dataclasses.replace(_approval(existing, at), self_approval=self_approval)
            if existing is not None and (self_approval or existing.decided_by != user_id):
                return _approval(existing, at)  # approved, and usable by the decision made now
            values: dict[str, Any] = {
                "approval_id": secrets.token_hex(16),  # hex: never read as a CLI option
                "server": server, "tool": tool, "call_hash": digest,
                "arguments": arguments, "user_id": user_id, "agent": agent, "actors": actors, "chain_hash": chain,
                "decision_id": decision_id, "self_approval": self_approval, "status": Status.PENDING.value,
                "created_at": at,
                "expires_at": at + self.settings.ttl, "decided_by": None, "decided_at": None, "used_at": None}
            await conn.execute(approvals.insert().values(**values))
        return Approval(**{**values, "status": Status.PENDING})

    async def get(self, approval_id: str) -> Approval | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(approvals).where(approvals.c.approval_id == approval_id))).first()
        return _approval(row, now()) if row is not None else None

    async def list(self, status: Status | None = None) -> list[Approval]:
        """All approvals, newest first; with ``status``, only those that read as it (expiry included)."""
        at = now()
        query = select(approvals).order_by(approvals.c.created_at.desc(), approvals.c.approval_id)
        if status is Status.EXPIRED:
            query = query.where(and_(approvals.c.status.in_([s.value for s in _LIVE]), approvals.c.expires_at < at))
        elif status in _LIVE:
            query = query.where(and_(approvals.c.status == str(status), approvals.c.expires_at >= at))
        elif status is not None:
            query = query.where(approvals.c.status == str(status))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_approval(row, at) for row in rows]

    async def count_pending(self) -> int:
        """How many approvals read as pending now (undecided, unexpired): the metrics' gauge."""
        query = select(func.count()).select_from(approvals).where(and_(
            approvals.c.status == Status.PENDING.value, approvals.c.expires_at >= now()))
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def approve(self, approval_id: str, approver: User) -> Approval:
        """Approve a pending, unexpired approval; ``approver`` must not be the requesting user
        unless the approval allows self-approval."""
        return await self._decide(approval_id, approver, Status.APPROVED)

    async def deny(self, approval_id: str, approver: User) -> Approval:
        """Deny a pending, unexpired approval; ``approver`` must not be the requesting user
        unless the approval allows self-approval."""
        return await self._decide(approval_id, approver, Status.DENIED)

    async def _decide(self, approval_id: str, user: User, status: Status) -> Approval:
        if not self.settings.may_decide(user):  # by identity: a federated user's username is a label
            raise ApprovalRefused("not_approver", await self.get(approval_id))
        approver = user.user_id
        at = now()
        async with self.engine.begin() as conn:
            result = await conn.execute(update(approvals).where(and_(
                approvals.c.approval_id == approval_id, approvals.c.status == Status.PENDING.value,
                approvals.c.expires_at >= at, or_(approvals.c.user_id != approver, approvals.c.self_approval),
            )).values(status=status.value, decided_by=approver, decided_at=at))
            row = (await conn.execute(select(approvals).where(approvals.c.approval_id == approval_id))).first()
        if row is None:
            raise ApprovalRefused("unknown")
        approval = _approval(row, at)
        if result.rowcount == 1:
            return approval
        if approval.status is Status.EXPIRED:
            raise ApprovalRefused("expired", approval)
        if approval.status is Status.PENDING and approval.user_id == approver and not approval.self_approval:
            raise ApprovalRefused("own_request", approval)
        raise ApprovalRefused("decided", approval)

    async def consume(self, digest: str, user_id: str, agent: str,
                      actors: Sequence[Any] | None = None, *, self_approval: bool = False) -> str | None:
        """Use one approved, unexpired approval of the call for this user, agent and actor chain (``actors``,
        current actor first; None or empty: a call made without delegation): its id, or None. Unless the decision
        made now allows ``self_approval``, one the requester approved herself is not used (it was given under a
        policy that allowed it, and that policy has changed).

        One conditional UPDATE: of two callers racing (in one process or two), one gets the use.
        """
        at = now()
        live = and_(approvals.c.call_hash == digest, approvals.c.user_id == user_id, approvals.c.agent == agent,
                    approvals.c.chain_hash == chain_hash(actors), approvals.c.status == Status.APPROVED.value,
                    approvals.c.expires_at >= at)
        if not self_approval:
            live = and_(live, approvals.c.decided_by != user_id)
        one = select(approvals.c.approval_id).where(live).order_by(approvals.c.created_at).limit(1).scalar_subquery()
        async with self.engine.begin() as conn:
            used = (await conn.execute(update(approvals).where(and_(approvals.c.approval_id == one, live))
                                       .values(status=Status.USED.value, used_at=at)
                                       .returning(approvals.c.approval_id))).first()
        return used.approval_id if used is not None else None
