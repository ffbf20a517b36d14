"""Each request to ``/mcp/NAME`` observed once (issue 13): its stages timed, its outcome named, and at its end one
record fed to the metrics (:mod:`deputy.telemetry.metrics`), one log line (logger ``deputy.requests``,
:mod:`deputy.telemetry.logs`) and the request's trace span (:mod:`deputy.telemetry.tracing`, W3C Trace Context).

The gateway (:mod:`deputy.gateway.proxy`) only marks stage boundaries on a :class:`RequestObservation`:

- ``authenticate``: Host/Origin, the bearer token (RFC 6750 §2.1, RFC 9068) and the session binding;
- ``decide``: the policy decision and the list filter made before forwarding;
- ``audit``: the append of the call's decision record (or of a refusal's);
- ``upstream``: from handing the call to the upstream until its answer is **done** — the body ended, the client
  left or the upstream broke off — not until the answer's headers: an SSE answer's headers leave before the tool has
  run. A GET's stream lasts as long as the client keeps it, so the upstream stage of a request without a JSON-RPC
  message (GET, DELETE; method ``none``) is not put in the stage histogram; its whole duration is still in the
  request histogram under method ``none``.

The end-to-end duration runs from the request's arrival until its answer is done in the same way. Stage times
come from one monotonic clock; the trace span gets them on the wall clock (``time.time_ns``) through one offset
taken when the request arrived.

Outcomes (:class:`RequestOutcome`) are a closed set: a request forwarded is ``forwarded``, or ``upstream_error``
when the upstream failed (Deputy answered 502 in its stead, its stream broke off, or it answered 5xx); a policy
refusal is ``denied``, ``held`` (waits for an approval), ``step_up`` or ``unavailable``; a call that needs the user
to connect her account at the upstream first (``credentials = "oauth"``, :mod:`deputy.gateway.connection_answers`)
is ``connection_needed``; any other refusal is named
by the status Deputy answered (RFC 9110 §15): ``unauthorized`` 401, ``forbidden`` 403, ``not_found`` 404,
``method_not_allowed`` 405, ``timeout`` 408, ``too_large`` 413, ``bad_request`` 400 and any other 4xx,
``unavailable`` 503 and any other 5xx, ``gone`` when the client left before an answer.

Every label value is bounded whatever a client sends: a server name from the configuration (else ``unknown``), a
method from :data:`~deputy.telemetry.metrics.MCP_METHODS` (else ``other``), an outcome, a decision, an error kind.
The tool name, the client's to choose, is only in the log line and the span, for ``tools/call`` only, cut to
:data:`MAX_TOOL_LOGGED` characters (the log formatters escape what it holds); never an argument or a token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Scope, Send

from deputy.gateway.jsonrpc import Category, McpMessage
from deputy.gateway.policy_lifecycle import Unavailable
from deputy.gateway.policy_stage import Held
from deputy.policy import Decision, Outcome
from deputy.telemetry.metrics import Metrics, method_label

if TYPE_CHECKING:
    from deputy.telemetry.tracing import TraceContext, Tracing

log = logging.getLogger("deputy.requests")

AUTHENTICATE, DECIDE, AUDIT, UPSTREAM = "authenticate", "decide", "audit", "upstream"
STAGES = (AUTHENTICATE, DECIDE, AUDIT, UPSTREAM)
UNKNOWN_SERVER = "unknown"  # the server label of a path that names no configured server
MAX_TOOL_LOGGED = 128  # MCP tool names are 1 to 128 characters (Tools, "Tool Names")
# Set in the ASGI scope by an HTTP upstream that failed (mark_upstream_error): the kind of failure, for
# deputy_upstream_errors. A gateway-internal key, as ASGI allows servers and applications to add.
UPSTREAM_ERROR_KEY = "deputy.upstream_error"


class RequestOutcome(StrEnum):
    """How a gateway request ended (the module docstring says when each applies)."""

    FORWARDED = "forwarded"
    UPSTREAM_ERROR = "upstream_error"
    DENIED = "denied"
    HELD = "held"
    STEP_UP = "step_up"
    UNAVAILABLE = "unavailable"
    CONNECTION_NEEDED = "connection_needed"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    BAD_REQUEST = "bad_request"
    GONE = "gone"


_REFUSALS = {0: RequestOutcome.GONE, 400: RequestOutcome.BAD_REQUEST, 401: RequestOutcome.UNAUTHORIZED,
             403: RequestOutcome.FORBIDDEN, 404: RequestOutcome.NOT_FOUND, 405: RequestOutcome.METHOD_NOT_ALLOWED,
             408: RequestOutcome.TIMEOUT, 413: RequestOutcome.TOO_LARGE, 502: RequestOutcome.UPSTREAM_ERROR,
             503: RequestOutcome.UNAVAILABLE}


def refusal_outcome(status: int) -> RequestOutcome:
    """The outcome of a request Deputy answered itself, by the status it answered."""
    known = _REFUSALS.get(status)
    if known is not None:
        return known
    return RequestOutcome.BAD_REQUEST if status < 500 else RequestOutcome.UNAVAILABLE


def mark_upstream_error(scope: Scope, kind: str) -> None:
    """An HTTP upstream failed this request (``kind``: unreachable, timeout, broken, refused, too_large,
    busy: no pooled connection free in time, :mod:`deputy.gateway.stream_caps`)."""
    scope[UPSTREAM_ERROR_KEY] = kind


@dataclass(slots=True, eq=False)
class RequestObservation:
    """What one request did, as the gateway marks it; read once, by :meth:`RequestObserver.finish`."""

    send: Send  # the client's own
    started: int = field(default_factory=time.perf_counter_ns)
    wall: int = field(default_factory=time.time_ns)  # the same instant as ``started``, on the wall clock
    server: str = UNKNOWN_SERVER
    method: str = "none"  # a bounded label (method_label)
    tool: str | None = None
    status: int = 0  # the status of the answer's http.response.start; 0 while none was sent
    outcome: RequestOutcome | None = None  # set for a forward and for a policy refusal; else read from the status
    decision: str | None = None  # allow, deny, step_up, approval, unavailable; None: no policy decided
    decision_id: str | None = None
    trace: TraceContext | None = None
    stages: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def trace_id(self) -> str | None:
        return self.trace.trace_id if self.trace is not None else None

    def relay(self, message: Message) -> Awaitable[None]:
        """The client's ``send`` with the answer's status noted on the way (no coroutine of its own)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
        return self.send(message)

    def stage(self, name: str, started: int) -> None:
        """``name`` ran from ``started`` (``time.perf_counter_ns()``) until now."""
        self.stages.append((name, started, time.perf_counter_ns()))

    def asked(self, message: McpMessage) -> None:
        self.method = method_label(message.method)
        name = message.operation.name
        if message.operation.category is Category.TOOL_CALL and name is not None:
            self.tool = name[:MAX_TOOL_LOGGED]

    def decided(self, decided: Decision | Held | Unavailable | None) -> None:
        """Note the policy's answer; a refusal also names the request's outcome."""
        if isinstance(decided, Unavailable):
            self.decision, self.outcome = "unavailable", RequestOutcome.UNAVAILABLE
        elif isinstance(decided, Held):
            self.decision, self.outcome = "approval", RequestOutcome.HELD
            self.decision_id = decided.decision.decision_id
        elif decided is not None:
            self.decision_id = decided.decision_id
            if decided.allowed:
                self.decision = "allow"
            elif decided.outcome is Outcome.STEP_UP:
                self.decision, self.outcome = "step_up", RequestOutcome.STEP_UP
            elif decided.outcome is Outcome.APPROVAL_REQUIRED:
                self.decision, self.outcome = "approval", RequestOutcome.HELD
            else:
                self.decision, self.outcome = "deny", RequestOutcome.DENIED


class RequestObserver:
    """Feeds each finished :class:`RequestObservation` to the metrics, the log and the trace."""

    def __init__(self, metrics: Metrics, tracing: Tracing | None, http_servers: Iterable[str]) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.http_servers = frozenset(http_servers)  # stdio upstreams count their own errors
        # Label children kept once made: labels() costs a lock and string checks per call. The keys are bounded
        # (module docstring), so these are too.
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._decisions: dict[tuple[str, str], Any] = {}
        self._stages = {name: metrics.stage_seconds.labels(name) for name in STAGES}

    def begin(self, send: Send, traceparent: bytes | None = None,
              tracestate: bytes | None = None) -> RequestObservation:
        seen = RequestObservation(send)
        if self.tracing is not None:
            seen.trace = self.tracing.begin(traceparent, tracestate)
        return seen

    def finish(self, seen: RequestObservation, scope: Scope) -> None:
        ended = time.perf_counter_ns()
        failure: str | None = scope.get(UPSTREAM_ERROR_KEY)
        if seen.outcome is RequestOutcome.FORWARDED:
            failed = failure is not None or seen.status >= 500
            outcome = RequestOutcome.UPSTREAM_ERROR if failed else RequestOutcome.FORWARDED
            if failed and seen.server in self.http_servers:
                self._count_upstream_error(seen.server, failure or "status")
        else:
            outcome = seen.outcome or refusal_outcome(seen.status)
        self._measure(seen, outcome, ended)
        if log.isEnabledFor(logging.INFO):
            # The record made here rather than by log.info: that would walk the stack for the caller's file and line
            # on every request, which no line of Deputy's prints.
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "mcp request", (), None, "finish", {
                "server": seen.server, "method": seen.method, "tool": seen.tool, "outcome": outcome.value,
                "status": seen.status, "duration_ms": round((ended - seen.started) / 1e6, 3),
                "decision_id": seen.decision_id, "trace_id": seen.trace_id}))
        if seen.trace is not None and self.tracing is not None:
            offset = seen.wall - seen.started
            self.tracing.finish(seen.trace, server=seen.server, method=seen.method, tool=seen.tool,
                                status=seen.status, outcome=outcome.value, start_ns=seen.wall, end_ns=ended + offset,
                                stages=[(name, start + offset, end + offset) for name, start, end in seen.stages])

    def _measure(self, seen: RequestObservation, outcome: RequestOutcome, ended: int) -> None:
        metrics = self.metrics
        key = (seen.server, seen.method, outcome.value)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = metrics.requests.labels(*key)
        counter.inc()
        duration = self._durations.get(key[:2])
        if duration is None:
            duration = self._durations[key[:2]] = metrics.request_seconds.labels(*key[:2])
        duration.observe((ended - seen.started) / 1e9)
        for name, start, end in seen.stages:
            if name != UPSTREAM or seen.method != "none":
                self._stages[name].observe((end - start) / 1e9)
        if seen.decision is not None:
            decided = self._decisions.get((seen.server, seen.decision))
            if decided is None:
                decided = self._decisions[(seen.server, seen.decision)] = metrics.decisions.labels(
                    seen.server, seen.decision)
            decided.inc()

    def _count_upstream_error(self, server: str, kind: str) -> None:
        self.metrics.upstream_errors.labels(server, kind).inc()  # rare: no child kept
