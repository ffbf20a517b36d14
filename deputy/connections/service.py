"""STUB (issue 15, helper H3 replaces this file): each user's connections to ``credentials = "oauth"`` upstreams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.audit.log import AuditLog
from deputy.config import Settings, UpstreamServer
from deputy.connections.model import ConnectionNeeded, ConnectionSummary
from deputy.gateway.principal import Principal

Headers = Sequence[tuple[str, str]]


class Connections:
    """What the gateway asks for each call, and what the pages and the CLI do with connections."""

    @classmethod
    def open(cls, settings: Settings, engine: AsyncEngine, audit: AuditLog) -> Connections:
        """Built once per process by :class:`deputy.services.Services`; opens the vault (may raise on a bad key)."""
        return cls()

    def oauth_servers(self) -> Mapping[str, UpstreamServer]:
        """The servers configured with ``credentials = "oauth"``."""
        raise NotImplementedError

    def metadata_document(self) -> dict[str, object] | None:
        """Deputy's client ID metadata document; None when Deputy's public URL is not https (none is served)."""
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def connect_url(self, server: str) -> str:
        raise NotImplementedError

    async def headers_for(self, server: UpstreamServer, principal: Principal) -> Headers | ConnectionNeeded:
        """The ``Authorization`` header for a call for ``principal.user``, refreshed first when near expiry (single
        flight); :class:`ConnectionNeeded` when she has no usable connection."""
        raise NotImplementedError

    async def refused(self, server: UpstreamServer, principal: Principal, status: int,
                      www_authenticate: str | None) -> ConnectionNeeded | None:
        """The upstream answered 401 or 403 to her token: refresh (401; None means retry once with new headers from
        :meth:`headers_for`), mark broken, or ask for more scope (403 ``insufficient_scope``, step-up)."""
        raise NotImplementedError

    async def start(self, server_name: str, user_id: str, browser: str) -> str:
        """Start connecting ``user_id`` to ``server_name`` in the browser holding cookie value ``browser``; the
        upstream authorization URL to redirect to. Raises ConnectionFailed."""
        raise NotImplementedError

    async def finish(self, query: Mapping[str, str], user_id: str | None, browser: str | None) -> str:
        """The callback: bind the tokens to the user who started it (same user, same browser); the server's name.
        Raises ConnectionFailed."""
        raise NotImplementedError

    async def list(self, user_id: str | None = None, server: str | None = None) -> list[ConnectionSummary]:
        raise NotImplementedError

    async def disconnect(self, user_id: str, server: str, reason: str) -> bool:
        """Revoke at the upstream (RFC 7009 when offered), delete from the vault, record it; False if none."""
        raise NotImplementedError

    async def disconnect_user(self, user_id: str, reason: str) -> int:
        """Every connection of ``user_id`` (disabled, or her consent revoked); how many."""
        raise NotImplementedError
