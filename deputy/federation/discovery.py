"""An identity provider's metadata: ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0).

Fetched on first use, through :mod:`deputy.federation.provider_http` (no redirect, at most
:data:`MAX_METADATA_BYTES`), and believed only when:

- ``issuer`` is exactly the configured issuer, as a string (Discovery §4.3): a document for another issuer is
  refused, so a provider cannot speak for another (RFC 9700 §4.4, mix-up);
- ``authorization_endpoint``, ``token_endpoint`` and ``jwks_uri`` are present (Discovery §3) and https URLs —
  http only while the issuer itself is http on a loopback address, and then only on loopback — without fragment;
- ``response_types_supported`` holds ``code`` (Core §3.1.2.1: the authorization code flow is all Deputy uses);
- ``code_challenge_methods_supported`` holds ``S256`` (RFC 8414 §2; RFC 7636 §4.2): a provider that does not say
  it checks PKCE is refused, as RFC 9700 §2.1.1 asks — unless the document leaves the list out altogether and the
  operator says the provider checks S256 all the same (``assume_pkce_s256``: Microsoft Entra ID). A list that
  names methods without S256 is refused whatever the setting: there the provider has said what it does.

A document that passes is kept for :data:`METADATA_TTL`; a failure is a
:class:`~deputy.federation.errors.ProviderUnavailable` naming the provider and the problem, and is not kept: the
next sign-in tries again. Nothing is fetched at start, so start-up never waits for, or fails with, a provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from deputy import clock
from deputy.config_identity_providers import IdentityProvider, is_loopback_url
from deputy.federation.errors import ProviderUnavailable, shown
from deputy.federation.provider_http import ProviderHttp, ProviderHttpError

MAX_METADATA_BYTES = 64 * 1024
METADATA_TTL = 3600.0
WELL_KNOWN = "/.well-known/openid-configuration"
MAX_LISTED = 64  # entries of a *_supported list read; a longer one is cut (only membership is asked of them)


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    id_token_signing_algs: tuple[str, ...]
    token_endpoint_auth_methods: tuple[str, ...]
    token_endpoint_auth_signing_algs: tuple[str, ...] | None  # None: not advertised
    iss_parameter_supported: bool  # RFC 9207 §3: authorization responses carry iss


def discovery_url(issuer: str) -> str:
    """Discovery §4.1: the well-known path appended to the issuer, after any trailing slash is removed."""
    return issuer.rstrip("/") + WELL_KNOWN


def read_metadata(document: Any, provider: IdentityProvider) -> ProviderMetadata:
    """The metadata in ``document`` as the module docstring requires it, else :class:`ProviderUnavailable`."""
    def refuse(problem: str) -> ProviderUnavailable:
        return ProviderUnavailable(provider.name, "discovery_failed", problem)

    if not isinstance(document, dict):
        raise refuse("the discovery document is not a JSON object")
    if document.get("issuer") != provider.issuer:  # Discovery §4.3: exactly, as strings
        raise refuse(f"the discovery document is for issuer {shown(document.get('issuer'))!r}, "
                     f"not {provider.issuer!r}")
    endpoints = {name: _endpoint(document.get(name), name, provider, refuse)
                 for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")}
    if "code" not in _strings(document, "response_types_supported", refuse, ()):
        raise refuse("response_types_supported does not include code")
    assumed = provider.assume_pkce_s256 and "code_challenge_methods_supported" not in document
    if not assumed and "S256" not in _strings(document, "code_challenge_methods_supported", refuse, ()):
        raise refuse("code_challenge_methods_supported does not include S256 (PKCE, RFC 7636)")
    signing = document.get("token_endpoint_auth_signing_alg_values_supported")
    return ProviderMetadata(
        issuer=provider.issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        # Core §3.1.3.7 item 7: RS256 is the default; Discovery §3 makes the list required.
        id_token_signing_algs=_strings(document, "id_token_signing_alg_values_supported", refuse, ("RS256",)),
        # Discovery §3: client_secret_basic when the provider does not say.
        token_endpoint_auth_methods=_strings(document, "token_endpoint_auth_methods_supported", refuse,
                                             ("client_secret_basic",)),
        token_endpoint_auth_signing_algs=None if signing is None else _strings(
            document, "token_endpoint_auth_signing_alg_values_supported", refuse, ()),
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
    )


def _strings(document: dict[str, Any], name: str, refuse: Callable[[str], ProviderUnavailable],
             default: tuple[str, ...]) -> tuple[str, ...]:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise refuse(f"{name} is not a list of strings")
    return tuple(value[:MAX_LISTED])


def _endpoint(value: Any, name: str, provider: IdentityProvider,
              refuse: Callable[[str], ProviderUnavailable]) -> str:
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or parts.fragment or len(value) > 2048:
        raise refuse(f"{name} is missing or not an absolute URL")
    loopback = urlsplit(provider.issuer).scheme == "http"  # the configuration allows http only on loopback
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback and is_loopback_url(value)):
        raise refuse(f"{name} must be an https URL")
    return str(value)


@dataclass(slots=True)
class _Cached:
    metadata: ProviderMetadata
    fetched_at: float


class Discovery:
    """Each provider's metadata, fetched when first needed and kept :data:`METADATA_TTL` seconds."""

    def __init__(self, http: ProviderHttp, ttl: float = METADATA_TTL) -> None:
        self.http = http
        self.ttl = ttl
        self._cache: dict[str, _Cached] = {}

    async def metadata(self, provider: IdentityProvider) -> ProviderMetadata:
        cached = self._cache.get(provider.name)
        if cached is not None and cached.metadata.issuer == provider.issuer and \
                clock.monotonic() - cached.fetched_at < self.ttl:
            return cached.metadata
        url = discovery_url(provider.issuer)
        try:
            answer = await self.http.get_json(url, MAX_METADATA_BYTES)
        except ProviderHttpError as exc:
            raise ProviderUnavailable(provider.name, "discovery_failed", str(exc)) from None
        if answer.status != 200:
            raise ProviderUnavailable(provider.name, "discovery_failed", f"{url} answered HTTP {answer.status}")
        metadata = read_metadata(answer.document, provider)
        self._cache[provider.name] = _Cached(metadata, clock.monotonic())
        return metadata
