"""``credentials = "oauth"``: Deputy as each user's OAuth client toward an upstream MCP server (issue 15).

A server whose upstream has an authorization server of its own is configured with ``credentials = "oauth"`` and,
optionally, ``[servers.NAME.oauth]`` (:data:`UPSTREAM_OAUTH`); Deputy then discovers that authorization server
from the upstream's ``401`` (RFC 9728, RFC 8414), identifies itself to it, and calls the upstream with each user's
own token (:mod:`deputy.connections`). Keys:

- ``client_id`` (and ``client_secret`` or ``private_key``): a client registered for Deputy at that authorization
  server, which ``authorization_server`` must then name. A client is registered at one authorization server
  (RFC 6749 §2); were Deputy to present it to whichever one the upstream's protected resource metadata names
  (RFC 9728 §7.6 — that document is the upstream's to change, or an attacker's who took it over), the token request
  would carry ``Authorization: Basic base64(client_id:secret)`` to ``https://as.attacker.example``. So a
  ``client_id`` without ``authorization_server`` is refused at load, and discovery refuses any other issuer.
  Without a ``client_id`` Deputy uses its own client ID metadata document when the server supports those and
  Deputy's public URL is https, else RFC 7591 dynamic registration (a client registered per issuer, no secret of
  the operator's at stake);
- ``client_auth``: ``client_secret_basic`` (default with a secret), ``client_secret_post``, ``private_key_jwt``
  (RFC 7523 §2.2, with ``private_key``: a private JWK, given like any secret) or ``none`` (default without);
- ``scopes``: the scopes to ask for, instead of the challenge's or the protected resource metadata's;
- ``authorization_server``: the issuer the upstream must name; any other is refused (pinning). Required with a
  ``client_id``, optional otherwise;
- ``trusted_hosts``: host names the operator vouches for: URLs on them are fetched without the SSRF address
  filter (an authorization server on the internal network). Every other URL the upstream names goes through it.

``[connections]`` (:data:`CONNECTIONS`): ``refresh_margin`` (seconds before expiry a token is refreshed, default 60)
and ``flow_ttl`` (how long a started connection may take, default 600). The vault key is ``DEPUTY_VAULT_KEY`` or a
file in the data directory (:mod:`deputy.connections.vault`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deputy.config_values import (
    SECRET,
    ConfigError,
    Table,
    as_table,
    at,
    check_http_url,
    read_choice,
    read_int,
    read_scopes,
    read_strings,
    secret_value,
)

CLIENT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
UPSTREAM_OAUTH = Table(frozenset({"client_id", "client_secret", "client_auth", "private_key", "scopes",
                                  "authorization_server", "trusted_hosts"}),
                       {"client_secret": SECRET, "private_key": SECRET})
CONNECTIONS = Table(frozenset({"refresh_margin", "flow_ttl"}))
HOST_NAME = re.compile(r"\A(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


@dataclass(frozen=True, slots=True)
class UpstreamOAuth:
    """``[servers.NAME.oauth]``; every field optional (an empty table: discover and register everything)."""

    client_id: str | None = None
    client_secret: str | None = None
    client_auth: str = "none"
    private_key: Mapping[str, Any] | None = None  # a private JWK (private_key_jwt)
    scopes: tuple[str, ...] | None = None
    authorization_server: str | None = None
    trusted_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """``[connections]`` and ``DEPUTY_VAULT_KEY``."""

    refresh_margin: int = 60
    flow_ttl: int = 600
    vault_key: str | None = None  # DEPUTY_VAULT_KEY (base64url of 32 bytes); None: the data directory's key file


def upstream_oauth(raw: Mapping[str, Any], where: str, environ: Mapping[str, str], base_dir: Path) -> UpstreamOAuth:
    """``[servers.NAME.oauth]`` (``where`` is the server's path)."""
    where = at(where, "oauth")
    table = as_table(raw.get("oauth", {}), where)
    client_id = table.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not client_id):
        raise ConfigError(at(where, "client_id"), "must be a non-empty string")
    secret = (secret_value(table["client_secret"], at(where, "client_secret"), environ, base_dir)
              if "client_secret" in table else None)
    private_key = _private_key(table, where, environ, base_dir)
    default_auth = "private_key_jwt" if private_key else "client_secret_basic" if secret else "none"
    client_auth = read_choice(table, "client_auth", where, default_auth, CLIENT_AUTH_METHODS)
    if (secret is not None or private_key is not None) and client_id is None:
        raise ConfigError(at(where, "client_id"), "is required with client_secret or private_key")
    if client_auth.startswith("client_secret") and secret is None:
        raise ConfigError(at(where, "client_secret"), f"is required with client_auth = {client_auth!r}")
    if client_auth == "private_key_jwt" and private_key is None:
        raise ConfigError(at(where, "private_key"), "is required with client_auth = 'private_key_jwt'")
    if client_auth == "none" and (secret is not None or private_key is not None):
        raise ConfigError(at(where, "client_auth"), "is 'none', but a client_secret or private_key is set")
    issuer = table.get("authorization_server")
    if issuer is not None:
        issuer = check_http_url(issuer, at(where, "authorization_server"))
    elif client_id is not None:
        raise ConfigError(at(where, "authorization_server"),
                          "is required with client_id: the client is registered at one authorization server, and "
                          "without its issuer here Deputy would send the client (and its secret or key's "
                          "assertions) to whichever authorization server the upstream names")
    scopes = read_scopes(table, "scopes", where, []) if "scopes" in table else None
    hosts = read_strings(table, "trusted_hosts", where, what="host names")
    for index, host in enumerate(hosts):
        if not HOST_NAME.match(host) and not _is_ip_literal(host):
            raise ConfigError(at(at(where, "trusted_hosts"), index), "must be a lower-case host name or IP address")
    return UpstreamOAuth(client_id=client_id, client_secret=secret, client_auth=client_auth, private_key=private_key,
                         scopes=scopes or None, authorization_server=issuer, trusted_hosts=frozenset(hosts))


def connection_settings(raw: Mapping[str, Any], environ: Mapping[str, str]) -> ConnectionSettings:
    """``[connections]`` and ``DEPUTY_VAULT_KEY``."""
    table = as_table(raw.get("connections", {}), "connections")
    return ConnectionSettings(
        refresh_margin=read_int(table, "refresh_margin", "connections", 60, 0, 3600, digits=True),
        flow_ttl=read_int(table, "flow_ttl", "connections", 600, 60, 3600, digits=True),
        vault_key=environ.get("DEPUTY_VAULT_KEY") or None,
    )


def _private_key(table: Mapping[str, Any], where: str, environ: Mapping[str, str],
                 base_dir: Path) -> Mapping[str, Any] | None:
    if "private_key" not in table:
        return None
    key = at(where, "private_key")
    text = secret_value(table["private_key"], key, environ, base_dir)
    try:
        jwk = json.loads(text)
    except ValueError:
        raise ConfigError(key, "must be a private JWK (JSON)") from None
    if not isinstance(jwk, dict) or jwk.get("kty") not in ("EC", "RSA", "OKP") or "d" not in jwk:
        raise ConfigError(key, "must be a private EC, RSA or OKP JWK (with 'd')")
    return jwk


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
