"""STUB (issue 15, helper H1 replaces this file): the upstream's authorization side, discovered like an MCP client."""

from __future__ import annotations

from deputy.config import UpstreamServer
from deputy.connections.model import UpstreamProtection
from deputy.connections.upstream_http import UpstreamHttp


class Discovery:
    """Per server: challenge → RFC 9728 metadata → RFC 8414 / OpenID metadata; cached; :meth:`forget` drops it."""

    def __init__(self, http: UpstreamHttp) -> None:
        self.http = http

    async def protection(self, server: UpstreamServer, *, scope_challenge: str | None = None) -> UpstreamProtection:
        """What protects ``server``; ``scope_challenge`` is the ``scope`` of a 403 ``insufficient_scope`` (step-up).
        Raises :class:`~deputy.connections.errors.ConnectionFailed`."""
        raise NotImplementedError

    def forget(self, server: str) -> None:
        """Drop what is cached for ``server`` (after its authorization server refused Deputy)."""
        raise NotImplementedError
