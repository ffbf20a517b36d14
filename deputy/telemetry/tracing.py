"""Traces: one span per gateway request, continued from the client's W3C Trace Context and passed upstream.

The W3C Trace Context headers are read and written by :mod:`deputy.telemetry.trace_context`.

Off by default and free when off: with no OTLP endpoint (:mod:`deputy.telemetry.trace_settings`), :meth:`Tracing.begin`
returns None at once for a request without a ``traceparent`` and the OpenTelemetry SDK is never imported; a valid
client ``traceparent`` still yields a :class:`TraceContext`, so its trace id reaches the audit record and the log line
and the upstream, but nothing is exported. When on, spans are built after the request with the ids and times the
gateway observed (:mod:`deputy.telemetry.trace_export`); exporting happens on the SDK's batch thread, and a collector
that is down costs dropped spans, never a failed call (tracing is not a security check).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from deputy.telemetry.trace_context import (
    FLAG_RANDOM,
    FLAG_SAMPLED,
    TraceContext,
    new_id,
    parse_traceparent,
    parse_tracestate,
    trace_headers,
)
from deputy.telemetry.trace_settings import TracingSettings, tracing_settings

if TYPE_CHECKING:
    from deputy.telemetry.trace_export import SpanExport

__all__ = ["TraceContext", "Tracing", "trace_headers"]

log = logging.getLogger(__name__)


class Tracing:
    """Starts each gateway request's :class:`TraceContext` and exports its spans when it is over."""

    def __init__(self, settings: TracingSettings | None = None) -> None:
        self.settings = settings or TracingSettings()
        self.enabled = self.settings.enabled
        self._export: SpanExport | None = None
        if self.enabled:
            # Imported only when tracing is on: a Deputy without traces never loads the SDK.
            from deputy.telemetry.trace_export import SpanExport
            self._export = SpanExport(self.settings)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Tracing:
        return cls(tracing_settings(environ))

    def begin(self, traceparent: bytes | None, tracestate: bytes | None) -> TraceContext | None:
        """A new request's context: the client's trace continued when its ``traceparent`` is valid, else a new
        trace when tracing is on; None when tracing is off and no valid ``traceparent`` came."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            if not self.enabled:
                return None
            trace_id = new_id(128)
            return TraceContext(trace_id, new_id(64), new_id(64), None, self._sample_root(trace_id), None, True)
        trace_id, parent_id, flags = parent
        sampled = bool(flags & FLAG_SAMPLED)
        if self.enabled and not self.settings.sampler.startswith("parentbased_"):
            sampled = self._sample_root(trace_id)
        return TraceContext(trace_id, new_id(64), new_id(64), parent_id, sampled,
                            parse_tracestate(tracestate) if tracestate else None, bool(flags & FLAG_RANDOM))

    def _sample_root(self, trace_id: str) -> bool:
        """OTel's ``always_on``/``always_off``/``traceidratio`` samplers (and the parentbased ones' root)."""
        sampler = self.settings.sampler.removeprefix("parentbased_")
        if sampler == "always_on":
            return True
        if sampler == "always_off":
            return False
        # TraceIdRatioBased: the trace-id's lower 64 bits below ratio x 2^64, so every service agrees.
        return int(trace_id[16:], 16) < round(self.settings.sampler_ratio * ((1 << 64) - 1))

    def finish(self, context: TraceContext, *, server: str, method: str | None, tool: str | None, status: int,
               outcome: str, start_ns: int, end_ns: int, stages: Sequence[tuple[str, int, int]]) -> None:
        """Export the request span and a child per stage (``stages``: name in :data:`STAGES`, start and end from
        ``time.time_ns()``), with the context's ids; nothing when tracing is off or the trace is not sampled."""
        if self._export is None or not context.sampled:
            return
        try:
            self._export.request(context, server=server, method=method, tool=tool, status=status, outcome=outcome,
                                 start_ns=start_ns, end_ns=end_ns, stages=stages)
        except Exception:  # telemetry fails open: a span lost, never a request's end disturbed
            log.warning("a request's spans could not be recorded", exc_info=True)

    async def shutdown(self) -> None:
        """Flush what is queued (bounded by ``OTEL_BSP_EXPORT_TIMEOUT``); called once at application shutdown."""
        if self._export is not None:
            export, self._export = self._export, None
            await export.shutdown()
