"""The gateway endpoint ``/mcp/NAME``: authenticate, bind the session, hand over to the upstream.

MCP transports, Streamable HTTP (2026-07-28): POST, GET (SSE stream) and DELETE
on one endpoint. Every request is authenticated first (:mod:`deputy.gateway.bearer`);
a presented ``Mcp-Session-Id`` must have been issued to the same principal
(:mod:`deputy.gateway.sessions`), else it is answered like an unknown session
(404). Request bodies are read whole (capped) so later stages can decide on
them: a POST body must be exactly one well-formed JSON-RPC message
(:mod:`deputy.gateway.jsonrpc`), else it is answered 400 with the JSON-RPC error
and nothing is forwarded; the parsed message travels on the :class:`Exchange`,
while upstreams receive the original bytes. A call to be forwarded is first
decided (:mod:`deputy.gateway.policy_stage`) and its decision committed to the audit
log (:mod:`deputy.gateway.audit_stage`): no record, no call. Responses are streamed by the
upstream implementation. A server with ``credentials = "oauth"`` is then sent the user's own token, asked for
only now (:mod:`deputy.gateway.connection_answers`): without one she is sent to connect. For a server with policies
every answer relayed — to a POST, on a
GET stream, replayed on a resumed one — passes the one list filter on its way back
(:mod:`deputy.gateway.response_rewrite`, :meth:`PolicyStage.answer_filter`; a list request's
filter is made before it is forwarded, :meth:`PolicyStage.list_filter`).

Each request is observed once (:mod:`deputy.gateway.observation`): its stages timed, its outcome named, and at its
end a count, a log line and a trace span (W3C Trace Context, its ``traceparent`` and ``tracestate`` read here).

This is a raw ASGI application: the hot path allocates no framework objects.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from deputy.audit.log import AuditUnavailable
from deputy.config import UpstreamServer
from deputy.gateway.audit_stage import AuditStage
from deputy.gateway.bearer import BearerAuthenticator, Refusal
from deputy.gateway.connection_answers import OAuthCall, UserConnections
from deputy.gateway.exchange import Exchange, Upstream
from deputy.gateway.held_calls import (
    declares_url_elicitation,
    declined_approval,
    denial_data,
    input_required,
    without_own_input,
)
from deputy.gateway.jsonrpc import McpMessage
from deputy.gateway.observation import (
    AUDIT,
    AUTHENTICATE,
    DECIDE,
    UPSTREAM,
    RequestObservation,
    RequestObserver,
    RequestOutcome,
)
from deputy.gateway.origin_check import OriginCheck
from deputy.gateway.policy_lifecycle import Unavailable
from deputy.gateway.policy_stage import Held, PolicyStage
from deputy.gateway.principal import Principal
from deputy.gateway.request_reading import MAX_REQUEST_BODY, BodyRefused, RequestHeaders, read_body, read_message
from deputy.gateway.response_rewrite import RewriteResult
from deputy.gateway.responses import (
    ANSWERED,
    JSONRPC_INTERNAL_ERROR,
    JSONRPC_INVALID_REQUEST,
    Answered,
    jsonrpc_error,
    send_json,
)
from deputy.gateway.sessions import SessionBinder
from deputy.gateway.stream_caps import CallCaps, CapReached, StreamCaps
from deputy.gateway.stream_lifetime import stream_end
from deputy.gateway.tools_watch import watching_tools
from deputy.limits import LimitSettings
from deputy.policy import POLICY_DENIED, Decision, Outcome
from deputy.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from deputy.telemetry.tracing import Tracing

PREFIX = "/mcp/"
ALLOWED_METHODS = frozenset({"POST", "GET", "DELETE"})



@dataclass(slots=True)
class Forwarding:
    """What is sent upstream and how its answer comes back, as the steps before forwarding left it."""

    send: Send
    body: bytes
    seen: RequestObservation
    rewrite: RewriteResult | None = None
    answers_list: bool = False
    finish: Callable[[], Awaitable[None]] | None = None  # records the call's outcome once it is answered
    session_id: str | None = None  # as the client presented it (an oauth server's answers read what it declared)


class Gateway:
    """``/mcp/NAME``: each request goes through the steps of :meth:`_serve` in order; any step may answer it
    (a refusal) and end it there, and a call is forwarded only after all of them let it through. :meth:`__call__`
    observes the whole (:mod:`deputy.gateway.observation`)."""

    def __init__(
        self,
        servers: Mapping[str, UpstreamServer],
        authenticator: BearerAuthenticator,
        upstreams: Mapping[str, Upstream],
        sessions: SessionBinder,
        origin_check: OriginCheck,
        audit: AuditStage,
        policy: PolicyStage | None = None,
        body_timeout: float = 30.0,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        connections: UserConnections | None = None,  # needed by credentials = "oauth" servers
        streams: StreamCaps | None = None,  # GET streams per principal and per session (limits.streams_per_…)
        calls: CallCaps | None = None,  # calls in flight per user on a server (limits.calls_per_user)
    ) -> None:
        self.streams = streams or StreamCaps.from_limits(LimitSettings())
        self.calls = calls or CallCaps(LimitSettings().calls_per_user)
        self.connections = connections
        self.body_timeout = body_timeout
        self.origin_check = origin_check
        self.policy = policy
        self.audit = audit
        self.servers = servers
        self.authenticator = authenticator
        self.upstreams = upstreams
        self.sessions = sessions
        self.observer = RequestObserver(metrics or Metrics(), tracing,
                                        (name for name, server in servers.items() if server.url is not None))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = RequestHeaders.read(scope["headers"])
        seen = self.observer.begin(send, headers.traceparent, headers.tracestate)
        try:
            await self._serve(scope, receive, seen.relay, headers, seen)
        finally:
            self.observer.finish(seen, scope)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, headers: RequestHeaders,
                     seen: RequestObservation) -> None:
        server = await self._server_for(scope, send)
        if isinstance(server, Answered):
            return
        seen.server = server.name
        started = time.perf_counter_ns()
        admitted = await self._admit(scope, send, server, headers)
        seen.stage(AUTHENTICATE, started)
        if isinstance(admitted, Answered):
            return
        principal, upstream_session = admitted
        body = await self._receive_body(receive, send, headers.declared_length)
        if isinstance(body, Answered):
            return
        message = await read_message(scope["method"], send, body, headers, doubles=server.big_integers == "refuse")
        if isinstance(message, Answered):
            return
        if message is not None:
            seen.asked(message)
        upstream = await self._upstream_for(send, server, message)
        if isinstance(upstream, Answered):
            return
        # A call holds its place from before it is decided (an approval may be used up) until its answer ends.
        call = self.calls.take(principal) if scope["method"] != "GET" else None
        if isinstance(call, CapReached):
            await call.answer(send, "too many calls in flight to this server")
            return
        try:
            forwarding = Forwarding(send, body, seen, session_id=headers.session_id)
            if message is not None:
                cleared = await self._clear_call(forwarding, server, principal, message)
                if isinstance(cleared, Answered):
                    return
            self._filter_answers(forwarding, server, principal)
            oauth = None
            if server.credentials == "oauth":  # her own token, asked for only once the call is decided and recorded
                oauth = OAuthCall(self.connections, server, principal, message, self.sessions, headers.session_id, seen)
                if not await oauth.prepare(forwarding.send):
                    if forwarding.finish is not None:
                        await forwarding.finish()
                    return
            # A GET stream holds its places until it ends, whichever way (client gone, upstream done, cancelled).
            hold = self.streams.take(principal, headers.session_id) if scope["method"] == "GET" else None
            if isinstance(hold, CapReached):
                await hold.answer(forwarding.send, "too many event streams open")
                return
            seen.outcome = RequestOutcome.FORWARDED
            started = time.perf_counter_ns()
            ends = (stream_end(principal, self.streams.ending, self.authenticator.validator.is_revoked)
                    if hold is not None else None)
            try:
                await upstream.forward(Exchange(
                    scope=scope,
                    receive=receive,
                    send=forwarding.send,
                    principal=principal,
                    body=forwarding.body,
                    session=upstream_session,
                    bind_session=(functools.partial(self.sessions.outward, principal) if oauth is None
                                  else oauth.bind_session),
                    message=message,
                    rewrite_result=forwarding.rewrite,
                    answers_list=forwarding.answers_list,
                    trace=seen.trace,
                    upstream_headers=oauth.headers if oauth is not None else (),
                    refusals=oauth,
                    stream_ends=ends[0] if ends is not None else None,
                ))
            finally:
                if ends is not None:
                    ends[1].cancel()
                if hold is not None:
                    hold.release()
                seen.stage(UPSTREAM, started)
                if forwarding.finish is not None:
                    await forwarding.finish()
        finally:
            if call is not None:
                call()

    async def _server_for(self, scope: Scope, send: Send) -> UpstreamServer | Answered:
        """The MCP server the path names, asked with a method of the transport (else 404, 405)."""
        server = self.servers.get(scope["path"][len(PREFIX):])
        if server is None:
            await send_json(send, 404, {"error": "not_found", "error_description": "no such MCP server"})
            return ANSWERED
        if scope["method"] not in ALLOWED_METHODS:
            await send_json(send, 405, jsonrpc_error(JSONRPC_INVALID_REQUEST, "method not allowed"),
                            [(b"allow", b"GET, POST, DELETE")])
            return ANSWERED
        return server

    async def _admit(self, scope: Scope, send: Send, server: UpstreamServer,
                     headers: RequestHeaders) -> tuple[Principal, str | None] | Answered:
        """Who asks, and the upstream session their ``Mcp-Session-Id`` stands for: Host and Origin allowed (403),
        the bearer token valid for this server (:mod:`deputy.gateway.bearer`), the session theirs (404)."""
        if not self.origin_check.allows(headers.host, headers.origin):
            await send_json(send, 403, jsonrpc_error(JSONRPC_INVALID_REQUEST, "Host or Origin not allowed"))
            return ANSWERED
        principal = self.authenticator.authenticate(server, headers.authorization, scope["query_string"])
        if isinstance(principal, Refusal):
            await self._refuse(send, principal)
            return ANSWERED
        if headers.session_id is None:
            return principal, None
        upstream_session = self.sessions.inward(principal, headers.session_id)
        if upstream_session is None:
            await send_json(send, 404, jsonrpc_error(JSONRPC_INVALID_REQUEST, "session not found"))
            return ANSWERED
        return principal, upstream_session or None  # "": Deputy's own session, none upstream

    async def _receive_body(self, receive: Receive, send: Send, declared: int) -> bytes | Answered:
        """The whole request body, within the size cap (413) and in time (408); nothing once the client left."""
        # A declared length far past the cap is refused unread. One just past it is read up to the cap first: an
        # answer given while a client still has most of its body in flight reaches it as a connection reset.
        body = (BodyRefused.TOO_LARGE if declared > 2 * MAX_REQUEST_BODY
                else await read_body(receive, asyncio.get_running_loop().time() + self.body_timeout))
        if not isinstance(body, BodyRefused):
            return body
        if body is not BodyRefused.GONE:  # the connection is closed, so the rest of the body is never read
            await send_json(send, body.value[0], jsonrpc_error(JSONRPC_INVALID_REQUEST, body.value[1]),
                            [(b"connection", b"close")])
        return ANSWERED

    async def _upstream_for(self, send: Send, server: UpstreamServer,
                            message: McpMessage | None) -> Upstream | Answered:
        """The connection to the server's upstream (502 when there is none)."""
        upstream = self.upstreams.get(server.name)
        if upstream is None:
            await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream not available",
                                                     request_id=message.id if message is not None else None))
            return ANSWERED
        return upstream

    async def _clear_call(self, forwarding: Forwarding, server: UpstreamServer, principal: Principal,
                          message: McpMessage) -> Answered | None:
        """Let ``message`` through only once it is decided (policy) and its decision is durable (audit)."""
        decided = await self._decide(forwarding, server, principal, message)
        if isinstance(decided, Answered):
            return ANSWERED
        if self.audit.records(message):
            # Durable before forwarding: no record, no call.
            seen, started = forwarding.seen, time.perf_counter_ns()
            try:
                decision_id = seen.decision_id = await self.audit.decision(principal, message, decided, "allow",
                                                                           trace_id=seen.trace_id)
            except AuditUnavailable:
                await send_json(forwarding.send, 503, jsonrpc_error(
                    JSONRPC_INTERNAL_ERROR, "the audit log is unavailable; try again later", request_id=message.id),
                    [(b"retry-after", b"5")])
                return ANSWERED
            finally:
                seen.stage(AUDIT, started)
            forwarding.send, forwarding.finish = self.audit.outcome_recorder(forwarding.send, principal, message,
                                                                             decision_id, trace_id=seen.trace_id)
        forwarding.body = without_own_input(message) or forwarding.body
        return None

    async def _decide(self, forwarding: Forwarding, server: UpstreamServer, principal: Principal,
                      message: McpMessage) -> Decision | Answered | None:
        """The policy's permit for ``message`` (None: the server has no policies, or none applies); a refusal is
        recorded and answered. A list request's filter is made here, before the request is forwarded."""
        if self.policy is None:
            return None
        seen, started = forwarding.seen, time.perf_counter_ns()
        decided = await self.policy.decide(principal, message)
        if decided is not None and not (isinstance(decided, Decision) and decided.allowed):
            seen.stage(DECIDE, started)
            seen.decided(decided)
            started = time.perf_counter_ns()
            await self._record_refusal(principal, message, decided, seen.trace_id)
            seen.stage(AUDIT, started)
            await self._deny(forwarding, server, principal, message, decided)
            return ANSWERED
        filtered = await self.policy.list_filter(principal, message)
        seen.stage(DECIDE, started)
        seen.decided(filtered if isinstance(filtered, Unavailable) else decided)
        if isinstance(filtered, Unavailable):
            await self._deny(forwarding, server, principal, message, filtered)
            return ANSWERED
        forwarding.rewrite = filtered
        forwarding.answers_list = filtered is not None
        return decided if isinstance(decided, Decision) else None  # here an allowing decision, or none

    def _filter_answers(self, forwarding: Forwarding, server: UpstreamServer, principal: Principal) -> None:
        """For a server with policies, whatever answers the request passes the list filter and is watched for
        ``notifications/tools/list_changed``."""
        if self.policy is None or server.name not in self.policy.policies:
            return
        forwarding.send = watching_tools(forwarding.send,
                                          functools.partial(self.policy.tools_changed, server.name, principal))
        if forwarding.rewrite is None:  # whatever answers this request may still carry a list: filtered all the same
            forwarding.rewrite = self.policy.answer_filter(principal)

    async def _record_refusal(self, principal: Principal, message: McpMessage,
                              decided: Decision | Held | Unavailable, trace_id: str | None) -> None:
        if not self.audit.records_refusal(message):
            return
        if isinstance(decided, Held):
            await self.audit.refusal(principal, message, decided.decision, str(decided.decision.outcome),
                                     approval_id=decided.approval.approval_id, trace_id=trace_id)
        elif isinstance(decided, Unavailable):
            await self.audit.refusal(principal, message, None, "unavailable", reason=decided.reason,
                                     trace_id=trace_id)
        else:
            await self.audit.refusal(principal, message, decided, str(decided.outcome), trace_id=trace_id)

    async def _deny(self, forwarding: Forwarding, server: UpstreamServer, principal: Principal,
                    message: McpMessage, decided: Decision | Held | Unavailable) -> None:
        """Answer a call that will not be forwarded (:mod:`deputy.gateway.policy_stage`)."""
        send = forwarding.send
        if isinstance(decided, Unavailable) and decided.connection is not None:  # her connection could not read
            oauth = OAuthCall(self.connections, server, principal, message, self.sessions, forwarding.session_id,
                              forwarding.seen)  # the server's tools: she is sent to connect, as for a call
            await oauth.tools_unread(send, decided.connection)
            return
        if isinstance(decided, Unavailable):
            await send_json(send, 503, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "policy decisions are unavailable for "
                                                     "this server; try again later", request_id=message.id),
                            [(b"retry-after", b"5")])
            return
        if isinstance(decided, Held):  # waits for a human approval: the client is told where to ask for it
            approval = decided.approval
            if message.id is not None and declares_url_elicitation(message) and not declined_approval(message):
                await send_json(send, 200, input_required(message, approval.approval_id, decided.approval_url,
                                                          approval.tool))
                return
            data = denial_data(decided.decision, approval.approval_id, decided.approval_url, approval.expires_at)
            await send_json(send, 200 if message.id is not None else 403, jsonrpc_error(
                POLICY_DENIED, decided.decision.error_message(), data, request_id=message.id))
            return
        body = jsonrpc_error(POLICY_DENIED, decided.error_message(), decided.error_data(), request_id=message.id)
        if decided.outcome is Outcome.STEP_UP:
            needed = sorted(set(principal.scopes) | set(decided.required_scopes))
            challenge = self.authenticator.challenge(server, "insufficient_scope", None, needed)
            await send_json(send, 403, body, [(b"www-authenticate", challenge.encode())])
            return
        await send_json(send, 200 if message.id is not None else 403, body)

    async def _refuse(self, send: Send, refusal: Refusal) -> None:
        headers = []
        if refusal.www_authenticate is not None:
            headers.append((b"www-authenticate", refusal.www_authenticate.encode()))
        body = {"error": refusal.error or "unauthorized", "error_description": refusal.description}
        await send_json(send, refusal.status, body, headers)

