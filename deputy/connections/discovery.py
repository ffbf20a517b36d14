"""The upstream's authorization side, discovered as an MCP client must (MCP 2026-07-28 "Authorization Server
Discovery"), then cached per server.

1. The upstream's challenge (:meth:`~deputy.connections.upstream_http.UpstreamHttp.challenge`): its
   ``resource_metadata`` URL and ``scope``, when it gives them.
2. Protected resource metadata (RFC 9728 §3): the challenge's URL, then the path-inserted well-known URL, then the
   root one (``build_protected_resource_metadata_discovery_urls``); the first that answers 200 is read, and its
   ``resource`` must name the configured upstream (:mod:`.upstream_metadata`).
3. Its first authorization server — or, when the operator pinned one (``authorization_server``), that one, which
   must then be listed: any other is refused. A configured client (``client_id``) is registered at one
   authorization server, so it comes with a pin (the configuration requires it); should a server with a client and
   no pin reach here anyway, no issuer is followed: following the upstream's first would hand the client and its
   secret to whichever authorization server the upstream names (RFC 9728 §7.6).
4. Authorization server metadata (RFC 8414 §3.1, then OpenID Connect Discovery, in the specification's order for an
   issuer with and without a path: ``build_oauth_authorization_server_metadata_discovery_urls``); issuer, PKCE S256
   and endpoint hosts checked (:mod:`.upstream_metadata`).
5. Scopes (MCP "Scope Selection Strategy"): the operator's ``scopes``, else the challenge's ``scope``, else the
   metadata's ``scopes_supported``, else none (the parameter is left out). Deputy wants refresh tokens, so
   ``offline_access`` is added when the authorization server lists it (SEP-2207) and the scopes were not the
   operator's. A step-up (``403 insufficient_scope``) asks for the union of those and the challenged scope
   (SEP-2350, ``union_scopes``).

An upstream with no protected resource metadata at all is read as the 2025-03-26 revision describes: its origin is
its authorization server, whose RFC 8414 metadata must be at the root well-known URL and pass the same checks. That
revision's last fallback — fixed ``/authorize`` and ``/token`` paths with no metadata — is not followed: without
metadata nothing says the server checks PKCE, and the current revision requires refusing then.

A result is cached for :data:`TTL` seconds; a failure is not cached; :meth:`Discovery.forget` drops a result (the
service calls it when the upstream stops accepting tokens from the cached authorization server: a migration).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from deputy import clock
from deputy.config import UpstreamServer
from deputy.connections.model import AuthorizationServer, UpstreamProtection
from deputy.connections.sdk_auth import (
    authorization_server_metadata_urls,
    issuers_match,
    protected_resource_metadata_urls,
    union_scopes,
)
from deputy.connections.upstream_http import Challenge, UpstreamHttp, UpstreamHttpError, origin
from deputy.connections.upstream_metadata import (
    MetadataRefused,
    read_authorization_server,
    read_protected_resource,
)

TTL = 600.0
OFFLINE_ACCESS = "offline_access"


@dataclass(frozen=True, slots=True)
class _Cached:
    protection: UpstreamProtection
    fetched_at: float


class Discovery:
    """Per server: challenge → RFC 9728 metadata → RFC 8414 / OpenID metadata; cached; :meth:`forget` drops it."""

    def __init__(self, http: UpstreamHttp, ttl: float = TTL) -> None:
        self.http = http
        self.ttl = ttl
        self._cache: dict[str, _Cached] = {}

    async def protection(self, server: UpstreamServer, *, scope_challenge: str | None = None) -> UpstreamProtection:
        """What protects ``server``; ``scope_challenge`` is the ``scope`` of a 403 ``insufficient_scope`` (step-up).
        Raises :class:`~deputy.connections.errors.ConnectionFailed`."""
        cached = self._cache.get(server.name)
        if cached is not None and clock.monotonic() - cached.fetched_at < self.ttl:
            found = cached.protection
        else:
            try:
                found = await self._discover(server)
            except MetadataRefused as exc:
                raise exc.for_server(server.name) from None
            self._cache[server.name] = _Cached(found, clock.monotonic())
        if scope_challenge:
            current = " ".join(found.scopes) if found.scopes else None
            merged = union_scopes(current, scope_challenge)
            return replace(found, scopes=tuple(merged.split()) if merged else None)
        return found

    def forget(self, server: str) -> None:
        """Drop what is cached for ``server`` (after its authorization server refused Deputy)."""
        self._cache.pop(server, None)

    async def _discover(self, server: UpstreamServer) -> UpstreamProtection:
        server_url = server.url or ""
        try:
            challenge = await self.http.challenge(server)
        except UpstreamHttpError as exc:
            raise MetadataRefused("discovery_failed", f"the upstream did not answer: {exc.message}") from None
        published = await self._protected_resource(server, challenge)
        issuers: tuple[str, ...]
        if published is None:  # the 2025-03-26 revision: the upstream's origin is its authorization server
            resource, issuers, prm_scopes = server_url, (origin(server_url),), None
            metadata_urls = authorization_server_metadata_urls(None, server_url)
        else:
            resource, issuers, prm_scopes = published
        issuer = self._chosen_issuer(server, issuers)
        if published is not None:
            metadata_urls = authorization_server_metadata_urls(issuer, server_url)
        authorization_server = await self._authorization_server(server, issuer, metadata_urls)
        return UpstreamProtection(resource, authorization_server,
                                  _scopes(server, challenge, prm_scopes, authorization_server))

    async def _protected_resource(self, server: UpstreamServer, challenge: Challenge
                                  ) -> tuple[str, tuple[str, ...], tuple[str, ...] | None] | None:
        """The first protected resource metadata found, read; None when no URL has any."""
        urls = protected_resource_metadata_urls(challenge.resource_metadata, server.url or "")
        for url in urls:
            answer = await self._get(server, url)
            if answer is not None:
                return read_protected_resource(answer, server.url or "")
        return None

    def _chosen_issuer(self, server: UpstreamServer, issuers: tuple[str, ...]) -> str:
        pinned = server.oauth.authorization_server if server.oauth is not None else None
        if pinned is None:
            if server.oauth is not None and server.oauth.client_id is not None:
                raise MetadataRefused("authorization_server_not_allowed",
                                      "a configured client_id needs the authorization server it is registered at "
                                      f"(servers.{server.name}.oauth.authorization_server); none is pinned")
            return issuers[0]
        for issuer in issuers:
            if issuers_match(issuer, pinned):
                return issuer
        raise MetadataRefused("authorization_server_not_allowed",
                              f"the upstream names authorization server {issuers[0]!r}; only {pinned!r} is allowed")

    async def _authorization_server(self, server: UpstreamServer, issuer: str,
                                    urls: list[str]) -> AuthorizationServer:
        trusted = server.oauth.trusted_hosts if server.oauth is not None else frozenset()
        for url in urls:
            document = await self._get(server, url)
            if document is not None:
                return read_authorization_server(document, issuer, trusted, self.http.development_mode)
        raise MetadataRefused("discovery_failed", f"no authorization server metadata for {issuer} "
                                                  f"(tried {', '.join(urls)})")

    async def _get(self, server: UpstreamServer, url: str) -> object | None:
        """The JSON at ``url`` when it answers 200, None for another status (the next URL is tried)."""
        try:
            answer = await self.http.get_json(server, url)
        except UpstreamHttpError as exc:
            refused = exc.kind in ("refused", "too_large")
            raise MetadataRefused("fetch_refused" if refused else "discovery_failed", exc.message) from None
        if answer.status != 200:
            return None
        if answer.document is None:
            raise MetadataRefused("discovery_failed", f"{url} did not answer with JSON")
        document: object = answer.document
        return document


def _scopes(server: UpstreamServer, challenge: Challenge, prm_scopes: tuple[str, ...] | None,
            authorization_server: AuthorizationServer) -> tuple[str, ...] | None:
    if server.oauth is not None and server.oauth.scopes:
        return server.oauth.scopes
    if challenge.scope:
        chosen: tuple[str, ...] | None = tuple(dict.fromkeys(challenge.scope.split()))
    else:
        chosen = prm_scopes or None
    listed = authorization_server.scopes_supported or ()
    if chosen and OFFLINE_ACCESS in listed and OFFLINE_ACCESS not in chosen:
        chosen = (*chosen, OFFLINE_ACCESS)
    return chosen
