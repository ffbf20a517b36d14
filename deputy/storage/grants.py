"""Grants (token families), authorization codes, refresh tokens and revocations.

A *grant* is what one consent-backed authorization produced: its code, every
access token (which carries the grant id as ``sid``) and the chain of refresh
tokens. Single-use handles are consumed by one conditional UPDATE, so a replay —
even racing on another replica — finds nothing to consume, and then revokes the
whole grant: OAuth 2.1 §4.1.3 (a reused code) and §4.3.1 / RFC 9700 §4.14.2
(refresh token reuse detection).

Loading a handle is apart from consuming it (``load_code`` / ``consume_code``,
``load_refresh_token`` / ``use_refresh_token``): the token endpoint writes the
audit record of the token it is about to issue *between* the two (write-ahead),
so an audit log that cannot be written leaves the code or refresh token usable
instead of used up with nothing issued. One transaction could not hold both: the
audit log commits through its own writer (group commit), and SQLite has one writer.

Revocations reach every replica through the ``revocations`` table, read from a
horizon that is correct under any commit order (:mod:`deputy.storage.revocations`).

A token obtained by exchange (RFC 8693) gets a grant of its own that depends on the
subject token's grant and the actor token's; revoking either revokes it and what was
exchanged from it (:mod:`deputy.storage.exchanged_grants`): withdrawing Alice's consent,
or an agent's own token, ends every token derived from it.

A grant or token is created only for a client active in the creating transaction, which holds
its row; withdrawing a client changes that row and revokes all its grants in one transaction
(:mod:`deputy.storage.clients` says why no interleaving leaves a live grant of a withdrawn client); disabling
a user revokes hers the same way (:mod:`deputy.storage.user_status`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.clock import now
from deputy.handles import handle_hash, new_handle
from deputy.storage.clients import Client, withdraw
from deputy.storage.db import one_writer
from deputy.storage.exchanged_grants import chunks, insert_derived, revoke_derived
from deputy.storage.refusals import ClientChanged as ClientChanged
from deputy.storage.refusals import ClientNotActive as ClientNotActive
from deputy.storage.refusals import HandleRefused as HandleRefused
from deputy.storage.refusals import require_active as _require_active
from deputy.storage.revocations import Revocation, revocations_after, revocations_since
from deputy.storage.tables import authorization_codes, grants, refresh_tokens, revocations
from deputy.storage.user_status import hold_if_enabled, mark_disabled


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    client_id: str
    user_id: str
    resource: str
    scope: str
    auth_time: int
    revoked_at: int | None = None
    parent_grant_id: str | None = None  # the subject token's grant, for a grant made by token exchange
    actor_grant_id: str | None = None  # the actor token's grant, for a grant made by token exchange


@dataclass(frozen=True, slots=True)
class RefreshTokenState:
    """A refresh token as stored: its grant, when it expires, and whether it was used (rotated)."""

    grant: Grant
    expires_at: int
    used_at: int | None

    def is_usable(self, at: int) -> bool:
        return self.used_at is None and self.expires_at >= at and self.grant.revoked_at is None


@dataclass(frozen=True, slots=True)
class RedeemedCode:
    grant: Grant
    redirect_uri: str
    code_challenge: str


Revoked = list[tuple[str, str]]
"""Grants revoked in one transaction, as (grant id, reason): reported once it has committed."""


class GrantRepository:
    def __init__(self, engine: AsyncEngine, access_token_ttl: int) -> None:
        self.engine = engine
        self.access_token_ttl = access_token_ttl
        # Told of every revocation once it is committed (the audit log); never part of the transaction.
        self.on_revoked: Callable[[str, str], Awaitable[None]] | None = None
        # This process's views of the revocations (the gateway's), brought up to date before anyone is told.
        self.revocation_views: list[Callable[[], Awaitable[None]]] = []

    async def report(self, revoked: Revoked) -> None:
        """Bring this process's revocation views up to date, then tell :attr:`on_revoked`, about revocations
        whose transaction has committed."""
        if revoked:
            for catch_up in self.revocation_views:
                await catch_up()
        if self.on_revoked is not None:
            for grant_id, reason in revoked:
                await self.on_revoked(grant_id, reason)

    async def create_with_code(
        self,
        *,
        client_id: str,
        user_id: str,
        resource: str,
        scope: str,
        auth_time: int,
        redirect_uri: str,
        code_challenge: str,
        code_ttl: int,
    ) -> str:
        code = new_handle()
        grant_id = uuid.uuid4().hex
        t = now()
        async with self.engine.begin() as conn:
            await _require_active(conn, client_id)
            if not await hold_if_enabled(conn, user_id):  # disabled since she signed in (deputy.storage.user_status)
                raise HandleRefused("the user is disabled")
            await conn.execute(grants.insert().values(
                grant_id=grant_id, client_id=client_id, user_id=user_id, resource=resource, scope=scope,
                auth_time=auth_time, created_at=t))
            await conn.execute(authorization_codes.insert().values(
                code_hash=handle_hash(code), grant_id=grant_id, client_id=client_id, redirect_uri=redirect_uri,
                code_challenge=code_challenge, expires_at=t + code_ttl))
        return code

    async def create(self, *, client_id: str, user_id: str, resource: str, scope: str, auth_time: int,
                     parent_grant_id: str | None = None, actor_grant_id: str | None = None,
                     registered_client: bool = True, confirm: Client | None = None) -> Grant:
        """A grant without a code or refresh token (client credentials, exchanges): only access tokens carry it.

        The client must be active (:class:`ClientNotActive`); ``registered_client=False`` is for a grant
        whose ``client_id`` names no registered client (a workload's identity, RFC 7523 §3). ``confirm`` is the
        copy of the client's row the request was authenticated against: a row that differs from it in what
        authentication read refuses the grant (:class:`ClientChanged`).

        An exchange's grant names the subject token's grant (``parent_grant_id``) and the actor token's
        (``actor_grant_id``): it is written only while both are live, in one transaction that no revocation of
        either can interleave with (:func:`~deputy.storage.exchanged_grants.insert_derived`).
        """
        grant = Grant(uuid.uuid4().hex, client_id, user_id, resource, scope, auth_time, None, parent_grant_id,
                      actor_grant_id)
        values = dict(grant_id=grant.grant_id, client_id=client_id, user_id=user_id, resource=resource, scope=scope,
                      auth_time=auth_time, created_at=now())
        async with one_writer(self.engine), self.engine.begin() as conn:
            if registered_client:
                await _require_active(conn, client_id, confirm)  # first: the client's row before any grant's row
            if not await insert_derived(conn, values, parent_grant_id=parent_grant_id, actor_grant_id=actor_grant_id):
                raise HandleRefused("a token this one comes from is revoked, being revoked, or unknown")
        return grant

    async def load_code(self, code: str, client_id: str) -> RedeemedCode:
        """Look a code up without consuming it. A code already consumed is a replay: its grant is revoked
        (OAuth 2.1 §4.1.3). A code presented by another client is refused and left alone."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(authorization_codes, grants)
                .join(grants, grants.c.grant_id == authorization_codes.c.grant_id)
                .where(authorization_codes.c.code_hash == handle_hash(code)))).first()
        if row is None:
            raise HandleRefused("unknown code")
        if row.consumed_at is not None:
            await self.revoke(row.grant_id, "code_reuse")
            raise HandleRefused("code already used; its tokens are revoked")
        if row.client_id != client_id:
            raise HandleRefused("code was issued to another client")
        if row.expires_at < now():
            raise HandleRefused("code expired")
        if row.revoked_at is not None:
            raise HandleRefused("grant revoked")
        return RedeemedCode(_grant(row), row.redirect_uri, row.code_challenge)

    async def consume_code(self, code: str, grant: Grant, refresh_token: str | None = None,
                           refresh_ttl: int = 0) -> None:
        """Consume a loaded code exactly once and store the refresh token its answer carries, in one
        transaction. Losing to another redemption, or to a revocation of the grant, is a replay: the grant is
        revoked and nothing is stored."""
        code_hash = handle_hash(code)
        t = now()
        revoked: Revoked = []
        async with self.engine.begin() as conn:
            await _require_active(conn, grant.client_id)
            live_grant = exists().where(and_(grants.c.grant_id == grant.grant_id, grants.c.revoked_at.is_(None)))
            consumed = await conn.execute(
                update(authorization_codes)
                .where(and_(authorization_codes.c.code_hash == code_hash,
                            authorization_codes.c.grant_id == grant.grant_id,
                            authorization_codes.c.consumed_at.is_(None), live_grant))
                .values(consumed_at=t))
            replayed = consumed.rowcount != 1
            if replayed:
                await self._revoke(conn, grant.grant_id, "code_reuse", revoked)
            elif refresh_token is not None:
                await conn.execute(refresh_tokens.insert().values(
                    token_hash=handle_hash(refresh_token), grant_id=grant.grant_id, expires_at=t + refresh_ttl))
        # Raised after the transaction has committed, so the revocation stands.
        if replayed:
            await self.report(revoked)
            raise HandleRefused("code already used; its tokens are revoked")

    async def redeem_code(self, code: str, client_id: str) -> RedeemedCode:
        """Load and consume a code at once (for callers with nothing to record in between)."""
        redeemed = await self.load_code(code, client_id)
        await self.consume_code(code, redeemed.grant)
        return redeemed

    async def issue_refresh_token(self, grant_id: str, ttl: int) -> str:
        token = new_handle()
        async with self.engine.begin() as conn:
            await conn.execute(refresh_tokens.insert().values(
                token_hash=handle_hash(token), grant_id=grant_id, expires_at=now() + ttl))
        return token

    async def load_refresh_token(self, token: str, client_id: str) -> Grant:
        """Look a refresh token up without using it. A used one is a replay: its family (grant) is revoked
        (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2). One presented by another client is refused and left alone."""
        state = await self.find_refresh_token(token)
        if state is None:
            raise HandleRefused("unknown refresh token")
        if state.grant.client_id != client_id:
            # Not a replay by the holder: do not consume someone else's token.
            raise HandleRefused("refresh token was issued to another client")
        if state.grant.revoked_at is not None:
            raise HandleRefused("grant revoked")
        if state.expires_at < now():
            raise HandleRefused("refresh token expired")
        if state.used_at is not None:
            await self.revoke(state.grant.grant_id, "refresh_reuse")
            raise HandleRefused("refresh token already used; the whole family is revoked")
        return state.grant

    async def use_refresh_token(self, token: str, grant: Grant, successor: str, ttl: int) -> None:
        """Use a loaded refresh token once and store its successor, in one transaction. Losing to another use
        (a revocation also marks the family's tokens used) is a replay: the family is revoked."""
        token_hash = handle_hash(token)
        t = now()
        revoked: Revoked = []
        async with self.engine.begin() as conn:
            await _require_active(conn, grant.client_id)
            used = await conn.execute(
                update(refresh_tokens)
                .where(and_(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.grant_id == grant.grant_id,
                            refresh_tokens.c.used_at.is_(None)))
                .values(used_at=t))
            replayed = used.rowcount != 1
            if replayed:
                await self._revoke(conn, grant.grant_id, "refresh_reuse", revoked)
            else:
                await conn.execute(refresh_tokens.insert().values(
                    token_hash=handle_hash(successor), grant_id=grant.grant_id, expires_at=t + ttl))
        # Raised after the transaction has committed, so the revocation stands.
        if replayed:
            await self.report(revoked)
            raise HandleRefused("refresh token already used; the whole family is revoked")

    async def rotate_refresh_token(
        self, token: str, client_id: str, ttl: int, check: Callable[[Grant], None] = lambda _grant: None
    ) -> tuple[Grant, str]:
        """Load, vet with ``check`` (a refused request leaves the token usable) and use a refresh token at once;
        the grant and the successor."""
        grant = await self.load_refresh_token(token, client_id)
        check(grant)
        successor = new_handle()
        await self.use_refresh_token(token, grant, successor, ttl)
        return grant, successor

    async def find_refresh_token(self, token: str) -> RefreshTokenState | None:
        """Look a refresh token up without using it (introspection, revocation)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(refresh_tokens.c.expires_at, refresh_tokens.c.used_at, grants)
                .join(grants, grants.c.grant_id == refresh_tokens.c.grant_id)
                .where(refresh_tokens.c.token_hash == handle_hash(token)))).first()
        return RefreshTokenState(_grant(row), row.expires_at, row.used_at) if row is not None else None

    async def revoke(self, grant_id: str, reason: str) -> bool:
        revoked: Revoked = []
        async with self.engine.begin() as conn:
            live = await self._revoke(conn, grant_id, reason, revoked)
        await self.report(revoked)
        return live

    async def revoke_families(
        self, conn: AsyncConnection, *, user_id: str, client_id: str, resource: str | None, reason: str,
        revoked_log: Revoked,
    ) -> int:
        """Revoke every live grant of a user for a client (and server), inside the caller's transaction; the
        caller :meth:`report` s ``revoked_log`` once it has committed."""
        query = select(grants.c.grant_id).where(and_(
            grants.c.user_id == user_id, grants.c.client_id == client_id, grants.c.revoked_at.is_(None)))
        if resource is not None:
            query = query.where(grants.c.resource == resource)
        revoked = 0
        for (grant_id,) in (await conn.execute(query)).all():
            revoked += await self._revoke(conn, grant_id, reason, revoked_log)
        return revoked

    async def _revoke(self, conn: AsyncConnection, grant_id: str, reason: str, revoked_log: Revoked) -> bool:
        """Revoke a grant and every grant exchanged from it, as subject or actor, at any depth
        (:func:`~deputy.storage.exchanged_grants.revoke_derived`); whether ``grant_id`` was live. The grant (not
        its dependants, whose reason is ``parent_revoked`` or ``actor_revoked``) is added to ``revoked_log``."""
        t = now()
        result = await conn.execute(
            update(grants).where(and_(grants.c.grant_id == grant_id, grants.c.revoked_at.is_(None)))
            .values(revoked_at=t, revoked_reason=reason))
        if result.rowcount != 1:
            return False
        revoked_log.append((grant_id, reason))
        revoked = [grant_id, *await revoke_derived(conn, grant_id, t)]
        for part in chunks(revoked):
            await conn.execute(update(refresh_tokens)
                               .where(and_(refresh_tokens.c.grant_id.in_(part), refresh_tokens.c.used_at.is_(None)))
                               .values(used_at=t))
        # A revocation must outlive every access token of the grant; the +60 covers clock leeway.
        await conn.execute(revocations.insert(), [
            {"grant_id": g, "revoked_at": t, "expires_at": t + self.access_token_ttl + 60} for g in revoked])
        return True

    async def revocations_since(self, revocation_id: int) -> list[Revocation]:
        """Unexpired revocations with an id above ``revocation_id``: a listing, not a feed (see
        :mod:`deputy.storage.revocations`)."""
        return await revocations_since(self.engine, revocation_id)

    async def revocations_after(self, horizon: int | None) -> tuple[list[Revocation], int]:
        """Every unexpired revocation committed since the read that returned ``horizon`` (``None``: all), and
        the horizon for the next read; correct under any commit order (:mod:`deputy.storage.revocations`)."""
        return await revocations_after(self.engine, horizon)

    async def get(self, grant_id: str) -> Grant | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(grants).where(grants.c.grant_id == grant_id))).first()
        return _grant(row) if row is not None else None

    # -- used by client withdrawal (RFC 7592 §2.3 delete, `deputy clients remove|deny`) -----------

    async def withdraw_client(self, client_id: str, status: str, reason: str) -> int | None:
        """Deny (``denied``) or remove (``removed``) a client and revoke its live grants in one transaction that
        writes the client's row first (:func:`deputy.storage.clients.withdraw`); the number revoked, None for an
        unknown client. Once it returns, every replica's revocation view has what it needs to refuse the
        client's tokens, and no grant can be created for it."""
        revoked = 0
        revoked_log: Revoked = []
        async with self.engine.begin() as conn:
            if not await withdraw(conn, client_id, status):
                return None
            rows = (await conn.execute(select(grants.c.grant_id).where(
                and_(grants.c.client_id == client_id, grants.c.revoked_at.is_(None))))).all()
            for (grant_id,) in rows:
                revoked += await self._revoke(conn, grant_id, reason, revoked_log)
        await self.report(revoked_log)
        return revoked

    async def disable_user(self, username: str, reason: str = "user_disabled") -> int | None:
        """Disable a user (:func:`~deputy.storage.user_status.mark_disabled`: her row first, her sessions ended)
        and revoke every live grant she holds, in one transaction; the number revoked, None for an unknown name."""
        revoked = 0
        revoked_log: Revoked = []
        async with self.engine.begin() as conn:
            user_id = await mark_disabled(conn, username, now())
            if user_id is None:
                return None
            rows = (await conn.execute(select(grants.c.grant_id).where(
                and_(grants.c.user_id == user_id, grants.c.revoked_at.is_(None))))).all()
            for (grant_id,) in rows:
                revoked += await self._revoke(conn, grant_id, reason, revoked_log)
        await self.report(revoked_log)
        return revoked


def _grant(row: object) -> Grant:
    m = row._mapping  # type: ignore[attr-defined]
    return Grant(m["grant_id"], m["client_id"], m["user_id"], m["resource"], m["scope"], m["auth_time"],
                 m.get("revoked_at"), m.get("parent_grant_id"), m.get("actor_grant_id"))
