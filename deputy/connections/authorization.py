"""STUB (issue 15, helper H1 replaces this file): the code flow, refresh and revocation toward an upstream's AS."""

from __future__ import annotations

from collections.abc import Mapping

from deputy.config import UpstreamServer
from deputy.connections.model import PendingConnection, UpstreamClient, UpstreamProtection, UpstreamTokens
from deputy.connections.upstream_http import UpstreamHttp


class AuthorizationClient:
    def __init__(self, http: UpstreamHttp, redirect_uri: str) -> None:
        self.http = http
        self.redirect_uri = redirect_uri

    def start(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient, *,
              user_id: str, scope: str | None, ttl: int, now: int) -> tuple[str, PendingConnection]:
        """The authorization URL to send the browser to, and the pending connection to keep (by ``state``)."""
        raise NotImplementedError

    async def redeem(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                     pending: PendingConnection, query: Mapping[str, str]) -> UpstreamTokens:
        """Check the callback (``iss``, ``error``, ``code``; ``state`` was the caller's lookup) and redeem the code."""
        raise NotImplementedError

    async def refresh(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                      refresh_token: str, scope: str | None) -> UpstreamTokens:
        """RFC 6749 §6; a refused refresh raises ConnectionFailed(reason="refresh_refused")."""
        raise NotImplementedError

    async def revoke(self, server: UpstreamServer, protection: UpstreamProtection, client: UpstreamClient,
                     token: str, hint: str) -> None:
        """RFC 7009 when the authorization server offers it; nothing otherwise."""
        raise NotImplementedError
