"""Settings: ``deputy.toml`` plus ``DEPUTY_*`` environment overrides.

Configuration is read once, validated, and passed down as frozen values; nothing
else in Deputy reads the environment. A bad value stops start-up with a
:class:`ConfigError` naming the key and what is wrong with it.

The issuer is ``public_url`` exactly, without a trailing slash (RFC 8414 §2,
§3.3 string comparison), and each upstream ``NAME`` is served at
``{public_url}/mcp/NAME``, its canonical resource identifier (RFC 8707 §2,
MCP authorization "Canonical Server URI").
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deputy.audit.settings import AuditSettings, audit_settings
from deputy.bounded_json import loads_toml
from deputy.client_policies import (
    ClientDocumentPolicy,
    PolicyError,
    RegistrationPolicy,
    client_document_policy,
    registration_policy,
)
from deputy.config_approvals import ApprovalSettings as ApprovalSettings
from deputy.config_clients import JWT_BEARER as JWT_BEARER
from deputy.config_clients import TOKEN_EXCHANGE as TOKEN_EXCHANGE
from deputy.config_clients import StaticClient, static_client
from deputy.config_values import SCOPE_TOKEN as SCOPE_TOKEN
from deputy.config_values import ConfigError as ConfigError
from deputy.config_values import read_int, read_scopes, read_str, secret_value
from deputy.delegation_policy import DelegationPolicy, TrustedIssuer, delegation_policy, trusted_issuers
from deputy.limits import LimitsError, LimitSettings, limit_settings

SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
FORBIDDEN_UPSTREAM_HEADERS = frozenset({"authorization", "host", "cookie", "content-length"})
# How Deputy authenticates to an upstream: minted tokens, configured headers, or nothing.
UPSTREAM_CREDENTIALS = ("none", "static", "exchange")
# What a stdio upstream inherits from Deputy's environment; everything else it gets is configured.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """One protected MCP server, reached over HTTP (``url``) or stdio (``command``)."""

    name: str
    resource: str
    title: str
    scopes: tuple[str, ...]
    required_scopes: tuple[str, ...]
    url: str | None = None
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: str = "none"
    # The upstream's own identifier, the ``aud`` of tokens Deputy mints for it (``exchange``).
    upstream_audience: str | None = None
    # The directory of this server's Cedar policies; None: its calls are not decided by policy (yet).
    policies: Path | None = None


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
    delegation: DelegationPolicy = field(default_factory=DelegationPolicy)
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    approvals: ApprovalSettings = field(default_factory=ApprovalSettings)
    policy_watch_seconds: float = 2.0  # how often policy directories are checked for changes; 0: only SIGHUP
    limits: LimitSettings = field(default_factory=LimitSettings)

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


def canonical_resource(uri: str) -> str:
    """Lower-case scheme and host, drop a trailing slash (MCP: Canonical Server URI).

    A string that is not a URI at all is returned as it is: it then equals no resource."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc.lower()
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{netloc}{path}{query}"


def _check_public_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("public_url", f"must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment or parts.path:
        raise ConfigError("public_url", "must be an origin only (scheme, host, port), with no path, query or fragment")
    if parts.scheme == "http" and not is_loopback_http(value):
        raise ConfigError("public_url", "plain http is allowed only on a loopback address; use https")
    return canonical_resource(value)  # scheme and host in lower case, as resources are compared


def _server(name: str, raw: Any, public_url: str, environ: Mapping[str, str], base_dir: Path) -> UpstreamServer:
    path = f"servers.{name}."
    if not SERVER_NAME.match(name):
        raise ConfigError(f"servers.{name}", "server names are lower-case letters, digits, '-' and '_'")
    if not isinstance(raw, dict):
        raise ConfigError(f"servers.{name}", "must be a table")
    url, command = raw.get("url"), raw.get("command")
    if (url is None) == (command is None):
        raise ConfigError(f"servers.{name}", "set exactly one of 'url' (HTTP upstream) or 'command' (stdio)")
    if url is not None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{path}url", f"must be an absolute http(s) URL, got {url!r}")
    if command is not None and (
        not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command)
    ):
        raise ConfigError(f"{path}command", "must be a non-empty list of strings")
    scopes = read_scopes(raw, "scopes", path, [f"{name}:tools"])
    required = read_scopes(raw, "required_scopes", path, list(scopes[:1]))
    if not set(required) <= set(scopes):
        raise ConfigError(f"{path}required_scopes", "must be a subset of 'scopes'")
    headers: dict[str, str] = {}
    for header, spec in dict(raw.get("headers", {})).items():
        if not HEADER_NAME.match(header) or header.lower() in FORBIDDEN_UPSTREAM_HEADERS:
            raise ConfigError(f"{path}headers.{header}", "is not a header Deputy may set upstream")
        headers[header] = secret_value(spec, f"{path}headers.{header}", environ, base_dir)
    env = {var: environ[var] for var in INHERITED_ENV if var in environ} if command is not None else {}
    for var, spec in dict(raw.get("env", {})).items():
        env[str(var)] = secret_value(spec, f"{path}env.{var}", environ, base_dir)
    credentials = raw.get("credentials", "static" if headers else "none")
    if credentials not in UPSTREAM_CREDENTIALS:
        raise ConfigError(f"{path}credentials", f"must be one of {', '.join(UPSTREAM_CREDENTIALS)}")
    if (credentials == "static") != bool(headers):
        raise ConfigError(f"{path}credentials", '"static" credentials are the configured headers: set both or neither')
    if credentials == "exchange" and url is None:
        raise ConfigError(f"{path}credentials", '"exchange" sends a bearer token, so the upstream must be HTTP (url)')
    audience = raw.get("upstream_audience", str(url).rstrip("/") if credentials == "exchange" else None)
    if audience is not None and (not isinstance(audience, str) or not audience or credentials != "exchange"):
        raise ConfigError(f"{path}upstream_audience", 'is a non-empty string, used with credentials = "exchange"')
    if audience is not None and (canonical_resource(audience) == public_url
                                 or canonical_resource(audience).startswith(f"{public_url}/")):
        # A token minted for the upstream must never be accepted by Deputy itself.
        raise ConfigError(f"{path}upstream_audience", "must not be Deputy's own issuer or one of its resources")
    return UpstreamServer(
        name=name,
        resource=f"{public_url}/mcp/{name}",
        title=str(raw.get("title", name)),
        scopes=scopes,
        required_scopes=required,
        url=str(url).rstrip("/") if url is not None else None,
        command=tuple(command) if command is not None else None,
        env=env,
        headers=headers,
        credentials=credentials,
        upstream_audience=audience,
        policies=_policy_directory(raw, path, base_dir),
    )


def _policy_directory(raw: Mapping[str, Any], path: str, base_dir: Path) -> Path | None:
    """``policies``: a directory of ``*.cedar`` files, relative to the configuration file."""
    value = raw.get("policies")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}policies", "must be the path of a directory of .cedar files")
    directory = (base_dir / Path(value).expanduser()).resolve()
    if not directory.is_dir():
        raise ConfigError(f"{path}policies", f"{directory} is not a directory")
    return directory


def _approvals(raw: Any) -> ApprovalSettings:
    if not isinstance(raw, dict):
        raise ConfigError("approvals", "must be a table")
    for key in raw:
        if key not in ("ttl", "approvers"):
            raise ConfigError(f"approvals.{key}", "is not a known setting (ttl, approvers)")
    approvers = raw.get("approvers", [])
    if not isinstance(approvers, list) or not all(isinstance(a, str) and a for a in approvers):
        raise ConfigError("approvals.approvers", "must be a list of usernames")
    return ApprovalSettings(ttl=read_int(raw, "ttl", "approvals.", 15 * 60, 30, 7 * 24 * 3600),
                            approvers=tuple(approvers))


ENV_KEYS = {
    "DEPUTY_DATA_DIR": "data_dir",
    "DEPUTY_DATABASE_URL": "database_url",
    "DEPUTY_HOST": "host",
    "DEPUTY_PORT": "port",
    "DEPUTY_PUBLIC_URL": "public_url",
    "DEPUTY_DEMO_PASSWORD": "demo_password",
}


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
    return _validate(raw, environ, path.parent if path is not None else Path.cwd())


def _validate(raw: Mapping[str, Any], environ: Mapping[str, str], base_dir: Path | None = None) -> Settings:
    known = {"public_url", "host", "port", "data_dir", "database_url", "servers", "clients", "tokens",
             "registration", "client_documents", "demo_password", "gateway", "delegation", "trusted_issuers",
             "approvals", "audit", "limits"}
    for key in raw:
        if key not in known:
            raise ConfigError(key, "is not a known setting")
    host = read_str(raw, "host", "", "127.0.0.1")
    port = read_int(raw, "port", "", 8000, 0, 65535)
    # Without a public URL, Deputy is reached where it listens (a wildcard address means loopback).
    listen_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - compared, not bound
    if ":" in listen_host:
        listen_host = f"[{listen_host}]"
    public_url = _check_public_url(read_str(raw, "public_url", "", f"http://{listen_host}:{port}"))
    data_dir = Path(read_str(raw, "data_dir", "", ".deputy")).expanduser()
    database_url = raw.get("database_url") or f"sqlite+aiosqlite:///{(data_dir / 'deputy.db').resolve()}"
    if not isinstance(database_url, str) or not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("database_url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    servers_raw = raw.get("servers", {})
    if not isinstance(servers_raw, dict) or not servers_raw:
        raise ConfigError("servers", "configure at least one upstream server ([servers.NAME])")
    servers = {name: _server(name, spec, public_url, environ, base_dir or Path.cwd())
               for name, spec in servers_raw.items()}
    clients_raw = raw.get("clients", [])
    if not isinstance(clients_raw, list):
        raise ConfigError("clients", "must be an array of tables ([[clients]])")
    tokens = raw.get("tokens", {})
    registration = raw.get("registration", {})
    gateway = raw.get("gateway", {})
    if not isinstance(tokens, dict) or not isinstance(registration, dict) or not isinstance(gateway, dict):
        raise ConfigError("tokens/registration/gateway", "must be tables")
    try:
        registration_rules = registration_policy(registration, environ)
        document_rules = client_document_policy(raw.get("client_documents", {}))
        delegation_rules = delegation_policy(raw.get("delegation", {}))
        issuers = trusted_issuers(raw.get("trusted_issuers", []), public_url, base_dir or Path.cwd())
    except PolicyError as exc:
        raise ConfigError(exc.key, exc.problem) from None
    audit_raw = raw.get("audit", {})
    if not isinstance(audit_raw, dict):
        raise ConfigError("audit", "must be a table")
    try:
        audit = audit_settings(audit_raw, data_dir, public_url)
    except ValueError as exc:
        key, _, problem = str(exc).partition(": ")
        raise ConfigError(key, problem or str(exc)) from None
    try:
        limits = limit_settings(raw.get("limits", {}))
    except LimitsError as exc:
        raise ConfigError(exc.key, exc.problem) from None
    staleness = gateway.get("revocation_max_staleness", 5.0)
    if not isinstance(staleness, int | float) or not 0.5 <= staleness <= 300:
        raise ConfigError("gateway.revocation_max_staleness", "must be a number of seconds from 0.5 to 300")
    watch = gateway.get("policy_watch_seconds", 2.0)
    if not isinstance(watch, int | float) or isinstance(watch, bool) or not (watch == 0 or 0.2 <= watch <= 3600):
        raise ConfigError("gateway.policy_watch_seconds", "must be 0 (reload on SIGHUP only) or 0.2 to 3600 seconds")
    origins = gateway.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(
            isinstance(o, str) and urlsplit(o).scheme in ("http", "https") and urlsplit(o).netloc for o in origins):
        raise ConfigError("gateway.allowed_origins", "must be a list of origins like https://app.example.com")
    return Settings(
        approvals=_approvals(raw.get("approvals", {})),
        public_url=public_url,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        servers=servers,
        clients=tuple(static_client(i, c, base_dir or Path.cwd(), public_url) for i, c in enumerate(clients_raw)),
        access_token_ttl=read_int(tokens, "access_token_ttl", "tokens.", 600, 30, 3600),
        refresh_token_ttl=read_int(tokens, "refresh_token_ttl", "tokens.", 14 * 24 * 3600, 60, 365 * 24 * 3600),
        code_ttl=read_int(tokens, "code_ttl", "tokens.", 60, 5, 60),
        login_session_ttl=read_int(tokens, "login_session_ttl", "tokens.", 8 * 3600, 60, 30 * 24 * 3600),
        clock_leeway=read_int(tokens, "clock_leeway", "tokens.", 30, 0, 300),
        registration=registration_rules,
        client_documents=document_rules,
        revocation_max_staleness=float(staleness),
        allowed_origins=tuple(origins),
        policy_watch_seconds=float(watch),
        audit=audit,
        demo_password=raw.get("demo_password") or None,
        delegation=delegation_rules,
        trusted_issuers=issuers,
        limits=limits,
    )
