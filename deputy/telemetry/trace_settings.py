"""Traces are configured by the standard ``OTEL_*`` environment variables, read here once at start-up.

OpenTelemetry Specification, "Environment Variable Specification" (General SDK Configuration, Batch Span
Processor, Exporter Selection) and "OTLP Exporter Configuration": the variables are read from the mapping
:func:`deputy.config.load_settings` was given (nothing else in Deputy reads the environment), so the exporter is
configured by what this module says, not by what the SDK would pick up on its own.

Tracing is on only when an OTLP endpoint is given (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` used as it is, or
``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``/v1/traces`` appended), ``OTEL_SDK_DISABLED`` is not ``true`` and
``OTEL_TRACES_EXPORTER`` is not ``none``. Deputy ships the OTLP/HTTP protobuf exporter only, so any other
exporter or protocol stops start-up (a :class:`ConfigError` naming the variable) rather than silently exporting
nothing. ``OTEL_EXPORTER_OTLP_TIMEOUT`` is in milliseconds, as the specification says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from deputy.config_values import ConfigError

Sampler = Literal["always_on", "always_off", "traceidratio",
                  "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"]
SAMPLERS: tuple[Sampler, ...] = ("always_on", "always_off", "traceidratio",
                                 "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio")
TRUE = "true"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    # The full URL spans are POSTed to; None: tracing is off.
    endpoint: str | None = None
    # May carry credentials for the collector: kept out of repr (settings are logged in error reports).
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 10.0  # seconds, per export request
    compression: Literal["gzip", "none"] = "none"
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    service_name: str = "deputy"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sampler: Sampler = "parentbased_always_on"
    sampler_ratio: float = 1.0
    schedule_delay_ms: int = 5000
    export_timeout_ms: int = 30000
    max_queue_size: int = 2048
    max_export_batch_size: int = 512

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


def tracing_settings(environ: Mapping[str, str]) -> TracingSettings:
    """The ``OTEL_*`` variables Deputy honours (see the module docstring); off when no endpoint is given."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == TRUE:
        return TracingSettings()
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter == "none":
        return TracingSettings()
    if exporter != "otlp":
        raise ConfigError("OTEL_TRACES_EXPORTER", f"must be otlp or none (Deputy ships the OTLP exporter only), "
                                                  f"got {exporter!r}")
    endpoint = _endpoint(environ)
    if endpoint is None:
        return TracingSettings()
    protocol = _signal(environ, "PROTOCOL") or "http/protobuf"
    if protocol != "http/protobuf":
        raise ConfigError(_signal_name(environ, "PROTOCOL"), f"must be http/protobuf, got {protocol!r}")
    compression = _signal(environ, "COMPRESSION") or "none"
    if compression not in ("gzip", "none"):
        raise ConfigError(_signal_name(environ, "COMPRESSION"), f"must be gzip or none, got {compression!r}")
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    attributes = _pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES"), "OTEL_RESOURCE_ATTRIBUTES")
    if sampler not in SAMPLERS:
        raise ConfigError("OTEL_TRACES_SAMPLER", f"must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    return TracingSettings(
        endpoint=endpoint,
        headers=_pairs(_signal(environ, "HEADERS"), _signal_name(environ, "HEADERS"), secret=True),
        timeout=_integer(_signal(environ, "TIMEOUT"), _signal_name(environ, "TIMEOUT"), 10000, 1, 600_000) / 1000,
        compression="gzip" if compression == "gzip" else "none",
        certificate=_signal(environ, "CERTIFICATE") or None,
        client_certificate=_signal(environ, "CLIENT_CERTIFICATE") or None,
        client_key=_signal(environ, "CLIENT_KEY") or None,
        # OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES, which wins over the default.
        service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or attributes.get("service.name") or "deputy",
        resource_attributes=attributes,
        sampler=next(s for s in SAMPLERS if s == sampler),
        sampler_ratio=_ratio(environ.get("OTEL_TRACES_SAMPLER_ARG"), sampler),
        schedule_delay_ms=_integer(environ.get("OTEL_BSP_SCHEDULE_DELAY"), "OTEL_BSP_SCHEDULE_DELAY", 5000, 1,
                                   600_000),
        export_timeout_ms=_integer(environ.get("OTEL_BSP_EXPORT_TIMEOUT"), "OTEL_BSP_EXPORT_TIMEOUT", 30000, 1,
                                   600_000),
        max_queue_size=_integer(environ.get("OTEL_BSP_MAX_QUEUE_SIZE"), "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1 << 20),
        max_export_batch_size=_integer(environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                                       "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1 << 20),
    )


def _signal(environ: Mapping[str, str], name: str) -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>`` (the signal-specific one wins)."""
    return (environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(f"OTEL_EXPORTER_OTLP_{name}") or "").strip()


def _signal_name(environ: Mapping[str, str], name: str) -> str:
    """Which of the two variables :func:`_signal` read, to name it in an error."""
    specific = f"OTEL_EXPORTER_OTLP_TRACES_{name}"
    return specific if environ.get(specific) else f"OTEL_EXPORTER_OTLP_{name}"


def _endpoint(environ: Mapping[str, str]) -> str | None:
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    key, url = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces
    if not traces:
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        key, url = "OTEL_EXPORTER_OTLP_ENDPOINT", f"{base.removesuffix('/')}/v1/traces"
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, "must be an http or https URL, e.g. http://127.0.0.1:4318")
    return url


def _pairs(value: str | None, key: str, *, secret: bool = False) -> dict[str, str]:
    """A W3C Baggage-style ``key=value,...`` list with percent-encoded values (OTLP headers, resource attributes)."""
    pairs: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name or not name.isascii() or not name.isprintable():
            # The value is not echoed: OTLP headers usually hold a collector's credentials.
            shown = "" if secret else f": {item.strip()!r}"
            raise ConfigError(key, f"must be a comma-separated list of name=value{shown}")
        pairs[name.lower() if secret else name] = unquote(raw.strip())
    return pairs


def _integer(value: str | None, key: str, default: int, low: int, high: int) -> int:
    if value is None or not value.strip():
        return default
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ConfigError(key, f"must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def _ratio(value: str | None, sampler: str) -> float:
    if not sampler.endswith("traceidratio") or value is None or not value.strip():
        return 1.0
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError("OTEL_TRACES_SAMPLER_ARG", f"must be a ratio from 0 to 1, got {value.strip()!r}")
    return ratio
