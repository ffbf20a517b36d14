"""Client metadata a registration request may carry, checked field by field (RFC 7591 §2).

Unknown fields are ignored (RFC 7591 §2: "MUST ignore any client metadata sent by the
client that it does not understand"). What Deputy keeps:

- ``redirect_uris`` (rules in :mod:`deputy.oauth.redirect_uris`), ``application_type``
  (``native`` when omitted, the type of the MCP clients that register dynamically);
- ``token_endpoint_auth_method``: ``none``, ``client_secret_basic`` (the RFC 7591
  default), ``client_secret_post`` or ``private_key_jwt`` (RFC 7523 §2.2), which needs
  ``jwks`` — public keys only — or an https ``jwks_uri``, never both (RFC 7591 §2);
- ``grant_types`` within ``authorization_code`` and ``refresh_token``; ``response_types``
  ``["code"]`` (RFC 7591 §2.1: the two must agree);
- descriptive fields (``client_uri``, ``logo_uri``, ``tos_uri``, ``policy_uri`` as
  https URLs; ``contacts``; ``scope``; ``software_id``, ``software_version``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from deputy.config import is_loopback_http
from deputy.oauth.errors import InvalidClientMetadata
from deputy.oauth.redirect_uris import APPLICATION_TYPES, check_redirect_uris

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token")
URL_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
TEXT_FIELDS = ("scope", "software_id", "software_version")
# RFC 7517 §9.2 / RFC 7518 §6: members that only private or symmetric keys carry.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    client_name: str
    redirect_uris: tuple[str, ...]
    application_type: str
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...]
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    descriptive: Mapping[str, Any] = field(default_factory=dict)


def parse_client_metadata(raw: Mapping[str, Any]) -> ClientMetadata:
    application_type = raw.get("application_type", "native")
    if application_type not in APPLICATION_TYPES:
        raise InvalidClientMetadata("application_type must be native or web")
    redirect_uris = check_redirect_uris(raw.get("redirect_uris"), application_type)
    method = raw.get("token_endpoint_auth_method", "client_secret_basic")  # RFC 7591 §2 default
    if method not in AUTH_METHODS:
        raise InvalidClientMetadata(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    grant_types = raw.get("grant_types", ["authorization_code"])
    if (not isinstance(grant_types, list) or not grant_types
            or not all(isinstance(g, str) and g in GRANT_TYPES for g in grant_types)):
        raise InvalidClientMetadata(f"grant_types may contain only {', '.join(GRANT_TYPES)}")
    if "authorization_code" not in grant_types:
        raise InvalidClientMetadata("grant_types must include authorization_code")
    if raw.get("response_types", ["code"]) != ["code"]:
        raise InvalidClientMetadata('response_types must be ["code"]')
    name = raw.get("client_name") or "Unnamed client"
    if not isinstance(name, str) or len(name) > MAX_TEXT:
        raise InvalidClientMetadata(f"client_name must be a string of at most {MAX_TEXT} characters")
    jwks = public_jwks(raw["jwks"]) if raw.get("jwks") is not None else None
    jwks_uri = _https_url(raw, "jwks_uri")
    if jwks is not None and jwks_uri is not None:
        raise InvalidClientMetadata("jwks and jwks_uri must not both be present")
    if method == "private_key_jwt" and jwks is None and jwks_uri is None:
        raise InvalidClientMetadata("private_key_jwt needs jwks or jwks_uri")
    return ClientMetadata(
        client_name=name,
        redirect_uris=tuple(redirect_uris),
        application_type=application_type,
        token_endpoint_auth_method=method,
        grant_types=tuple(dict.fromkeys(grant_types)),
        jwks=jwks,
        jwks_uri=jwks_uri,
        descriptive=_descriptive(raw),
    )


def public_jwks(value: Any) -> dict[str, Any]:
    """A JWK Set of public keys, or ``InvalidClientMetadata``; private or symmetric keys are refused."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise InvalidClientMetadata("jwks must be a JWK Set with at least one key")
    for key in value["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise InvalidClientMetadata("every key in jwks must be a JWK with kty")
        if key["kty"] == "oct" or PRIVATE_MEMBERS & set(key):
            raise InvalidClientMetadata("jwks must hold public keys only; never send private key material")
    try:
        KeySet.import_key_set(value)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError):
        raise InvalidClientMetadata("jwks holds a key that cannot be read") from None
    return {"keys": [dict(k) for k in value["keys"]]}


def _https_url(raw: Mapping[str, Any], key: str, loopback_ok: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise InvalidClientMetadata(f"{key} must be an https URL")
    try:  # urlsplit raises on a malformed IPv6 literal ("https://[x"), hostname on a bad port
        parts = urlsplit(value)
        secure = parts.scheme == "https" or (loopback_ok and is_loopback_http(value))
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise InvalidClientMetadata(f"{key} must be an https URL") from None
    if not secure or not hostname or "@" in parts.netloc or "#" in value:
        raise InvalidClientMetadata(f"{key} must be an https URL without user information or fragment")
    return value


def _descriptive(raw: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key in URL_FIELDS:
        url = _https_url(raw, key, loopback_ok=True)
        if url is not None:
            kept[key] = url
    for key in TEXT_FIELDS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_TEXT * 5:
            raise InvalidClientMetadata(f"{key} must be a string")
        kept[key] = value
    contacts = raw.get("contacts")
    if contacts is not None:
        if not isinstance(contacts, list) or len(contacts) > 10 or not all(
                isinstance(c, str) and len(c) <= MAX_TEXT for c in contacts):
            raise InvalidClientMetadata("contacts must be a list of strings")
        kept["contacts"] = list(contacts)
    return kept
