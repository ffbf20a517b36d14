"""Whom Deputy trusts as a client: the registration and client-metadata-document policies.

Parsed from ``[registration]`` and ``[client_documents]`` of ``deputy.toml`` into frozen
values (a bad value is a :class:`~deputy.config_values.ConfigError` naming its full path, like every
other setting).

- Dynamic client registration (RFC 7591; deprecated by MCP 2026-07-28 but what many
  clients still use): ``off``; ``loopback`` (native clients whose redirect URIs are
  all http loopback); ``allowlist`` (redirect hosts the operator lists, a
  ``software_statement`` signed by a trusted publisher, or an initial access token);
  ``approval`` (anyone may register, nobody is served until an admin approves).
- Client ID Metadata Documents (MCP 2026-07-28 "Client ID Metadata Documents"): the
  ``client_id`` is an https URL Deputy fetches; domains allowed, denied, or unknown
  (refused or held for approval). Development mode admits ``http`` loopback documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deputy.config_values import (
    ENV_SECRET,
    ConfigError,
    Entries,
    Table,
    as_table,
    at,
    read_bool,
    read_choice,
    read_json_file,
    read_number,
    read_str,
    read_strings,
    read_tables,
    secret_value,
)

REGISTRATION_MODES = ("off", "loopback", "allowlist", "approval")
UNKNOWN_DOMAIN_ACTIONS = ("refuse", "approval")
PUBLISHER = Table(frozenset({"issuer", "jwks", "jwks_file"}))
# Initial access tokens come literally or from the environment, never from a file (see registration_policy).
REGISTRATION = Table(frozenset({"mode", "allowed_redirect_hosts", "trusted_publishers", "initial_access_tokens",
                                "rate_limit_per_minute"}),
                     {"trusted_publishers": Entries(PUBLISHER), "initial_access_tokens": Entries(ENV_SECRET)})
CLIENT_DOCUMENTS = Table(frozenset({"enabled", "allowed_domains", "denied_domains", "unknown_domains",
                                    "development_mode", "cache_min_seconds", "cache_max_seconds", "max_bytes",
                                    "timeout_seconds", "ca_file"}))


@dataclass(frozen=True, slots=True)
class TrustedPublisher:
    """Signs software statements (RFC 7591 §2.3) for clients it vouches for."""

    issuer: str
    jwks: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    mode: str = "loopback"
    allowed_redirect_hosts: tuple[str, ...] = ()
    trusted_publishers: tuple[TrustedPublisher, ...] = ()
    initial_access_tokens: tuple[str, ...] = ()
    rate_limit_per_minute: int = 10

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True, slots=True)
class ClientDocumentPolicy:
    enabled: bool = True
    allowed_domains: tuple[str, ...] = ()
    denied_domains: tuple[str, ...] = ()
    unknown_domains: str = "refuse"
    development_mode: bool = False
    cache_min_seconds: int = 60
    cache_max_seconds: int = 24 * 3600
    max_bytes: int = 5 * 1024
    timeout_seconds: float = 3.0
    ca_file: str | None = None  # CA bundle replacing the system's, for a development or test CA

    def domain_verdict(self, host: str) -> str:
        """``allowed``, ``denied`` or ``unknown`` for a document's host (suffix rules: ``*.example.com``)."""
        host = host.lower().rstrip(".")
        if any(_matches(host, rule) for rule in self.denied_domains):
            return "denied"
        if any(_matches(host, rule) for rule in self.allowed_domains):
            return "allowed"
        return "unknown"


def _matches(host: str, rule: str) -> bool:
    rule = rule.lower().rstrip(".")
    if rule.startswith("*."):
        return host.endswith(rule[1:])
    return host == rule


def _publisher(where: str, raw: Any) -> TrustedPublisher:
    """A software statement publisher (RFC 7591 §2.3): its issuer and its keys, inline or from a file."""
    if not isinstance(raw, dict) or not isinstance(raw.get("issuer"), str):
        raise ConfigError(where, "must be a table with issuer and jwks or jwks_file")
    if ("jwks" in raw) == ("jwks_file" in raw):
        raise ConfigError(where, "set exactly one of jwks (inline) or jwks_file (path)")
    jwks = raw.get("jwks")
    if jwks is None:
        # Relative to the working directory, as it always was (unlike the other key files).
        jwks = read_json_file(Path(read_str(raw, "jwks_file", where)), at(where, "jwks_file"))
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ConfigError(at(where, "jwks"), "must be a JWK Set with at least one key")
    return TrustedPublisher(issuer=raw["issuer"], jwks=jwks)


def registration_policy(raw: Any, environ: Mapping[str, str]) -> RegistrationPolicy:
    table = as_table(raw, "registration")
    where = "registration"
    publishers = read_tables(table, "trusted_publishers", where)
    tokens = table.get("initial_access_tokens", [])
    if not isinstance(tokens, list):
        raise ConfigError(at(where, "initial_access_tokens"), "must be a list")
    return RegistrationPolicy(
        mode=read_choice(table, "mode", where, "loopback", REGISTRATION_MODES),
        allowed_redirect_hosts=tuple(h.lower() for h in read_strings(table, "allowed_redirect_hosts", where)),
        trusted_publishers=tuple(_publisher(at(at(where, "trusted_publishers"), i), publisher)
                                 for i, publisher in enumerate(publishers)),
        initial_access_tokens=tuple(
            # No file form here, and never an empty token.
            secret_value(t, at(at(where, "initial_access_tokens"), i), environ, None, non_empty=True)
            for i, t in enumerate(tokens)),
        rate_limit_per_minute=int(read_number(table, "rate_limit_per_minute", where, 10, 1, 10_000)),
    )


def client_document_policy(raw: Any) -> ClientDocumentPolicy:
    where = "client_documents"
    table = as_table(raw, where)
    ca_file = table.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not Path(ca_file).is_file()):
        raise ConfigError(at(where, "ca_file"), "must be the path of a readable PEM file of CA certificates")
    low = int(read_number(table, "cache_min_seconds", where, 60, 0, 7 * 24 * 3600))
    high = int(read_number(table, "cache_max_seconds", where, 24 * 3600, 0, 30 * 24 * 3600))
    if low > high:
        raise ConfigError(at(where, "cache_min_seconds"), "must not exceed cache_max_seconds")
    return ClientDocumentPolicy(
        enabled=read_bool(table, "enabled", where, True),
        allowed_domains=read_strings(table, "allowed_domains", where),
        denied_domains=read_strings(table, "denied_domains", where),
        unknown_domains=read_choice(table, "unknown_domains", where, "refuse", UNKNOWN_DOMAIN_ACTIONS),
        development_mode=read_bool(table, "development_mode", where, False),
        cache_min_seconds=low,
        cache_max_seconds=high,
        max_bytes=int(read_number(table, "max_bytes", where, 5 * 1024, 256, 64 * 1024)),
        timeout_seconds=read_number(table, "timeout_seconds", where, 3.0, 0.1, 30.0),
        ca_file=ca_file,
    )
