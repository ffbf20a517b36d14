"""The gateway's view of revoked grants, kept fresh from the database.

Every replica polls the ``revocations`` table (new rows only) about once a
second; checking a token is then a set lookup. If the list cannot be refreshed
for longer than the configured staleness, the check cannot be made and
:class:`RevocationsUnavailable` is raised: the gateway refuses the call rather
than accept a token it cannot vouch for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from deputy.storage.grants import GrantRepository

log = logging.getLogger(__name__)


class RevocationsUnavailable(RuntimeError):
    pass


class RevocationList:
    def __init__(self, grants: GrantRepository, max_staleness: float, interval: float = 1.0) -> None:
        self.grants = grants
        self.max_staleness = max_staleness
        self.interval = interval
        self._revoked: dict[str, int] = {}
        self._last_id = 0
        self._fresh_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def check_fresh(self) -> None:
        if time.monotonic() - self._fresh_at > self.max_staleness:
            raise RevocationsUnavailable("revocation list is stale")

    def is_revoked(self, grant_id: str) -> bool:
        self.check_fresh()
        return grant_id in self._revoked

    async def refresh(self) -> None:
        for revocation in await self.grants.revocations_since(self._last_id):
            self._revoked[revocation.grant_id] = revocation.expires_at
            self._last_id = max(self._last_id, revocation.revocation_id)
        now = int(time.time())
        if len(self._revoked) > 1000:
            self._revoked = {g: exp for g, exp in self._revoked.items() if exp >= now}
        self._fresh_at = time.monotonic()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="deputy-revocations")

    async def stop(self) -> None:
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
