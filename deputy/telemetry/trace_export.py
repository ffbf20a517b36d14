"""A finished gateway request's spans, built with the OpenTelemetry SDK and sent by OTLP/HTTP (protobuf).

Imported only when tracing is on (:mod:`deputy.telemetry.tracing`). The spans are made after the request, through
the SDK's public tracer: each ``start_span`` is given the time the gateway observed, each ``end`` its end, and the
ids come from :class:`ChosenIds`, an ``IdGenerator`` that hands out the ids the request was given when it started
(the request span's id, and the upstream span's, which the upstream already saw in its ``traceparent``). Sampling was
decided then too, so the provider's own sampler records everything it is given.

Attributes follow the OpenTelemetry semantic conventions where one fits (``http.response.status_code``,
``mcp.method.name``, ``gen_ai.tool.name``); Deputy's own are ``deputy.*``. The ``BatchSpanProcessor`` queues at most
``OTEL_BSP_MAX_QUEUE_SIZE`` spans and drops beyond, and exports from its own thread, so a slow or absent collector
never holds a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from deputy.telemetry.trace_context import TraceContext, new_id
from deputy.telemetry.trace_settings import TracingSettings

SCOPE = "deputy.gateway"
KINDS = {"upstream": SpanKind.CLIENT}


class ChosenIds(IdGenerator):
    """Hands out the next chosen ids; :meth:`SpanExport.request` sets them right before each ``start_span`` (no await
    in between, so no other request's span can take them)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return True  # a trace Deputy starts has a trace-id from random.getrandbits (tracing.new_id)


class SpanExport:
    def __init__(self, settings: TracingSettings) -> None:
        self.ids = ChosenIds()
        resource = Resource({**settings.resource_attributes, "service.name": settings.service_name})
        self.provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, id_generator=self.ids)
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, certificate_file=settings.certificate,
            client_key_file=settings.client_key, client_certificate_file=settings.client_certificate,
            headers=dict(settings.headers), timeout=settings.timeout,
            compression=Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=settings.max_queue_size, schedule_delay_millis=settings.schedule_delay_ms,
            max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
            export_timeout_millis=settings.export_timeout_ms))
        self.tracer = self.provider.get_tracer(SCOPE)

    def request(self, context: TraceContext, *, server: str, method: str | None, tool: str | None, status: int,
                outcome: str, start_ns: int, end_ns: int, stages: Sequence[tuple[str, int, int]]) -> None:
        flags = trace_api.TraceFlags(context.flags)
        state = trace_api.TraceState.from_header([context.tracestate]) if context.tracestate else None
        parent_context = None
        if context.parent_span_id is not None:
            parent_context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(trace_api.SpanContext(
                int(context.trace_id, 16), int(context.parent_span_id, 16), is_remote=True, trace_flags=flags,
                trace_state=state)))
        asked = method is not None and method != "none"
        attributes: dict[str, str | int] = {"deputy.server": server, "deputy.outcome": outcome,
                                            "http.response.status_code": status}
        if asked and method is not None:
            attributes["mcp.method.name"] = method
        if tool is not None:
            attributes["gen_ai.tool.name"] = tool
        # "tools/call echo"; a request that carries no JSON-RPC message (the GET stream, DELETE; the gateway's method
        # label "none") is named by its route, as HTTP server spans are.
        name = " ".join(part for part in (method, tool) if part) if asked else f"/mcp/{server}"
        self.ids.trace_id, self.ids.span_id = int(context.trace_id, 16), int(context.span_id, 16)
        span = self.tracer.start_span(name, context=parent_context, kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=start_ns)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        children = trace_api.set_span_in_context(span)
        upstream_named = False
        for stage, stage_start, stage_end in stages:
            upstream = stage == "upstream" and not upstream_named
            upstream_named = upstream_named or upstream
            self.ids.span_id = int(context.upstream_span_id if upstream else new_id(64), 16)
            child = self.tracer.start_span(stage, context=children, kind=KINDS.get(stage, SpanKind.INTERNAL),
                                           start_time=stage_start)
            child.end(end_time=stage_end)
        span.end(end_time=end_ns)

    async def shutdown(self) -> None:
        # The SDK flushes synchronously (an HTTP export, up to its timeout): off the event loop.
        await asyncio.to_thread(self.provider.shutdown)
