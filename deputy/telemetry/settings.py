"""``log_level``, ``log_format`` and ``[metrics]``: how a running Deputy reports on itself.

Traces are configured by the standard ``OTEL_*`` environment variables (OpenTelemetry SDK configuration,
"General SDK Configuration" and the OTLP exporter's), read by
:mod:`deputy.telemetry.trace_settings`; they are off unless an OTLP endpoint is given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deputy.config_values import ConfigError, Table, check_known, read_choice, read_table
from deputy.telemetry.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, LogLevel

METRICS_KEYS = frozenset({"listen"})
METRICS = Table(METRICS_KEYS)


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    # Where ``/metrics`` is served (host, port), apart from the public listener; None: not served.
    metrics_listen: tuple[str, int] | None = None


def telemetry_settings(raw: Mapping[str, Any], public: tuple[str, int] | None = None) -> TelemetrySettings:
    """The top-level ``log_level`` and ``log_format`` and the ``[metrics]`` table; ``public`` is the public
    listener's (host, port), which ``metrics.listen`` may not share."""
    metrics = read_table(raw, "metrics", "")
    check_known(metrics, "metrics", METRICS_KEYS)
    listen = _listen_address(metrics.get("listen"))
    if listen is not None and public is not None and _same_socket(listen, public):
        raise ConfigError("metrics.listen", f"must not be the public listener's address ({public[0]}:{public[1]}, "
                                            "from host and port): metrics are served apart from the public port")
    return TelemetrySettings(
        log_level=read_choice(raw, "log_level", "", "info", LOG_LEVELS),
        log_format=read_choice(raw, "log_format", "", "text", LOG_FORMATS),
        metrics_listen=listen,
    )


WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared, not bound
LOOPBACK_NAME = "localhost"


def _same_socket(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether two listen addresses would claim the same port on some address (port 0: a free port, never)."""
    (host_a, port_a), (host_b, port_b) = first, second
    if port_a != port_b or port_a == 0:
        return False
    if host_a == host_b or host_a in WILDCARDS or host_b in WILDCARDS:
        return True
    # "localhost" may resolve to either loopback address.
    return LOOPBACK_NAME in (host_a, host_b) and _is_loopback(host_a) and _is_loopback(host_b)


def _is_loopback(host: str) -> bool:
    if host == LOOPBACK_NAME:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_address(value: Any) -> tuple[str, int] | None:
    """``"HOST:PORT"`` (an IPv6 host in brackets); absent or empty: no metrics listener."""
    key = "metrics.listen"
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(key, 'must be "HOST:PORT", e.g. "127.0.0.1:9464"')
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(key, f'must be "HOST:PORT" with an IP address or localhost as HOST, got {value!r}') \
                from None
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f'must be "HOST:PORT" with a port from 0 to 65535, got {value!r}')
    return host, int(port)
