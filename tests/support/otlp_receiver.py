"""An OTLP/HTTP trace receiver on a loopback port, in a thread: which spans did Deputy export?

OpenTelemetry Protocol, "OTLP/HTTP": ``POST /v1/traces`` with a binary protobuf ``ExportTraceServiceRequest``
(``Content-Type: application/x-protobuf``, optionally ``Content-Encoding: gzip``), answered 200 with an empty
``ExportTraceServiceResponse``. The request is decoded with the ``opentelemetry.proto`` classes and each span kept as
a :class:`ReceivedSpan` with its ids in lowercase hex, as W3C Trace Context writes them.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    trace_state: str
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "int_value", "bool_value", "double_value") else None


class OtlpReceiver:
    """The spans received so far (all of them, in arrival order), and a way to wait for the ones a test expects."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._changed = threading.Condition()

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None, kind=span.kind,
                        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes}, trace_state=span.trace_state,
                        resource=resource))
        with self._changed:
            self.requests += 1
            self.spans.extend(spans)
            self._changed.notify_all()

    def wait_for(self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans once ``found`` holds of them; AssertionError when it does not within ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: found(list(self.spans)), timeout):
                raise AssertionError(f"the expected spans did not arrive; received: {self.spans}")
            return list(self.spans)

    def trace(self, trace_id: str, count: int, timeout: float = 30.0) -> list[ReceivedSpan]:
        """The first ``count`` spans of the trace ``trace_id``, once that many arrived."""
        spans = self.wait_for(lambda spans: sum(s.trace_id == trace_id for s in spans) >= count, timeout)
        return [s for s in spans if s.trace_id == trace_id]


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, OtlpReceiver]]:
    """A receiver on a free loopback port; yields (its base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``, the receiver)."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            receiver.receive(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
