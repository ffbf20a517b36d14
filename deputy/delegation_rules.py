"""Whom Deputy lets act for whom, and which outside issuers it believes: ``[delegation]`` and
``[[trusted_issuers]]`` of ``deputy.toml`` (a bad value is a :class:`~deputy.config_values.ConfigError` naming
its full path, like every other setting).

- ``[delegation]``: ``max_depth`` (actors in one chain, default 4), ``token_ttl`` (the
  longest life of an exchanged token, default 300 s; RFC 8693 tokens are short-lived),
  and ``[[delegation.may_act]]`` rules: a token issued to ``client`` (``"*"``: any
  client) carries ``may_act`` naming ``actors``, the clients that may exchange it to
  act for its subject (RFC 8693 §4.4). A token a user consented to also names the
  client she consented to.
- ``[[trusted_issuers]]``: an outside issuer — an enterprise IdP or a workload identity
  provider — with its keys (``jwks_uri`` or ``jwks_file``), the audience its JWTs
  must carry (default: Deputy's issuer), the algorithms allowed, and what its JWTs
  may be used for: ``subject_token`` (RFC 8693), ``workload`` (RFC 7523 jwt-bearer,
  MCP workload identity federation) and ``id_jag`` (enterprise-managed authorization).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deputy.config_values import (
    ConfigError,
    Entries,
    Table,
    as_table,
    as_tables,
    at,
    check_http_url,
    check_jwks,
    check_known,
    read_int,
    read_json_file,
    read_number,
    read_str,
    read_strings,
    read_tables,
)
from deputy.jwks_rules import ALGORITHMS

PURPOSES = ("subject_token", "workload", "id_jag")
# Asymmetric only, as for client assertions: an HMAC "verified" with a published key would be forgeable by anyone.
ISSUER_ALGORITHMS = tuple(ALGORITHMS)
TRUSTED_ISSUER_KEYS = frozenset({"issuer", "jwks_uri", "jwks_file", "audience", "algorithms", "accept",
                                 "jwks_refresh_seconds"})
TRUSTED_ISSUER = Table(TRUSTED_ISSUER_KEYS)
MAY_ACT = Table(frozenset({"client", "actors"}))
DELEGATION = Table(frozenset({"max_depth", "token_ttl", "may_act"}), {"may_act": Entries(MAY_ACT)})
# A token naming a key an issuer's cached set lacks refetches it at most this often (``jwks_refresh_seconds``).
JWKS_REFRESH_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class MayActRule:
    client: str  # the client a token was issued to, or "*"
    actors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DelegationRules:
    max_depth: int = 4
    token_ttl: int = 300
    may_act: tuple[MayActRule, ...] = ()

    def actors_for_any_client(self) -> tuple[str, ...]:
        """The clients the ``client = "*"`` rules name (for tokens no Deputy client holds)."""
        return tuple(dict.fromkeys(a for rule in self.may_act if rule.client == "*" for a in rule.actors))

    def actors_for(self, client_id: str) -> tuple[str, ...]:
        """The clients that may act for the subject of a token issued to ``client_id``."""
        found: dict[str, None] = {}
        for rule in self.may_act:
            if rule.client in ("*", client_id):
                found.update(dict.fromkeys(rule.actors))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    purposes: frozenset[str]
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    # A token naming a key the cached set lacks makes Deputy fetch the set again, at most this often.
    jwks_refresh_seconds: float = JWKS_REFRESH_INTERVAL


def delegation_rules(raw: Any) -> DelegationRules:
    table = as_table(raw, "delegation")
    check_known(table, "delegation", DELEGATION.keys)
    where = at("delegation", "may_act")
    return DelegationRules(
        max_depth=read_int(table, "max_depth", "delegation", 4, 1, 16),
        token_ttl=read_int(table, "token_ttl", "delegation", 300, 10, 3600),
        may_act=tuple(_may_act(rule, at(where, index))
                      for index, rule in enumerate(read_tables(table, "may_act", "delegation"))),
    )


def _may_act(rule: Any, where: str) -> MayActRule:
    """One ``[[delegation.may_act]]`` rule (RFC 8693 §4.4): the clients that may act for a token's subject."""
    if isinstance(rule, dict):
        check_known(rule, where, MAY_ACT.keys)
    if not isinstance(rule, dict) or set(rule) != MAY_ACT.keys:
        raise ConfigError(where, 'must be a table with client (a client id or "*") and actors')
    if not isinstance(rule["client"], str) or not rule["client"]:
        raise ConfigError(at(where, "client"), 'must be a client id or "*"')
    return MayActRule(rule["client"], read_strings(rule, "actors", where, non_empty=True, what="client ids"))


def trusted_issuers(raw: Any, default_audience: str, base_dir: Path) -> tuple[TrustedIssuer, ...]:
    found = tuple(_trusted_issuer(at("trusted_issuers", i), entry, default_audience, base_dir)
                  for i, entry in enumerate(as_tables(raw, "trusted_issuers")))
    names = [t.issuer for t in found]
    if len(set(names)) != len(names):
        raise ConfigError("trusted_issuers", "each issuer may appear once")
    if default_audience in names:
        raise ConfigError("trusted_issuers", "Deputy's own issuer is not an outside issuer")
    return found


def _trusted_issuer(where: str, raw: Any, default_audience: str, base_dir: Path) -> TrustedIssuer:
    table = as_table(raw, where)
    check_known(table, where, TRUSTED_ISSUER_KEYS)
    issuer = table.get("issuer")
    if not isinstance(issuer, str) or not issuer or len(issuer) > 255:
        raise ConfigError(at(where, "issuer"), "must be the issuer identifier exactly as its JWTs carry it "
                                               "(at most 255 characters)")
    jwks_uri, jwks = _issuer_keys(table, where, base_dir)
    return TrustedIssuer(
        issuer=issuer,
        audience=read_str(table, "audience", where, default_audience),
        algorithms=read_strings(table, "algorithms", where, ["ES256", "RS256"], choices=ISSUER_ALGORITHMS,
                                non_empty=True, what="algorithms"),
        purposes=frozenset(read_strings(table, "accept", where, choices=PURPOSES, non_empty=True, what="purposes")),
        jwks=jwks,
        jwks_uri=jwks_uri,
        jwks_refresh_seconds=read_number(table, "jwks_refresh_seconds", where, JWKS_REFRESH_INTERVAL, 1, 3600,
                                         unit="seconds"),
    )


def _issuer_keys(raw: Mapping[str, Any], where: str, base_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The issuer's keys: fetched from ``jwks_uri``, or read now from ``jwks_file`` (relative to the configuration
    file); exactly one of them."""
    if ("jwks_uri" in raw) == ("jwks_file" in raw):
        raise ConfigError(where, "set exactly one of jwks_uri or jwks_file")
    if "jwks_uri" in raw:
        return check_http_url(raw["jwks_uri"], at(where, "jwks_uri")), None
    key = at(where, "jwks_file")
    location = base_dir / Path(str(raw["jwks_file"])).expanduser()
    return None, check_jwks(read_json_file(location, key), key, inline=False)
