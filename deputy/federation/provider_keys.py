"""An identity provider's signing keys: its JWK Set (RFC 7517 §5) from ``jwks_uri``, cached, refreshed on need.

OpenID Connect Core 1.0 §10.1.1: a provider rotates its keys by publishing the new one in its JWK Set and signing
with it. So an ID token naming a ``kid`` the cached set lacks makes Deputy fetch the set again — once; and such a
fetch happens at most once every :data:`REFETCH_INTERVAL` seconds per provider, so tokens with made-up ``kid``
values cannot make Deputy hammer the provider (attack classes: "unknown kid causing unbounded JWKS fetches").
A set is otherwise kept :data:`KEYS_TTL` seconds.

A fetched set is judged by :func:`deputy.jwks_rules.check_client_jwks`: public asymmetric keys only, RSA keys of
at least 2048 bits. A set holding a private or a symmetric key is refused whole — a provider that publishes its
private key, or a symmetric one anyone can sign with, is not one whose signatures mean anything. While a refresh
fails, the set already held stays in use; with none held, the sign-in fails with ``keys_unavailable``.

Which keys may have made a signature is :func:`deputy.jwks_rules.candidate_keys`, given the algorithms an ID token
may use (:data:`ID_TOKEN_ALGORITHMS`; an RSA key never checks an EC algorithm, no key ever an HMAC): ``use`` absent
or ``sig``, the key's own ``alg``, when it has one, the token's, and the token's ``kid`` when it names one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deputy import clock
from deputy.config_identity_providers import IdentityProvider
from deputy.federation.errors import ProviderUnavailable
from deputy.federation.provider_http import ProviderHttp, ProviderHttpError
from deputy.jwks_rules import JwksError, VerifyingKey, candidate_keys, check_client_jwks

JWKS_MAX_BYTES = 64 * 1024
KEYS_TTL = 3600.0
REFETCH_INTERVAL = 60.0
# The asymmetric algorithms Deputy verifies ID tokens with → (key type, curve). Never "none", never an HMAC.
ID_TOKEN_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),  # RFC 8037; Ed448 is not accepted
    "Ed25519": ("OKP", "Ed25519"),  # RFC 9864's fully specified name
}


@dataclass(slots=True)
class _Held:
    jwks: Mapping[str, Any]
    fetched_at: float
    refetched_at: float | None = None  # the last fetch an unknown kid caused


class ProviderKeys:
    """The JWK Sets of the providers, by provider name."""

    def __init__(self, http: ProviderHttp, ttl: float = KEYS_TTL, refetch_interval: float = REFETCH_INTERVAL) -> None:
        self.http = http
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self._held: dict[str, _Held] = {}
        self.fetches = 0  # how many times a set was asked for (tests and metrics read it)

    async def candidates(self, provider: IdentityProvider, jwks_uri: str, algorithm: str,
                         kid: str | None) -> list[VerifyingKey]:
        """The keys that may have signed with ``algorithm`` and ``kid``; the set is fetched again at most once,
        when none fits and the last such fetch is :data:`REFETCH_INTERVAL` seconds old. Empty: none fits."""
        held = self._held.get(provider.name)
        if held is None or clock.monotonic() - held.fetched_at >= self.ttl:
            held = await self._fetch(provider, jwks_uri, held)
        found = candidate_keys(held.jwks, algorithm, kid, ID_TOKEN_ALGORITHMS)
        if found:
            return found
        now = clock.monotonic()
        if held.refetched_at is not None and now - held.refetched_at < self.refetch_interval:
            return []
        held.refetched_at = now  # before the fetch: concurrent tokens with unknown kids wait for the next interval
        held = await self._fetch(provider, jwks_uri, held)
        return candidate_keys(held.jwks, algorithm, kid, ID_TOKEN_ALGORITHMS)

    async def _fetch(self, provider: IdentityProvider, jwks_uri: str, held: _Held | None) -> _Held:
        self.fetches += 1
        try:
            answer = await self.http.get_json(jwks_uri, JWKS_MAX_BYTES)
            if answer.status != 200:
                raise ProviderHttpError(f"{jwks_uri} answered HTTP {answer.status}")
            jwks = check_client_jwks(answer.document)
        except (ProviderHttpError, JwksError) as exc:
            if held is not None:
                held.fetched_at = clock.monotonic()  # keep what works; ask again only after another TTL or refetch
                return held
            raise ProviderUnavailable(provider.name, "keys_unavailable", f"the JWK Set: {exc}") from None
        fresh = _Held(jwks, clock.monotonic(), held.refetched_at if held is not None else None)
        self._held[provider.name] = fresh
        return fresh
