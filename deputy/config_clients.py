"""``[[clients]]``: OAuth clients registered in the configuration file (RFC 7591 §2 metadata, checked at start).

A static client's redirect URIs follow the rule every registration path follows, among them never a URI on
Deputy's own host (:mod:`deputy.cookie_scope`); ``private_key_jwt`` clients carry their public keys (RFC 7523 §2.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deputy import bounded_json
from deputy.config_values import ConfigError, read_str
from deputy.cookie_scope import redirect_shares_cookies

CLIENT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
STATIC_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE, JWT_BEARER)


@dataclass(frozen=True, slots=True)
class StaticClient:
    """A client registered in the configuration file."""

    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str = "none"
    client_secret: str | None = None
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    jwks: Mapping[str, Any] | None = None  # public keys for private_key_jwt (RFC 7523 §2.2)


def static_client(index: int, raw: Any, base_dir: Path, public_url: str) -> StaticClient:
    path = f"clients[{index}]."
    if not isinstance(raw, dict):
        raise ConfigError(f"clients[{index}]", "must be a table")
    method = raw.get("token_endpoint_auth_method", "none")
    if method not in CLIENT_AUTH_METHODS:
        raise ConfigError(f"{path}token_endpoint_auth_method", f"must be one of {', '.join(CLIENT_AUTH_METHODS)}")
    secret = raw.get("client_secret")
    if (method in ("client_secret_basic", "client_secret_post")) != (secret is not None):
        raise ConfigError(f"{path}client_secret", "is required exactly when the client authenticates with a secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(f"{path}client_secret", "must be a non-empty string")
    grant_types = raw.get("grant_types", ["authorization_code", "refresh_token"])
    if (not isinstance(grant_types, list) or not grant_types
            or not all(isinstance(g, str) and g in STATIC_GRANT_TYPES for g in grant_types)):
        raise ConfigError(f"{path}grant_types", f"must be a non-empty list of {', '.join(STATIC_GRANT_TYPES)}")
    if {"client_credentials", TOKEN_EXCHANGE} & set(grant_types) and method == "none":
        raise ConfigError(f"{path}grant_types", "client_credentials and token exchange need a client that "
                                                "authenticates (a client_secret method or private_key_jwt)")
    uris = raw.get("redirect_uris", [])
    needs_uris = "authorization_code" in grant_types
    if not isinstance(uris, list) or (needs_uris and not uris) or not all(isinstance(u, str) for u in uris):
        raise ConfigError(f"{path}redirect_uris", "must be a non-empty list of URLs (for authorization_code)")
    for uri in uris:
        problem = redirect_shares_cookies(uri, public_url)
        if problem is not None:
            raise ConfigError(f"{path}redirect_uris", problem)
    return StaticClient(
        client_id=read_str(raw, "client_id", path),
        client_name=read_str(raw, "client_name", path, raw.get("client_id")),
        redirect_uris=tuple(uris),
        token_endpoint_auth_method=method,
        client_secret=secret,
        grant_types=tuple(dict.fromkeys(grant_types)),
        jwks=_client_jwks(raw, path, method, base_dir),
    )


def _client_jwks(raw: Mapping[str, Any], path: str, method: str, base_dir: Path) -> dict[str, Any] | None:
    """The client's public keys: inline ``jwks`` or ``jwks_file`` (relative to the configuration file)."""
    inline, file = raw.get("jwks"), raw.get("jwks_file")
    if method != "private_key_jwt":
        if inline is not None or file is not None:
            raise ConfigError(f"{path}jwks", "is only used with token_endpoint_auth_method = \"private_key_jwt\"")
        return None
    if (inline is None) == (file is None):
        raise ConfigError(f"{path}jwks", "private_key_jwt needs exactly one of 'jwks' or 'jwks_file'")
    key = f"{path}jwks"
    if file is not None:
        key = f"{path}jwks_file"
        if not isinstance(file, str) or not file:
            raise ConfigError(key, "must be a path to a JWK Set file")
        location = base_dir / Path(file).expanduser()
        try:
            inline = bounded_json.loads(location.read_text())
        except OSError as exc:
            raise ConfigError(key, f"cannot read {location}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(key, f"{location} is not JSON") from None
    from deputy.oauth.client_assertions import JwksError, check_client_jwks

    try:
        return check_client_jwks(inline)
    except JwksError as exc:
        raise ConfigError(key, str(exc)) from None
