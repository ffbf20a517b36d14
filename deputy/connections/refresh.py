"""The upstream ``Authorization`` header for a user's call: from a short in-memory cache, from the vault, or
refreshed first (RFC 6749 §6) — once, however many calls race for it.

**Single flight.** Within a process the first call that finds the token due starts one refresh task and every
other call for the same (user, server) awaits that task. Across processes the refresh runs inside the store's
``refreshing`` lock (a row lock on PostgreSQL, across replicas too) or, on SQLite, a lock file the workers share
(:mod:`deputy.connections.refresh_lock`), and the row is read again inside it: another worker or replica may have
refreshed already, and sending its now-rotated refresh token again would be refused (RFC 9700 §4.14.2: a reused
refresh token may revoke the whole family).

**Failure.** A refresh the authorization server refuses (``invalid_grant``, RFC 6749 §5.2) marks the connection
broken and records ``connection.broken``: she must connect again. An authorization server that cannot be reached
leaves the connection as it is; the current token is used while it is still valid, and after that the call fails
(:class:`ConnectionFailed`, ``upstream_unavailable``) rather than going upstream without her credential. Rotation
(RFC 6749 §6, RFC 9700 §4.14.2): a new refresh token replaces the old one; none in the response keeps the old.

**The cache** holds the header, per (user, server), for at most ``revocation_max_staleness`` seconds (so a
disconnect made on another replica is seen that soon) and never past the time the token is due for refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NoReturn

from deputy import clock
from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import UpstreamTokens
from deputy.connections.parts import Parts
from deputy.connections.refresh_lock import held_across_processes
from deputy.connections.vault import VaultKeyError
from deputy.storage.connections import HeldConnection, RefreshBusy, StoredConnection, token_context

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str]]
Key = tuple[str, str]  # (user id, server name)
Row = StoredConnection
NEVER = 2**62


class Broken(Exception):
    """The connection cannot be used until she connects again (refresh refused, no refresh token, wrong issuer)."""


class Missing(Exception):
    """She has no connection to that server (never made, or disconnected meanwhile)."""


def token_digest(token: str) -> str:
    """What records and comparisons keep of a token: its SHA-256 (hex), never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Cached:
    headers: Headers
    token_sha256: str
    fresh_until: float  # monotonic: revocation_max_staleness after it was read
    refresh_at: int  # wall clock: expires_at - refresh_margin (or never)


class TokenKeeper:
    """Headers for (user, server), refreshed when due; the single-flight refresh; the cache."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._cache: dict[Key, Cached] = {}
        self._flights: dict[Key, asyncio.Task[Row]] = {}
        # The digest of the token a 401's refresh gave, per (user, server): refused too, it is not refreshed again.
        self._by_refusal: dict[Key, str] = {}

    def forget(self, user_id: str, server: str | None = None) -> None:
        """Drop cached headers of ``user_id`` (for ``server``, or all of hers)."""
        for key in [k for k in self._cache if k[0] == user_id and (server is None or k[1] == server)]:
            del self._cache[key]

    def handed_out(self, user_id: str, server: str) -> str | None:
        """The digest of the token this process last handed out for (user, server), while cached."""
        cached = self._cache.get((user_id, server))
        return cached.token_sha256 if cached is not None else None

    def got_by_refusal(self, user_id: str, server: str) -> str | None:
        return self._by_refusal.get((user_id, server))

    async def break_now(self, row: Row, reason: str) -> NoReturn:
        """Mark ``row`` broken (outside a refresh) and record it; raises :class:`Broken`."""
        await self.parts.store.mark_broken(row.user_id, row.server)
        await self._broken(row.user_id, row.server, BrokeNow(row.issuer, reason))

    async def _broken(self, user_id: str, server: str, broke: BrokeNow) -> NoReturn:
        self.forget(user_id, server)
        self._by_refusal.pop((user_id, server), None)
        fields: dict[str, Any] = {"user": user_id, "server": server, "issuer": broke.issuer, "reason": broke.reason}
        if broke.error is not None:
            fields["error"] = broke.error
        await self.parts.record("connection.broken", **fields)
        raise Broken()

    async def headers(self, server: UpstreamServer, user_id: str) -> Headers:
        """The header to send; raises :class:`Missing`, :class:`Broken` or :class:`ConnectionFailed`."""
        key = (user_id, server.name)
        cached = self._cache.get(key)
        if cached is not None and clock.monotonic() < cached.fresh_until and clock.now() < cached.refresh_at:
            return cached.headers
        self._cache.pop(key, None)
        row = await self.parts.store.get(user_id, server.name)
        if row is None:
            raise Missing()
        if row.status != "active":
            raise Broken()
        if self._due(row):
            row = await self.refreshed(server, user_id, refused_sha256=None)
        return self._remember(key, row)

    async def refreshed(self, server: UpstreamServer, user_id: str, *, refused_sha256: str | None) -> Row:
        """The row after a refresh, one per (user, server) at a time in this process. ``refused_sha256``: the
        upstream refused that token (401), so refresh though it is not due — unless the row holds another one."""
        key = (user_id, server.name)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(self._refresh(server, user_id, refused_sha256))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        # Shielded: a caller that gives up (its client went away) must not cancel the refresh the others await.
        return await asyncio.shield(flight)

    def _landed(self, key: Key, done: asyncio.Task[Row]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        self._cache.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: raised to every call awaiting it, not logged as never retrieved

    def _due(self, row: Row) -> bool:
        margin = self.parts.settings.connections.refresh_margin
        return row.expires_at is not None and row.expires_at - margin <= clock.now()

    def _remember(self, key: Key, row: Row) -> Headers:
        access = self.open(row, "access_token")
        headers: Headers = (("Authorization", f"Bearer {access}"),)
        margin = self.parts.settings.connections.refresh_margin
        refresh_at = row.expires_at - margin if row.expires_at is not None else NEVER
        fresh_until = clock.monotonic() + self.parts.settings.revocation_max_staleness
        self._cache[key] = Cached(headers, row.token_digest, fresh_until, refresh_at)
        return headers

    def open(self, row: Row, field: Any) -> str:
        """A sealed token of ``row``; :class:`ConnectionFailed` (``vault_key``) when the vault cannot open it."""
        sealed = row.access_token if field == "access_token" else row.refresh_token
        if sealed is None:
            raise ValueError(f"the connection holds no {field}")
        try:
            return self.parts.vault_or_fail(row.server).unseal(sealed, token_context(row.user_id, row.server, field))
        except VaultKeyError:
            # The operator's problem (a replaced or lost key), not hers: nothing is marked broken, nothing forwarded.
            log.error("connection of user %s to %s: its %s does not open with the vault's key (was DEPUTY_VAULT_KEY "
                      "or the data directory's vault.key replaced?)", row.user_id, row.server, field)
            raise ConnectionFailed(row.server, "vault_key", "a stored token does not open with the vault key; the "
                                   "operator must restore the key, or the user connect again") from None

    def _across_processes(self, user_id: str, server: str) -> AbstractAsyncContextManager[None]:
        """On SQLite, the lock file other workers' refreshes of this connection wait on (deputy.connections.
        refresh_lock); on PostgreSQL nothing: the store's row lock holds across processes and replicas."""
        store = self.parts.store
        if store.engine.dialect.name != "sqlite":
            return contextlib.nullcontext()
        return held_across_processes(self.parts.settings.data_dir, user_id, server, store.single_flight.wait)

    async def _refresh(self, server: UpstreamServer, user_id: str, refused_sha256: str | None) -> Row:
        try:
            # The lock file first, then the store's hold, which reads the row: what another worker stored before
            # letting go of the lock is what this one sees.
            async with self._across_processes(user_id, server.name), \
                    self.parts.store.refreshing(user_id, server.name) as held:
                outcome = await self._refresh_held(server, held, refused_sha256)
        except RefreshBusy:
            row = await self.parts.store.get(user_id, server.name)
            if row is not None and row.status == "active" and refused_sha256 is None and \
                    (row.expires_at is None or row.expires_at > clock.now()):
                return row  # still valid while the other refresh finishes
            raise ConnectionFailed(server.name, "upstream_unavailable", "another refresh of this connection did "
                                   "not finish in time") from None
        if isinstance(outcome, Refreshed):
            if refused_sha256 is not None:
                self._by_refusal[(user_id, server.name)] = outcome.row.token_digest
            await self.parts.record("connection.refreshed", user=user_id, server=server.name,
                                    issuer=outcome.row.issuer, token_sha256=outcome.row.token_digest,
                                    refresh_rotated=outcome.rotated, expires_at=outcome.row.expires_at,
                                    scope=outcome.row.scope)
            return outcome.row
        if isinstance(outcome, BrokeNow):
            await self._broken(user_id, server.name, outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _refresh_held(self, server: UpstreamServer, held: HeldConnection,
                            refused_sha256: str | None) -> Row | Refreshed | BrokeNow | Exception:
        """Inside the lock: what happened (records are written after it is let go)."""
        row = held.current
        if row is None:
            return Missing()
        if row.status != "active":
            return Broken()
        if refused_sha256 is None and not self._due(row):
            return row  # refreshed by another call or replica while this one waited for the lock
        if refused_sha256 is not None and row.token_digest != refused_sha256:
            return row  # the refused token was replaced meanwhile: retry with the new one
        valid = row.expires_at is None or row.expires_at > clock.now()
        if row.refresh_token is None:
            if refused_sha256 is None and valid:
                return row  # nothing to refresh with: used until it expires, then she connects again
            await held.mark_broken()
            return BrokeNow(row.issuer, "no_refresh_token")
        refresh_token = self.open(row, "refresh_token")
        try:
            tokens = await self._ask(server, row, refresh_token)
        except ConnectionFailed as exc:
            log.warning("refreshing the connection of user %s to %s failed: %s: %s", row.user_id, server.name,
                        exc.reason, exc.detail)
            if exc.reason in ("refresh_refused", "issuer_mismatch"):
                await held.mark_broken()
                return BrokeNow(row.issuer, exc.reason, exc.error)
            if valid and refused_sha256 is None:
                return row  # the authorization server is away: the token is used while it is still valid
            return exc
        if not await held.store(self._sealed(row, tokens, refresh_token)) or held.current is None:
            return Missing()  # disconnected while it was refreshed (SQLite: changed since read)
        return Refreshed(held.current, tokens.refresh_token is not None)

    async def _ask(self, server: UpstreamServer, row: Row, refresh_token: str) -> UpstreamTokens:
        protection = await self.parts.discovery.protection(server)
        if protection.authorization_server.issuer != row.issuer:
            # Its refresh token was issued by another authorization server: never send it to this one.
            raise ConnectionFailed(server.name, "issuer_mismatch",
                                   "the upstream now names another authorization server than the one connected to")
        client = await self.parts.registration.client_of(server, protection, row.client_id)
        return await self.parts.authorization.refresh(server, protection, client, refresh_token, None)

    def _sealed(self, row: Row, tokens: UpstreamTokens, old_refresh: str) -> Row:
        vault = self.parts.vault_or_fail(row.server)
        # RFC 6749 §6: the authorization server MAY issue a new refresh token; without one the old one stays.
        refresh = tokens.refresh_token or old_refresh
        return dataclasses.replace(
            row, access_token=vault.seal(tokens.access_token, token_context(row.user_id, row.server, "access_token")),
            refresh_token=vault.seal(refresh, token_context(row.user_id, row.server, "refresh_token")),
            expires_at=tokens.expires_at, scope=tokens.scope or row.scope, refreshed_at=clock.now(),
            token_digest=token_digest(tokens.access_token))


@dataclass(frozen=True, slots=True)
class Refreshed:
    row: Row
    rotated: bool


@dataclass(frozen=True, slots=True)
class BrokeNow:
    issuer: str
    reason: str
    error: str | None = None
