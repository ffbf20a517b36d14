"""Whom Deputy lets act for whom, and which outside issuers it believes: ``[delegation]`` and
``[[trusted_issuers]]`` of ``deputy.toml`` (errors name the key, like :mod:`deputy.config`).

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
from urllib.parse import urlsplit

from deputy import bounded_json
from deputy.client_policies import PolicyError

PURPOSES = ("subject_token", "workload", "id_jag")
# Asymmetric only: an HMAC "verified" with a published key would be forgeable by anyone.
ISSUER_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA", "Ed25519")  # as for client assertions
# A token naming a key an issuer's cached set lacks refetches it at most this often (``jwks_refresh_seconds``).
JWKS_REFRESH_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class MayActRule:
    client: str  # the client a token was issued to, or "*"
    actors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DelegationPolicy:
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


def delegation_policy(raw: Any) -> DelegationPolicy:
    if not isinstance(raw, dict):
        raise PolicyError("delegation", "must be a table")
    for key in raw:
        if key not in ("max_depth", "token_ttl", "may_act"):
            raise PolicyError(f"delegation.{key}", "is not a known setting")
    rules_raw = raw.get("may_act", [])
    if not isinstance(rules_raw, list):
        raise PolicyError("delegation.may_act", "must be an array of tables ([[delegation.may_act]])")
    rules = []
    for index, rule in enumerate(rules_raw):
        key = f"delegation.may_act[{index}]"
        if not isinstance(rule, dict) or set(rule) != {"client", "actors"}:
            raise PolicyError(key, 'must be a table with client (a client id or "*") and actors')
        actors = rule["actors"]
        if not isinstance(rule["client"], str) or not rule["client"]:
            raise PolicyError(f"{key}.client", 'must be a client id or "*"')
        if not isinstance(actors, list) or not actors or not all(isinstance(a, str) and a for a in actors):
            raise PolicyError(f"{key}.actors", "must be a non-empty list of client ids")
        rules.append(MayActRule(rule["client"], tuple(actors)))
    return DelegationPolicy(
        max_depth=_integer(raw, "max_depth", 4, 1, 16),
        token_ttl=_integer(raw, "token_ttl", 300, 10, 3600),
        may_act=tuple(rules),
    )


def trusted_issuers(raw: Any, default_audience: str, base_dir: Path) -> tuple[TrustedIssuer, ...]:
    if not isinstance(raw, list):
        raise PolicyError("trusted_issuers", "must be an array of tables ([[trusted_issuers]])")
    found = tuple(_trusted_issuer(i, entry, default_audience, base_dir) for i, entry in enumerate(raw))
    names = [t.issuer for t in found]
    if len(set(names)) != len(names):
        raise PolicyError("trusted_issuers", "each issuer may appear once")
    if default_audience in names:
        raise PolicyError("trusted_issuers", "Deputy's own issuer is not an outside issuer")
    return found


def _trusted_issuer(index: int, raw: Any, default_audience: str, base_dir: Path) -> TrustedIssuer:
    key = f"trusted_issuers[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(key, "must be a table")
    known = {"issuer", "jwks_uri", "jwks_file", "audience", "algorithms", "accept", "jwks_refresh_seconds"}
    for name in raw:
        if name not in known:
            raise PolicyError(f"{key}.{name}", "is not a known setting")
    issuer = raw.get("issuer")
    if not isinstance(issuer, str) or not issuer or len(issuer) > 255:
        raise PolicyError(f"{key}.issuer", "must be the issuer identifier exactly as its JWTs carry it "
                                           "(at most 255 characters)")
    if ("jwks_uri" in raw) == ("jwks_file" in raw):
        raise PolicyError(key, "set exactly one of jwks_uri or jwks_file")
    jwks: Mapping[str, Any] | None = None
    jwks_uri = raw.get("jwks_uri")
    if jwks_uri is not None:
        parts = urlsplit(jwks_uri) if isinstance(jwks_uri, str) else None
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            raise PolicyError(f"{key}.jwks_uri", "must be an http(s) URL")
    else:
        location = base_dir / Path(str(raw["jwks_file"])).expanduser()
        try:
            jwks = bounded_json.loads(location.read_text())
        except (OSError, ValueError) as exc:
            raise PolicyError(f"{key}.jwks_file", f"cannot be read as a JWK Set: {exc}") from None
        from deputy.oauth.client_assertions import JwksError, check_client_jwks

        try:
            check_client_jwks(jwks)
        except JwksError as exc:
            raise PolicyError(f"{key}.jwks_file", str(exc)) from None
    algorithms = raw.get("algorithms", ["ES256", "RS256"])
    if (not isinstance(algorithms, list) or not algorithms
            or not all(isinstance(a, str) and a in ISSUER_ALGORITHMS for a in algorithms)):
        raise PolicyError(f"{key}.algorithms", f"must be a non-empty list from {', '.join(ISSUER_ALGORITHMS)}")
    purposes = raw.get("accept")
    if (not isinstance(purposes, list) or not purposes
            or not all(isinstance(p, str) and p in PURPOSES for p in purposes)):
        raise PolicyError(f"{key}.accept", f"must be a non-empty list from {', '.join(PURPOSES)}")
    audience = raw.get("audience", default_audience)
    if not isinstance(audience, str) or not audience:
        raise PolicyError(f"{key}.audience", "must be a string")
    refresh = raw.get("jwks_refresh_seconds", JWKS_REFRESH_INTERVAL)
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not 1 <= refresh <= 3600:
        raise PolicyError(f"{key}.jwks_refresh_seconds", "must be a number of seconds from 1 to 3600")
    return TrustedIssuer(issuer=issuer, audience=audience, algorithms=tuple(algorithms),
                         purposes=frozenset(purposes), jwks=jwks, jwks_uri=jwks_uri,
                         jwks_refresh_seconds=float(refresh))


def _integer(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PolicyError(f"delegation.{key}", f"must be an integer from {lo} to {hi}")
    return value
