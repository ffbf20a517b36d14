"""Whom Deputy trusts as a client: the registration and client-metadata-document policies.

Parsed from ``[registration]`` and ``[client_documents]`` of ``deputy.toml`` into frozen
values (errors name the key, like the rest of :mod:`deputy.config`).

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

from deputy import bounded_json

REGISTRATION_MODES = ("off", "loopback", "allowlist", "approval")
UNKNOWN_DOMAIN_ACTIONS = ("refuse", "approval")


class PolicyError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


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


def _strings(raw: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{path}{key}", "must be a list of strings")
    return tuple(value)


def _number(raw: Mapping[str, Any], key: str, path: str, default: float, lo: float, hi: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise PolicyError(f"{path}{key}", f"must be a number from {lo:g} to {hi:g}")
    return float(value)


def _secret(spec: Any, key: str, environ: Mapping[str, str]) -> str:
    if isinstance(spec, str) and spec:
        return spec
    if isinstance(spec, dict) and set(spec) == {"env"} and isinstance(spec["env"], str):
        if not environ.get(spec["env"]):
            raise PolicyError(key, f"environment variable {spec['env']} is not set")
        return environ[spec["env"]]
    raise PolicyError(key, 'must be a string or {env = "VARIABLE"}')


def _publisher(index: int, raw: Any) -> TrustedPublisher:
    key = f"registration.trusted_publishers[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("issuer"), str):
        raise PolicyError(key, "must be a table with issuer and jwks or jwks_file")
    if ("jwks" in raw) == ("jwks_file" in raw):
        raise PolicyError(key, "set exactly one of jwks (inline) or jwks_file (path)")
    try:
        jwks = raw["jwks"] if "jwks" in raw else bounded_json.loads(Path(raw["jwks_file"]).read_text())
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{key}.jwks_file", f"cannot be read as a JWK Set: {exc}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise PolicyError(f"{key}.jwks", "must be a JWK Set with at least one key")
    return TrustedPublisher(issuer=raw["issuer"], jwks=jwks)


def registration_policy(raw: Any, environ: Mapping[str, str]) -> RegistrationPolicy:
    if not isinstance(raw, dict):
        raise PolicyError("registration", "must be a table")
    mode = raw.get("mode", "loopback")
    if mode not in REGISTRATION_MODES:
        raise PolicyError("registration.mode", f"must be one of {', '.join(REGISTRATION_MODES)}")
    publishers = raw.get("trusted_publishers", [])
    if not isinstance(publishers, list):
        raise PolicyError("registration.trusted_publishers", "must be an array of tables")
    tokens = raw.get("initial_access_tokens", [])
    if not isinstance(tokens, list):
        raise PolicyError("registration.initial_access_tokens", "must be a list")
    return RegistrationPolicy(
        mode=mode,
        allowed_redirect_hosts=tuple(h.lower() for h in _strings(raw, "allowed_redirect_hosts", "registration.")),
        trusted_publishers=tuple(_publisher(i, p) for i, p in enumerate(publishers)),
        initial_access_tokens=tuple(
            _secret(t, f"registration.initial_access_tokens[{i}]", environ) for i, t in enumerate(tokens)),
        rate_limit_per_minute=int(_number(raw, "rate_limit_per_minute", "registration.", 10, 1, 10_000)),
    )


def client_document_policy(raw: Any) -> ClientDocumentPolicy:
    if not isinstance(raw, dict):
        raise PolicyError("client_documents", "must be a table")
    path = "client_documents."
    unknown = raw.get("unknown_domains", "refuse")
    if unknown not in UNKNOWN_DOMAIN_ACTIONS:
        raise PolicyError(f"{path}unknown_domains", f"must be one of {', '.join(UNKNOWN_DOMAIN_ACTIONS)}")
    for flag in ("enabled", "development_mode"):
        if not isinstance(raw.get(flag, False), bool):
            raise PolicyError(f"{path}{flag}", "must be true or false")
    ca_file = raw.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not Path(ca_file).is_file()):
        raise PolicyError(f"{path}ca_file", "must be the path of a readable PEM file of CA certificates")
    low = int(_number(raw, "cache_min_seconds", path, 60, 0, 7 * 24 * 3600))
    high = int(_number(raw, "cache_max_seconds", path, 24 * 3600, 0, 30 * 24 * 3600))
    if low > high:
        raise PolicyError(f"{path}cache_min_seconds", "must not exceed cache_max_seconds")
    return ClientDocumentPolicy(
        enabled=raw.get("enabled", True),
        allowed_domains=_strings(raw, "allowed_domains", path),
        denied_domains=_strings(raw, "denied_domains", path),
        unknown_domains=unknown,
        development_mode=raw.get("development_mode", False),
        cache_min_seconds=low,
        cache_max_seconds=high,
        max_bytes=int(_number(raw, "max_bytes", path, 5 * 1024, 256, 64 * 1024)),
        timeout_seconds=_number(raw, "timeout_seconds", path, 3.0, 0.1, 30.0),
        ca_file=ca_file,
    )
