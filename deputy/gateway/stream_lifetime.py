"""How long a GET stream stays open: while the token that opened it is good.

A GET stream (MCP Streamable HTTP: the server's messages outside any request) is authorized once, when it is
opened, with an access token that expires (RFC 9068 §2.2, ``exp``) and may be revoked (RFC 7009; a user disabled
has every grant revoked). Left alone the stream outlives both, and a disabled user goes on receiving her server's
notifications and requests. So the stream ends — cleanly, as at a shutdown: its client opens it again and is
authenticated then — at the first of: Deputy shutting down, the token's ``exp``, its grant revoked (seen within
:data:`REVOCATION_POLL` seconds plus the revocation view's own staleness), or revocations that cannot be checked
any more (fail closed, as for a request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from deputy import clock
from deputy.gateway.principal import Principal
from deputy.gateway.revocations import RevocationsUnavailable

log = logging.getLogger(__name__)

REVOCATION_POLL = 1.0  # seconds between two looks at the revocation view (a set lookup each)


async def until_token_ends(principal: Principal, shutdown: asyncio.Event, is_revoked: Callable[[str], bool]) -> str:
    """Wait until a stream opened with ``principal``'s token must end; why (for the log)."""
    while not shutdown.is_set():
        left = principal.expires_at - clock.wall() if principal.expires_at else None
        if left is not None and left <= 0:
            return "the token expired"
        if principal.grant_id is not None:
            try:
                if is_revoked(principal.grant_id):
                    return "the token was revoked"
            except RevocationsUnavailable:
                return "revocations cannot be checked"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shutdown.wait(), REVOCATION_POLL if left is None else min(REVOCATION_POLL, left))
    return "Deputy is shutting down"


def stream_end(principal: Principal, shutdown: asyncio.Event,
               is_revoked: Callable[[str], bool]) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """The event that ends a GET stream opened with ``principal``'s token, and the task that sets it (the caller
    cancels the task once the stream is over, however it ended)."""
    ends = asyncio.Event()

    async def watch() -> None:
        why = await until_token_ends(principal, shutdown, is_revoked)
        log.info("GET stream of %s on %s ended: %s", principal.user or principal.agent, principal.server, why)
        ends.set()

    return ends, asyncio.create_task(watch())
