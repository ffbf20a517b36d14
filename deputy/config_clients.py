"""``[[clients]]``: OAuth clients registered in the configuration file (RFC 7591 §2 metadata, checked at start).

A static client's redirect URIs follow the rule every registration path follows, among them never a URI on
Deputy's own host (:mod:`deputy.cookie_scope`); ``private_key_jwt`` clients carry their public keys (RFC 7523 §2.2).
An entry's keys are :data:`CLIENT`; an inline ``jwks`` is a JWK Set, whose members RFC 7517 §5 leaves open, judged
by :mod:`deputy.jwks_rules` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deputy.config_values import (
    ConfigError,
    Table,
    as_table,
    at,
    check_jwks,
    read_choice,
    read_json_file,
    read_str,
    read_strings,
    read_tables,
)
from deputy.cookie_scope import redirect_shares_cookies

CLIENT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
STATIC_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE, JWT_BEARER)
CLIENT = Table(frozenset({"client_id", "client_name", "redirect_uris", "token_endpoint_auth_method", "client_secret",
                          "grant_types", "jwks", "jwks_file"}))


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


def static_clients(config: Mapping[str, Any], base_dir: Path, public_url: str) -> tuple[StaticClient, ...]:
    """``[[clients]]`` of the configuration: every entry, each named by its index."""
    entries = read_tables(config, "clients", "")
    return tuple(static_client(index, entry, base_dir, public_url) for index, entry in enumerate(entries))


def static_client(index: int, raw: Any, base_dir: Path, public_url: str) -> StaticClient:
    where = at("clients", index)
    table = as_table(raw, where)
    method = read_choice(table, "token_endpoint_auth_method", where, "none", CLIENT_AUTH_METHODS)
    grant_types = read_strings(table, "grant_types", where, ["authorization_code", "refresh_token"],
                               choices=STATIC_GRANT_TYPES, non_empty=True, what="grant types")
    if {"client_credentials", TOKEN_EXCHANGE} & set(grant_types) and method == "none":
        raise ConfigError(at(where, "grant_types"), "client_credentials and token exchange need a client that "
                                                    "authenticates (a client_secret method or private_key_jwt)")
    return StaticClient(
        client_id=read_str(table, "client_id", where),
        client_name=read_str(table, "client_name", where, table.get("client_id")),
        redirect_uris=_redirect_uris(table, where, "authorization_code" in grant_types, public_url),
        token_endpoint_auth_method=method,
        client_secret=_client_secret(table, where, method),
        grant_types=tuple(dict.fromkeys(grant_types)),
        jwks=_client_jwks(table, where, method, base_dir),
    )


def _client_secret(raw: Mapping[str, Any], where: str, method: str) -> str | None:
    """Given exactly when the client authenticates with a secret (RFC 6749 §2.3.1)."""
    secret = raw.get("client_secret")
    if (method in ("client_secret_basic", "client_secret_post")) != (secret is not None):
        raise ConfigError(at(where, "client_secret"), "is required exactly when the client authenticates with a "
                                                      "secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(at(where, "client_secret"), "must be a non-empty string")
    return secret


def _redirect_uris(raw: Mapping[str, Any], where: str, needed: bool, public_url: str) -> tuple[str, ...]:
    """Required for ``authorization_code``; none of them may receive Deputy's cookies (:mod:`deputy.cookie_scope`)."""
    key = at(where, "redirect_uris")
    uris = raw.get("redirect_uris", [])
    if not isinstance(uris, list) or (needed and not uris):
        raise ConfigError(key, "must be a non-empty list of URLs (for authorization_code)")
    for index, uri in enumerate(uris):
        if not isinstance(uri, str):
            raise ConfigError(at(key, index), "must be a URL")
        problem = redirect_shares_cookies(uri, public_url)
        if problem is not None:
            raise ConfigError(at(key, index), problem)
    return tuple(uris)


def _client_jwks(raw: Mapping[str, Any], where: str, method: str, base_dir: Path) -> dict[str, Any] | None:
    """The client's public keys: inline ``jwks`` or ``jwks_file`` (relative to the configuration file)."""
    inline, file = raw.get("jwks"), raw.get("jwks_file")
    if method != "private_key_jwt":
        if inline is not None or file is not None:
            raise ConfigError(at(where, "jwks"), "is only used with token_endpoint_auth_method = \"private_key_jwt\"")
        return None
    if (inline is None) == (file is None):
        raise ConfigError(at(where, "jwks"), "private_key_jwt needs exactly one of 'jwks' or 'jwks_file'")
    if file is None:
        return check_jwks(inline, at(where, "jwks"), inline=True)
    key = at(where, "jwks_file")
    if not isinstance(file, str) or not file:
        raise ConfigError(key, "must be a path to a JWK Set file")
    return check_jwks(read_json_file(base_dir / Path(file).expanduser(), key), key, inline=False)
