"""A client's public keys for ``private_key_jwt``: registered inline, or fetched from its ``jwks_uri``.

RFC 7591 §2 lets a client publish its keys at a URL so it can rotate them without
re-registering. The URL is the client's choice, so it is fetched like a client
metadata document — through the SSRF-safe :class:`~deputy.oauth.document_fetcher.DocumentFetcher`
(same development-mode and CA settings as ``[client_documents]``) — and the set is
checked like an inline one (public, asymmetric keys only). Why a fetch failed is
logged for the operator, never told to the client. It is cached as its
HTTP headers say, within the ``[client_documents]`` cache bounds; when an assertion
names a key the cached set lacks, the set is fetched again, at most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deputy.client_trust import ClientDocumentPolicy
from deputy.clock import wall
from deputy.oauth.client_documents import cache_lifetime
from deputy.oauth.document_fetcher import DocumentFetcher, FetchRefused
from deputy.oauth.errors import InvalidClient
from deputy.storage.clients import Client

log = logging.getLogger(__name__)
JWKS_MAX_BYTES = 32 * 1024
REFRESH_INTERVAL = 60.0
MAX_CACHED = 1000


@dataclass(frozen=True, slots=True)
class _Cached:
    jwks: Mapping[str, Any]
    fetched_at: float
    expires_at: float


class ClientKeys:
    def __init__(self, policy: ClientDocumentPolicy, fetcher: DocumentFetcher,
                 check: Callable[[Any], Mapping[str, Any]], clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.fetcher = fetcher
        self.check = check
        self.clock = clock
        self._cache: dict[str, _Cached] = {}

    @classmethod
    def from_policy(cls, policy: ClientDocumentPolicy, check: Callable[[Any], Mapping[str, Any]]) -> ClientKeys:
        fetcher = DocumentFetcher(max_bytes=JWKS_MAX_BYTES, timeout_seconds=policy.timeout_seconds,
                                  development_mode=policy.development_mode, ca_file=policy.ca_file)
        return cls(policy, fetcher, check)

    async def keys(self, client: Client, *, stale: bool = False) -> tuple[Mapping[str, Any], bool]:
        """The client's JWK Set, and whether it came from its ``jwks_uri`` (and so may be refreshed).

        ``stale`` asks for a fresh copy because the cached one lacked the signing key.
        """
        if client.jwks is not None:
            return client.jwks, False
        uri = client.jwks_uri
        if uri is None:
            raise InvalidClient("this client has no registered keys")
        now = self.clock()
        cached = self._cache.get(uri)
        if cached is not None and now < cached.expires_at and not (
                stale and now - cached.fetched_at >= REFRESH_INTERVAL):
            return cached.jwks, True
        try:
            fetched = await self.fetcher.fetch(uri)
        except FetchRefused as exc:
            # As for metadata documents: the details (addresses, resolver text) are for the operator only.
            log.info("jwks_uri %s of client %s not fetched (%s): %s", uri, client.client_id, exc.reason, exc.message)
            raise InvalidClient("the client's jwks_uri could not be fetched") from None
        try:
            jwks = self.check(fetched.value)
        except ValueError as exc:
            raise InvalidClient(f"the client's jwks_uri does not hold a usable JWK Set: {exc}") from None
        lifetime = cache_lifetime(fetched, self.policy.cache_min_seconds, self.policy.cache_max_seconds, wall())
        self._cache.pop(uri, None)
        while len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[uri] = _Cached(jwks, now, now + lifetime)
        return jwks, True
