"""Sign-ins sent to an identity provider, kept server-side until its callback (OpenID Connect Core 1.0 §3.1.2.1).

The relying party (``deputy.federation.relying_party``) keeps no state; this is where its pending sign-in
waits (the pages, deputy.web.federated_pages, put it here). A row is keyed by the SHA-256 of its ``state`` and
bound to the browser that started it by the SHA-256 of a random cookie value (RFC 6749 §10.12: the response must
be this browser's; RFC 9700 §4.7.1, CSRF). :meth:`FederatedSignIns.take` deletes the row it returns, in the
statement that reads it, so a ``state`` is used once whatever replicas race for it; another browser presenting it
neither gets nor spends it. Only hashes of ``state`` and the cookie are stored; the nonce and PKCE verifier are
worth nothing without the provider's code, which is never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.handles import handle_hash
from deputy.storage.tables import federated_signins


@dataclass(frozen=True, slots=True)
class WaitingSignIn:
    """A sign-in waiting for provider ``idp``'s callback: what its starter kept (nonce, verifier, ...)."""

    idp: str
    kept: Mapping[str, Any]


class FederatedSignIns:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(self, state: str, idp: str, browser: str, kept: Mapping[str, Any], ttl: int) -> None:
        """Keep ``kept`` (JSON) under ``state`` for the browser holding the cookie value ``browser``."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(federated_signins).where(federated_signins.c.expires_at < now()))
            await conn.execute(federated_signins.insert().values(
                state_hash=handle_hash(state), browser_hash=handle_hash(browser), idp=idp, pending=dict(kept),
                expires_at=now() + ttl))

    async def take(self, state: str, browser: str | None) -> WaitingSignIn | Literal["unknown", "foreign"]:
        """The sign-in ``state`` names, removed; ``foreign`` when another browser started it (it stays for that
        one), ``unknown`` when there is none (never made, used already, or expired)."""
        key = federated_signins.c.state_hash == handle_hash(state)
        async with self.engine.begin() as conn:
            if browser:
                row = (await conn.execute(delete(federated_signins).where(and_(
                    key, federated_signins.c.browser_hash == handle_hash(browser),
                    federated_signins.c.expires_at >= now())).returning(federated_signins.c.idp,
                                                                        federated_signins.c.pending))).first()
                if row is not None:
                    return WaitingSignIn(row.idp, dict(row.pending))
            other = (await conn.execute(select(federated_signins.c.state_hash).where(and_(
                key, federated_signins.c.expires_at >= now())))).first()
        return "foreign" if other is not None else "unknown"
