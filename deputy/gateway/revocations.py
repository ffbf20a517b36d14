"""The gateway's view of revoked grants, kept fresh from the database.

Every replica polls the ``revocations`` table about once a second for the rows
committed since its last read — by commit horizon, not by id, so a revocation
whose transaction commits after a later one was read is still seen
(deputy.storage.revocations explains why that holds under any commit order).
Checking a token is then a set lookup. A revocation made by this process is
applied before the request that made it is answered: the grant repository
calls :meth:`RevocationList.catch_up` once the revocation has committed.

If the list cannot be refreshed for longer than the configured staleness, the
check cannot be made and :class:`RevocationsUnavailable` is raised: the gateway
refuses the call rather than accept a token it cannot vouch for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import SQLAlchemyError

from deputy import clock
from deputy.storage.grants import GrantRepository

log = logging.getLogger(__name__)


class RevocationsUnavailable(RuntimeError):
    pass


class RevocationList:
    def __init__(self, grants: GrantRepository, max_staleness: float, interval: float | None = None) -> None:
        self.grants = grants
        self.max_staleness = max_staleness
        # A poll every `max_staleness` would leave the view stale for the length of each read (and every
        # call refused), so poll several times per bound: one slow or failed read does not close the gate.
        self.interval = min(1.0, max_staleness / 4) if interval is None else interval
        self._revoked: dict[str, int] = {}
        self._horizon: int | None = None
        self._fresh_at = 0.0
        self._task: asyncio.Task[None] | None = None
        # One read at a time: a read's horizon is only safe to keep once its rows are applied.
        self._reading = asyncio.Lock()

    def staleness(self) -> float:
        """Seconds since the view was last read from the database (a gauge read at scrape time)."""
        return clock.monotonic() - self._fresh_at

    def check_fresh(self) -> None:
        if self.staleness() > self.max_staleness:
            raise RevocationsUnavailable("revocation list is stale")

    def is_revoked(self, grant_id: str) -> bool:
        self.check_fresh()
        return grant_id in self._revoked

    async def refresh(self) -> None:
        async with self._reading:
            started = clock.monotonic()
            found, self._horizon = await self.grants.revocations_after(self._horizon)
            for revocation in found:
                self._revoked[revocation.grant_id] = revocation.expires_at
            now = clock.now()
            if len(self._revoked) > 1000:
                self._revoked = {g: exp for g, exp in self._revoked.items() if exp >= now}
            self._fresh_at = started

    async def catch_up(self) -> None:
        """Apply revocations this process has just committed (called by the grant repository)."""
        try:
            await self.refresh()
        except (SQLAlchemyError, OSError) as exc:
            # The revocation stands in the database; the next poll applies it, or the view goes stale and
            # the gateway refuses every call.
            log.warning("revocation list catch-up failed: %s", type(exc).__name__)

    async def start(self) -> None:
        await self.refresh()
        self.grants.revocation_views.append(self.catch_up)
        self._task = asyncio.create_task(self._poll(), name="deputy-revocations")

    async def stop(self) -> None:
        if self.catch_up in self.grants.revocation_views:
            self.grants.revocation_views.remove(self.catch_up)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("revocation list refresh failed: %s", type(exc).__name__)
