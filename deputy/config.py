"""Settings: ``deputy.toml`` plus ``DEPUTY_*`` environment overrides.

Configuration is read once, validated, and passed down as frozen values; nothing
else in Deputy reads the environment. A bad value stops start-up with a
:class:`ConfigError` naming the key and what is wrong with it.

The issuer is ``public_url`` exactly, without a trailing slash (RFC 8414 §2,
§3.3 string comparison), and each upstream ``NAME`` is served at
``{public_url}/mcp/NAME``, its canonical resource identifier (RFC 8707 §2,
MCP authorization "Canonical Server URI").

Each section is read by its own module, all with the readers of :mod:`deputy.config_values`:
``[servers.NAME]`` :mod:`deputy.config_servers`, ``[[clients]]`` :mod:`deputy.config_clients`,
``[registration]`` and ``[client_documents]`` :mod:`deputy.client_trust`, ``[delegation]`` and
``[[trusted_issuers]]`` :mod:`deputy.delegation_rules`, ``[audit]`` :mod:`deputy.audit.settings`,
``[[identity_providers]]`` and ``local_users`` :mod:`deputy.config_identity_providers`,
``[limits]`` :mod:`deputy.limits`, ``[approvals]`` :mod:`deputy.config_approvals`, ``[servers.NAME.oauth]``
and ``[connections]`` :mod:`deputy.config_connections`, ``log_level``, ``log_format`` and ``[metrics]``
:mod:`deputy.telemetry.settings`; this module reads the rest and puts them together. Traces are configured by
the standard ``OTEL_*`` environment variables, read here too (:mod:`deputy.telemetry.trace_settings`).

Every key is known: before any value is read, the whole file is walked against :data:`CONFIG`, the shape of every
table the sections declare (:func:`deputy.config_values.check_keys`), and an unknown key anywhere stops start-up
naming its path and the key probably meant (``servers.demo.polices: unknown setting; did you mean policies?``).
A typo is thus reported as what it is, never as the error its missing key causes, nor silently ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deputy.audit.settings import AUDIT, AuditSettings, audit_settings
from deputy.bounded_json import loads_toml
from deputy.client_trust import (
    CLIENT_DOCUMENTS,
    REGISTRATION,
    ClientDocumentPolicy,
    RegistrationPolicy,
    client_document_policy,
    registration_policy,
)
from deputy.config_approvals import APPROVALS, approval_settings
from deputy.config_approvals import ApprovalSettings as ApprovalSettings
from deputy.config_clients import CLIENT, StaticClient, static_clients
from deputy.config_clients import JWT_BEARER as JWT_BEARER
from deputy.config_clients import TOKEN_EXCHANGE as TOKEN_EXCHANGE
from deputy.config_connections import CONNECTIONS, ConnectionSettings, connection_settings
from deputy.config_identity_providers import IDENTITY_PROVIDER, IdentityProvider, identity_providers, local_users
from deputy.config_servers import INHERITED_ENV as INHERITED_ENV
from deputy.config_servers import SERVER, upstream_servers
from deputy.config_servers import SERVER_NAME as SERVER_NAME
from deputy.config_servers import UpstreamServer as UpstreamServer
from deputy.config_servers import canonical_resource as canonical_resource
from deputy.config_values import SCOPE_TOKEN as SCOPE_TOKEN
from deputy.config_values import ConfigError as ConfigError
from deputy.config_values import (
    Entries,
    Named,
    Shape,
    Table,
    at,
    check_http_url,
    check_keys,
    misspelt_variables,
    read_int,
    read_number,
    read_str,
    read_table,
    secret_variables,
)
from deputy.delegation_rules import (
    DELEGATION,
    TRUSTED_ISSUER,
    DelegationRules,
    TrustedIssuer,
    delegation_rules,
    trusted_issuers,
)
from deputy.forwarded_client import trusted_proxies
from deputy.limits import KNOWN_KEYS as LIMIT_KEYS
from deputy.limits import MAX_WORKERS, LimitSettings, limit_settings
from deputy.telemetry.settings import METRICS, TelemetrySettings, telemetry_settings
from deputy.telemetry.trace_settings import TracingSettings, tracing_settings


@dataclass(frozen=True, slots=True)
class Settings:
    public_url: str
    host: str
    port: int
    data_dir: Path
    database_url: str
    servers: Mapping[str, UpstreamServer]
    audit: AuditSettings
    clients: tuple[StaticClient, ...] = ()
    access_token_ttl: int = 600
    refresh_token_ttl: int = 14 * 24 * 3600
    code_ttl: int = 60
    login_session_ttl: int = 8 * 3600
    clock_leeway: int = 30
    registration: RegistrationPolicy = field(default_factory=RegistrationPolicy)
    client_documents: ClientDocumentPolicy = field(default_factory=ClientDocumentPolicy)
    revocation_max_staleness: float = 5.0
    allowed_origins: tuple[str, ...] = ()
    demo_password: str | None = None
    delegation: DelegationRules = field(default_factory=DelegationRules)
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    approvals: ApprovalSettings = field(default_factory=ApprovalSettings)
    policy_watch_seconds: float = 2.0  # how often policy directories are checked for changes; 0: only SIGHUP
    limits: LimitSettings = field(default_factory=LimitSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)  # from the OTEL_* environment variables
    identity_providers: tuple[IdentityProvider, ...] = ()  # [[identity_providers]]: OpenID Providers to sign in with
    local_users: bool = True  # Deputy's own password users may sign in (default: only while no provider is set)
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)  # credentials = "oauth" upstreams
    workers: int = 1  # processes serving the one listening socket (`deputy serve --workers N`, deputy.workers)
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For names the client (deputy.forwarded_client)

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def secure_cookies(self) -> bool:
        """Cookies are ``Secure`` unless Deputy runs on a loopback ``http`` URL."""
        return not is_loopback_http(self.public_url)

    def resource_of(self, name: str) -> str:
        return f"{self.public_url}/mcp/{name}"

    def server_for_resource(self, resource: str) -> UpstreamServer | None:
        """The server ``resource`` names; None for anything else, including a URI that is not absolute,
        has a fragment (RFC 8707 §2) or cannot be parsed at all."""
        try:
            parts = urlsplit(resource)
        except ValueError:
            return None
        if not parts.scheme or not parts.netloc or parts.fragment:
            return None
        canonical = canonical_resource(resource)
        for server in self.servers.values():
            if server.resource == canonical:
                return server
        return None

    @property
    def all_scopes(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for server in self.servers.values():
            for scope in server.scopes:
                seen[scope] = None
        return tuple(seen)


def is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _check_public_url(value: str) -> str:
    parts = urlsplit(check_http_url(value, "public_url"))
    if parts.query or parts.fragment or parts.path:
        raise ConfigError("public_url", "must be an origin only (scheme, host, port), with no path, query or fragment")
    if parts.scheme == "http" and not is_loopback_http(value):
        raise ConfigError("public_url", "plain http is allowed only on a loopback address; use https")
    return canonical_resource(value)  # scheme and host in lower case, as resources are compared


ENV_KEYS = {
    "DEPUTY_DATA_DIR": "data_dir",
    "DEPUTY_DATABASE_URL": "database_url",
    "DEPUTY_HOST": "host",
    "DEPUTY_PORT": "port",
    "DEPUTY_PUBLIC_URL": "public_url",
    "DEPUTY_DEMO_PASSWORD": "demo_password",
    "DEPUTY_LOG_LEVEL": "log_level",
    "DEPUTY_LOG_FORMAT": "log_format",
    "DEPUTY_WORKERS": "workers",
}
TOKENS = Table(frozenset({"access_token_ttl", "refresh_token_ttl", "code_ttl", "login_session_ttl", "clock_leeway"}))
GATEWAY = Table(frozenset({"revocation_max_staleness", "policy_watch_seconds", "allowed_origins"}))
# Every table of deputy.toml, each declared by the module that reads it.
SECTIONS: dict[str, Shape] = {
    "servers": Named(SERVER), "clients": Entries(CLIENT), "tokens": TOKENS, "registration": REGISTRATION,
    "client_documents": CLIENT_DOCUMENTS, "gateway": GATEWAY, "delegation": DELEGATION,
    "trusted_issuers": Entries(TRUSTED_ISSUER), "approvals": APPROVALS, "audit": AUDIT, "limits": Table(LIMIT_KEYS),
    "metrics": METRICS, "identity_providers": Entries(IDENTITY_PROVIDER), "connections": CONNECTIONS,
}
TOP_LEVEL_KEYS = frozenset({"public_url", "host", "port", "data_dir", "database_url", "demo_password", "log_level",
                            "log_format", "local_users", "workers", "trusted_proxies", *SECTIONS})
CONFIG = Table(TOP_LEVEL_KEYS, SECTIONS)
DATABASE_SCHEMES = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
VARIABLES = frozenset({"DEPUTY_CONFIG", "DEPUTY_VAULT_KEY", *ENV_KEYS})
_log = logging.getLogger(__name__)


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Read ``deputy.toml`` (``DEPUTY_CONFIG`` or the given path), apply env overrides, validate."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = dict(defaults or {})
    path = config_path or (Path(environ["DEPUTY_CONFIG"]) if environ.get("DEPUTY_CONFIG") else None)
    if path is not None:
        try:
            with path.open("rb") as fh:
                raw.update(loads_toml(fh.read().decode()))  # what tomllib.load does, nesting bounded first
        except FileNotFoundError:
            raise ConfigError("DEPUTY_CONFIG", f"file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"is not valid TOML: {exc}") from None
    for env_name, key in ENV_KEYS.items():
        if environ.get(env_name):
            raw[key] = environ[env_name]
    # Not an error (the variable may be meant for something else), but a near miss is most likely a typo.
    for name, meant in misspelt_variables(environ, "DEPUTY_", VARIABLES, secret_variables(raw)):
        _log.warning("environment variable %s is not one Deputy reads; did you mean %s?", name, meant)
    return _validate(raw, environ, path.parent if path is not None else Path.cwd())


def _validate(raw: Mapping[str, Any], environ: Mapping[str, str], base_dir: Path | None = None) -> Settings:
    """Every section in turn; the first bad value stops start-up with a :class:`ConfigError` naming its path."""
    base_dir = base_dir or Path.cwd()
    check_keys(raw, "", CONFIG)  # first: a misspelt key is the error to report, not what its absence causes
    host, port, public_url = _listener(raw)
    data_dir, database_url = _storage(raw)
    tokens, gateway = read_table(raw, "tokens", ""), read_table(raw, "gateway", "")
    providers = identity_providers(raw, public_url, environ, base_dir)
    return Settings(
        public_url=public_url,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        servers=upstream_servers(raw.get("servers", {}), public_url, environ, base_dir),
        clients=static_clients(raw, base_dir, public_url),
        registration=registration_policy(raw.get("registration", {}), environ),
        client_documents=client_document_policy(raw.get("client_documents", {})),
        delegation=delegation_rules(raw.get("delegation", {})),
        trusted_issuers=trusted_issuers(raw.get("trusted_issuers", []), public_url, base_dir),
        audit=audit_settings(raw.get("audit", {}), data_dir, public_url),
        limits=limit_settings(raw.get("limits", {})),
        approvals=approval_settings(raw, {p.name: p.issuer for p in providers}),
        trusted_proxies=trusted_proxies(raw),
        telemetry=telemetry_settings(raw, (host, port)),
        tracing=tracing_settings(environ),
        demo_password=raw.get("demo_password") or None,
        access_token_ttl=_seconds(tokens, "access_token_ttl", 600, 30, 3600),
        refresh_token_ttl=_seconds(tokens, "refresh_token_ttl", 14 * 24 * 3600, 60, 365 * 24 * 3600),
        code_ttl=_seconds(tokens, "code_ttl", 60, 5, 60),
        login_session_ttl=_seconds(tokens, "login_session_ttl", 8 * 3600, 60, 30 * 24 * 3600),
        clock_leeway=_seconds(tokens, "clock_leeway", 30, 0, 300),
        revocation_max_staleness=read_number(gateway, "revocation_max_staleness", "gateway", 5.0, 0.5, 300,
                                             unit="seconds"),
        policy_watch_seconds=_policy_watch_seconds(gateway),
        allowed_origins=_allowed_origins(gateway),
        identity_providers=providers,
        local_users=local_users(raw, providers),
        connections=connection_settings(raw, environ),
        workers=read_int(raw, "workers", "", 1, 1, MAX_WORKERS, digits=True),
    )


def _listener(raw: Mapping[str, Any]) -> tuple[str, int, str]:
    """``host``, ``port`` and ``public_url``, which defaults to where Deputy listens."""
    host = read_str(raw, "host", "", "127.0.0.1")
    port = read_int(raw, "port", "", 8000, 0, 65535, digits=True)
    # Without a public URL, Deputy is reached where it listens (a wildcard address means loopback).
    listen_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - compared, not bound
    if ":" in listen_host:
        listen_host = f"[{listen_host}]"
    return host, port, _check_public_url(read_str(raw, "public_url", "", f"http://{listen_host}:{port}"))


def _storage(raw: Mapping[str, Any]) -> tuple[Path, str]:
    """``data_dir`` and ``database_url``, which defaults to SQLite in the data directory."""
    data_dir = Path(read_str(raw, "data_dir", "", ".deputy")).expanduser()
    database_url = raw.get("database_url") or f"sqlite+aiosqlite:///{(data_dir / 'deputy.db').resolve()}"
    if not isinstance(database_url, str) or not database_url.startswith(DATABASE_SCHEMES):
        raise ConfigError("database_url", f"must start with {' or '.join(DATABASE_SCHEMES)}")
    return data_dir, database_url


def _seconds(tokens: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    """One of ``[tokens]``: lifetimes and the clock leeway, in whole seconds."""
    return read_int(tokens, key, "tokens", default, lo, hi, digits=True)


def _policy_watch_seconds(gateway: Mapping[str, Any]) -> float:
    """How often policy directories are checked for changes; 0: only on SIGHUP."""
    watch = gateway.get("policy_watch_seconds", 2.0)
    if not isinstance(watch, int | float) or isinstance(watch, bool) or not (watch == 0 or 0.2 <= watch <= 3600):
        raise ConfigError("gateway.policy_watch_seconds", "must be 0 (reload on SIGHUP only) or 0.2 to 3600 seconds")
    return float(watch)


def _allowed_origins(gateway: Mapping[str, Any]) -> tuple[str, ...]:
    """Browser origins allowed besides Deputy's own (the DNS rebinding guard, deputy.gateway.origin_check)."""
    key = "gateway.allowed_origins"
    origins = gateway.get("allowed_origins", [])
    if not isinstance(origins, list):
        raise ConfigError(key, "must be a list of origins like https://app.example.com")
    for index, origin in enumerate(origins):
        if not _is_origin(origin):
            raise ConfigError(at(key, index), "must be an origin like https://app.example.com")
    return tuple(origins)


def _is_origin(value: Any) -> bool:
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        return False
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)
