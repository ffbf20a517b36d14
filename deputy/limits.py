"""The ``[limits]`` settings: what one connection, one request and one principal may cost.

Every resource an unauthenticated or authenticated peer can make Deputy hold — a socket, a
buffer, a process — has a bound here, so that load cannot exhaust memory or descriptors or take
the process down (the attack classes "Input size and time" and "Per-principal quotas").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KNOWN_KEYS = frozenset({
    "max_connections", "header_timeout", "body_timeout", "idle_timeout",
    "stdio_sessions_per_server", "stdio_sessions_per_user", "stdio_sessions_per_client", "stdio_idle_timeout",
})


class LimitsError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"limits.{key}: {problem}")
        self.key = f"limits.{key}"
        self.problem = problem


@dataclass(frozen=True, slots=True)
class LimitSettings:
    # Connections open at once (HTTP); past it the oldest connection that has not yet sent a whole request is cut.
    max_connections: int = 4096
    header_timeout: float = 10.0  # seconds for a new connection to send its request line and headers
    body_timeout: float = 30.0  # seconds for a whole request body to arrive once its headers have
    idle_timeout: float = 5.0  # seconds a keep-alive connection may sit idle between requests
    stdio_sessions_per_server: int = 64
    stdio_sessions_per_user: int = 8
    stdio_sessions_per_client: int = 16
    stdio_idle_timeout: float = 600.0


_INT_RANGES = {
    "max_connections": (16, 1_000_000),
    "stdio_sessions_per_server": (1, 10_000),
    "stdio_sessions_per_user": (1, 10_000),
    "stdio_sessions_per_client": (1, 10_000),
}
_SECONDS_RANGES = {
    "header_timeout": (0.5, 300.0),
    "body_timeout": (1.0, 3600.0),
    "idle_timeout": (0.5, 3600.0),
    "stdio_idle_timeout": (5.0, 86_400.0),
}


def limit_settings(raw: Any) -> LimitSettings:
    """Read ``[limits]``; an unknown key or a value out of range raises :class:`LimitsError`."""
    if not isinstance(raw, Mapping):
        raise LimitsError("", "must be a table")
    for key in raw:
        if key not in KNOWN_KEYS:
            raise LimitsError(str(key), "is not a known setting")
    values: dict[str, Any] = {}
    for key, (lo, hi) in _INT_RANGES.items():
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise LimitsError(key, f"must be an integer from {lo} to {hi}, got {value!r}")
            values[key] = value
    for key, (flo, fhi) in _SECONDS_RANGES.items():
        if key in raw:
            seconds = raw[key]
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not flo <= seconds <= fhi:
                raise LimitsError(key, f"must be a number of seconds from {flo:g} to {fhi:g}, got {seconds!r}")
            values[key] = float(seconds)
    settings = LimitSettings(**values)
    if settings.stdio_sessions_per_user > settings.stdio_sessions_per_server:
        raise LimitsError("stdio_sessions_per_user", "must not exceed stdio_sessions_per_server")
    return settings
