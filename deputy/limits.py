"""The ``[limits]`` settings: what one connection, one request and one principal may cost.

Every resource an unauthenticated or authenticated peer can make Deputy hold — a socket, a
buffer, a process — has a bound here, so that load cannot exhaust memory or descriptors or take
the process down (the attack classes "Input size and time" and "Per-principal quotas").

Only the standard library at import: ``deputy --help`` reads :data:`MAX_WORKERS` for its ``--workers`` option, and
the configuration's readers (:mod:`deputy.config_values`, which judges JWK Sets with joserfc) are imported by
:func:`limit_settings`, when a configuration is read (tests/unit/test_lazy_imports.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_WORKERS = 64  # processes of one Deputy (``workers``); past this, replicas (a second machine) are the way to grow
SECTION = "limits"
KNOWN_KEYS = frozenset({
    "max_connections", "header_timeout", "body_timeout", "idle_timeout",
    "stdio_sessions_per_server", "stdio_sessions_per_user", "stdio_sessions_per_client", "stdio_idle_timeout",
    "signin_starts_per_minute", "signin_failures_per_minute", "authorization_requests_per_minute",
    "upstream_streams", "streams_per_user", "streams_per_principal", "streams_per_session", "calls_per_user",
})


@dataclass(frozen=True, slots=True)
class LimitSettings:
    # Connections open at once (HTTP); past it the oldest connection that has not yet sent a whole request, from the
    # address holding the most such connections, is cut (deputy.listener).
    max_connections: int = 4096
    header_timeout: float = 10.0  # seconds for a new connection to send its request line and headers
    body_timeout: float = 30.0  # seconds for a whole request body to arrive once its headers have
    idle_timeout: float = 5.0  # seconds a keep-alive connection may sit idle between requests
    stdio_sessions_per_server: int = 64
    stdio_sessions_per_user: int = 8
    stdio_sessions_per_client: int = 16
    stdio_idle_timeout: float = 600.0
    # Per client address: sign-ins started through identity providers, and refused ones (each a signin.failed
    # record), so nobody can flood the audit log through the callback (deputy.web.federated_pages).
    signin_starts_per_minute: int = 60
    signin_failures_per_minute: int = 30
    # Per client address: authorization requests kept waiting for a sign-in (GET /authorize; each a row kept ten
    # minutes, stored before anyone has signed in: deputy.oauth.authorize).
    authorization_requests_per_minute: int = 60
    # MCP GET streams (SSE, long-lived): open at once to HTTP upstreams (their own connection pool, apart from
    # calls'), held by one user on one server whatever her clients, by one principal (user, client, server) and by
    # one session (deputy.gateway.stream_caps).
    upstream_streams: int = 256
    streams_per_user: int = 32
    streams_per_principal: int = 8
    streams_per_session: int = 4
    # Calls (POST, DELETE) one user may have in flight at once on one server, whatever her clients
    # (deputy.gateway.stream_caps.CallCaps): a server's calls share at most 128 pooled upstream connections.
    calls_per_user: int = 32


_INT_RANGES = {
    "max_connections": (16, 1_000_000),
    "stdio_sessions_per_server": (1, 10_000),
    "stdio_sessions_per_user": (1, 10_000),
    "stdio_sessions_per_client": (1, 10_000),
    "signin_starts_per_minute": (1, 10_000),
    "signin_failures_per_minute": (1, 10_000),
    "authorization_requests_per_minute": (1, 10_000),
    "upstream_streams": (1, 100_000),
    "streams_per_user": (1, 10_000),
    "streams_per_principal": (1, 10_000),
    "streams_per_session": (1, 10_000),
    "calls_per_user": (1, 100_000),
}
_SECONDS_RANGES = {
    "header_timeout": (0.5, 300.0),
    "body_timeout": (1.0, 3600.0),
    "idle_timeout": (0.5, 3600.0),
    "stdio_idle_timeout": (5.0, 86_400.0),
}


def limit_settings(raw: Any) -> LimitSettings:
    """Read ``[limits]``; an unknown key or a value out of range raises :class:`ConfigError` naming ``limits.<key>``."""
    from deputy.config_values import ConfigError, as_table, at, check_known, read_int, read_number

    table = as_table(raw, SECTION)
    check_known(table, SECTION, KNOWN_KEYS)
    # Only the keys given: the defaults are LimitSettings' own.
    values: dict[str, Any] = {
        key: read_int(table, key, SECTION, 0, lo, hi) for key, (lo, hi) in _INT_RANGES.items() if key in table
    }
    values.update({key: read_number(table, key, SECTION, 0.0, lo, hi, unit="seconds")
                   for key, (lo, hi) in _SECONDS_RANGES.items() if key in table})
    settings = LimitSettings(**values)
    if settings.stdio_sessions_per_user > settings.stdio_sessions_per_server:
        raise ConfigError(at(SECTION, "stdio_sessions_per_user"), "must not exceed stdio_sessions_per_server")
    if settings.streams_per_principal > settings.streams_per_user:
        raise ConfigError(at(SECTION, "streams_per_principal"), "must not exceed streams_per_user")
    if settings.streams_per_session > settings.streams_per_principal:
        raise ConfigError(at(SECTION, "streams_per_session"), "must not exceed streams_per_principal")
    return settings


def worker_share(limit: int, workers: int) -> int:
    """What one of ``workers`` processes may admit of a per-address ``limit`` it counts in memory by itself
    (deputy.rate_limit: each worker sees only the requests it serves), so that the whole Deputy admits about
    ``limit``: ``limit / workers`` rounded up (at most ``workers - 1`` over), and at least 1, so no limit shuts
    a door for good. A client whose requests all reach one worker gets only that worker's share."""
    return max(1, math.ceil(limit / max(1, workers)))
