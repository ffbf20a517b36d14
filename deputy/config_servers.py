"""``[servers.NAME]``: the upstream MCP servers Deputy protects, each checked at start in named steps.

Each upstream ``NAME`` is served at ``{public_url}/mcp/NAME``, its canonical resource identifier (RFC 8707 §2,
MCP authorization "Canonical Server URI"). It is reached over HTTP (``url``) or stdio (``command``), and Deputy
authenticates to it with nothing, configured headers (``static``), tokens it mints for the upstream's own
audience (``exchange``, RFC 8693 §2.1 ``audience``), which must never be Deputy itself, or each user's own token
from the upstream's authorization server (``oauth``, :mod:`deputy.config_connections`). Its keys are
:data:`SERVER` (checked before any value, :func:`deputy.config_values.check_keys`); ``headers`` and ``env`` name
header fields (letters, digits and "-", never one Deputy sets itself) and environment variables.

A stdio server's ``spare_processes`` (:data:`DEFAULT_SPARE_PROCESSES`, from 0 to :data:`MAX_SPARE_PROCESSES`)
is how many of its processes Deputy keeps started ahead of the sessions that will take them
(:mod:`deputy.gateway.stdio_spares`). A spare can serve any user because nothing in a stdio process depends on
who will use it: its ``command`` and ``env`` are the server's, and credentials that are per user
(``exchange``, ``oauth``) are refused for stdio (:func:`_credentials`).

``big_integers`` says how the upstream reads JSON numbers. ``"refuse"`` (the default): it may read them as
doubles, as every JavaScript server does (``JSON.parse``; the TypeScript SDK), so a request holding an integer
beyond ±(2^53 - 1) is refused (-32602) before it is decided: Cedar and the audit log would see the exact integer
and the upstream another one, and a ``forbid`` on the one would be passed by sending the other (RFC 7493 §2.2).
``"pass"``: the upstream reads integers exactly up to signed 64 bits (Python; Deputy then decides and records them
exactly, :mod:`deputy.gateway.strict_json`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deputy.config_connections import UPSTREAM_OAUTH, UpstreamOAuth, upstream_oauth
from deputy.config_values import (
    SECRET,
    ConfigError,
    Named,
    Table,
    as_table,
    at,
    check_http_url,
    read_choice,
    read_int,
    read_scopes,
    read_table,
    secret_value,
)
from deputy.display_text import acts

SERVER_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would let a final newline through
HEADER_NAME = re.compile(r"\A[A-Za-z0-9-]+\Z")
FORBIDDEN_UPSTREAM_HEADERS = frozenset({"authorization", "host", "cookie", "content-length"})
BIG_INTEGERS = ("refuse", "pass")  # integers beyond ±(2^53 - 1): refused, or passed for an exact reader
# How Deputy authenticates to an upstream: minted tokens, configured headers, or nothing.
UPSTREAM_CREDENTIALS = ("none", "static", "exchange", "oauth")
# What a stdio upstream inherits from Deputy's environment; everything else it gets is configured.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")
# A stdio server's processes started ahead of its sessions: one makes the next session as quick as an HTTP one;
# more only help bursts of new sessions, and each costs a process's memory while it waits.
DEFAULT_SPARE_PROCESSES = 1
MAX_SPARE_PROCESSES = 16
# ``[servers.NAME]``: its keys, and the secrets its headers and its environment's variables are given as.
SERVER = Table(frozenset({"title", "url", "command", "scopes", "required_scopes", "headers", "env", "credentials",
                          "upstream_audience", "policies", "oauth", "spare_processes", "big_integers"}),
               {"headers": Named(SECRET), "env": Named(SECRET), "oauth": UPSTREAM_OAUTH})


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
    # ``credentials = "oauth"``: how Deputy is the user's OAuth client toward the upstream (deputy.connections).
    oauth: UpstreamOAuth | None = None
    # stdio: processes kept started for the next sessions (deputy.gateway.stdio_spares); 0 for HTTP.
    spare_processes: int = 0
    # How it reads integers beyond ±(2^53 - 1) (BIG_INTEGERS): "refuse" them, or "pass" them to an exact reader.
    big_integers: str = "refuse"


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


def upstream_servers(raw: Any, public_url: str, environ: Mapping[str, str],
                     base_dir: Path) -> dict[str, UpstreamServer]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("servers", "configure at least one upstream server ([servers.NAME])")
    return {name: upstream_server(name, spec, public_url, environ, base_dir) for name, spec in raw.items()}


def upstream_server(name: str, raw: Any, public_url: str, environ: Mapping[str, str],
                    base_dir: Path) -> UpstreamServer:
    where = at("servers", name)
    if not SERVER_NAME.match(name):
        raise ConfigError(where, "server names are lower-case letters, digits, '-' and '_'")
    table = as_table(raw, where)
    url, command = _transport(table, where)
    scopes = read_scopes(table, "scopes", where, [f"{name}:tools"])
    required = read_scopes(table, "required_scopes", where, list(scopes[:1]))
    if not set(required) <= set(scopes):
        raise ConfigError(at(where, "required_scopes"), "must be a subset of 'scopes'")
    headers = _headers(table, where, environ, base_dir)
    credentials = _credentials(table, where, url, headers)
    return UpstreamServer(
        name=name,
        resource=f"{public_url}/mcp/{name}",
        title=str(table.get("title", name)),
        scopes=scopes,
        required_scopes=required,
        url=url,
        command=command,
        env=_environment(table, where, command is not None, environ, base_dir),
        headers=headers,
        credentials=credentials,
        upstream_audience=_upstream_audience(table, where, url, credentials, public_url),
        policies=_policy_directory(table, where, base_dir),
        oauth=upstream_oauth(table, where, environ, base_dir) if credentials == "oauth" else None,
        spare_processes=_spare_processes(table, where, command is not None),
        big_integers=read_choice(table, "big_integers", where, "refuse", BIG_INTEGERS),
    )


def _transport(raw: Mapping[str, Any], where: str) -> tuple[str | None, tuple[str, ...] | None]:
    """``url`` (HTTP, without its trailing slash) or ``command`` (stdio): exactly one of them."""
    url, command = raw.get("url"), raw.get("command")
    if (url is None) == (command is None):
        raise ConfigError(where, "set exactly one of 'url' (HTTP upstream) or 'command' (stdio)")
    if url is not None:
        return check_http_url(url, at(where, "url")).rstrip("/"), None
    if not isinstance(command, list) or not command:
        raise ConfigError(at(where, "command"), "must be a non-empty list of strings")
    for index, part in enumerate(command):
        if not isinstance(part, str):
            raise ConfigError(at(at(where, "command"), index), "must be a string")
    return None, tuple(command)


def _spare_processes(raw: Mapping[str, Any], where: str, stdio: bool) -> int:
    """``spare_processes``: a stdio server's processes started ahead of its sessions; meaningless over HTTP."""
    if not stdio:
        if "spare_processes" in raw:
            raise ConfigError(at(where, "spare_processes"), "is read only for a stdio server (command)")
        return 0
    return read_int(raw, "spare_processes", where, DEFAULT_SPARE_PROCESSES, 0, MAX_SPARE_PROCESSES)


def _headers(raw: Mapping[str, Any], where: str, environ: Mapping[str, str], base_dir: Path) -> dict[str, str]:
    """``headers``: sent upstream with every request, never ones that carry Deputy's own credentials or framing."""
    headers: dict[str, str] = {}
    for header, spec in read_table(raw, "headers", where).items():
        key = at(at(where, "headers"), header)
        if not HEADER_NAME.match(header) or header.lower() in FORBIDDEN_UPSTREAM_HEADERS:
            raise ConfigError(key, "is not a header Deputy may set upstream")
        headers[header] = secret_value(spec, key, environ, base_dir)
    return headers


def _environment(raw: Mapping[str, Any], where: str, stdio: bool, environ: Mapping[str, str],
                 base_dir: Path) -> dict[str, str]:
    """A stdio upstream's environment: the inherited variables, then ``env``."""
    env = {var: environ[var] for var in INHERITED_ENV if var in environ} if stdio else {}
    for var, spec in read_table(raw, "env", where).items():
        key = at(at(where, "env"), var)
        # A name with "=" or NUL cannot be passed to a process (POSIX environ is NAME=value, NUL-terminated).
        if not var or "=" in var or any(acts(c) for c in var):
            raise ConfigError(key, "is not an environment variable name")
        env[var] = secret_value(spec, key, environ, base_dir)
    return env


def _credentials(raw: Mapping[str, Any], where: str, url: str | None, headers: Mapping[str, str]) -> str:
    key = at(where, "credentials")
    credentials = read_choice(raw, "credentials", where, "static" if headers else "none", UPSTREAM_CREDENTIALS)
    if (credentials == "static") != bool(headers):
        raise ConfigError(key, '"static" credentials are the configured headers: set both or neither')
    if credentials in ("exchange", "oauth") and url is None:
        raise ConfigError(key, f'"{credentials}" sends a bearer token, so the upstream must be HTTP (url)')
    if "oauth" in raw and credentials != "oauth":
        raise ConfigError(at(where, "oauth"), 'is read only with credentials = "oauth"')
    return credentials


def _upstream_audience(raw: Mapping[str, Any], where: str, url: str | None, credentials: str,
                       public_url: str) -> str | None:
    """``upstream_audience``: the ``aud`` of tokens minted for the upstream; by default its URL."""
    key = at(where, "upstream_audience")
    audience = raw.get("upstream_audience", url if credentials == "exchange" else None)
    if audience is None:
        return None
    if not isinstance(audience, str) or not audience or credentials != "exchange":
        raise ConfigError(key, 'is a non-empty string, used with credentials = "exchange"')
    canonical = canonical_resource(audience)
    if canonical == public_url or canonical.startswith(f"{public_url}/"):
        # A token minted for the upstream must never be accepted by Deputy itself.
        raise ConfigError(key, "must not be Deputy's own issuer or one of its resources")
    return audience


def _policy_directory(raw: Mapping[str, Any], where: str, base_dir: Path) -> Path | None:
    """``policies``: a directory of ``*.cedar`` files, relative to the configuration file."""
    value = raw.get("policies")
    if value is None:
        return None
    key = at(where, "policies")
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be the path of a directory of .cedar files")
    directory = (base_dir / Path(value).expanduser()).resolve()
    if not directory.is_dir():
        raise ConfigError(key, f"{directory} is not a directory; create it with the .cedar files, or correct the path "
                               "(relative to the configuration file)")
    return directory
