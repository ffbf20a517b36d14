"""Upstream MCP servers reached over Streamable HTTP, with pooled connections.

Two aiohttp client sessions serve every HTTP upstream, one for calls and one for GET streams (so long-lived
streams never take a connection a call needs; places bounded by :class:`UpstreamPool`, and
:mod:`deputy.gateway.stream_caps`), so connections are kept alive and reused across calls (a new
connection per call is what made peers slow, ``shared/reference/performance.md``; httpx cost Deputy ~4 ms of CPU per
call in ``bench/``, most of it in its connection pool, so the hot path uses
aiohttp; :mod:`deputy.outbound_http` opens the session). Forwarding is
faithful: POST answered with JSON or SSE, the GET
stream, DELETE, ``MCP-Protocol-Version`` pass through, bodies are relayed chunk
by chunk — except the answers of a server with policies, which pass the list filter
(:mod:`deputy.gateway.response_rewrite`): a JSON body is then read whole (at most
``MAX_REWRITTEN``; beyond, the answer to a list request is a 502 and any other passes
on only while it cannot hold a list), an SSE stream — a POST's, the GET stream, a stream
resumed with ``Last-Event-ID`` — is rewritten event by event. An error Deputy answers
itself (an unreachable upstream, or one that breaks off before its answer's headers were
relayed: 502) carries the request's id; an upstream that breaks off later (killed
mid-stream) has its answer ended cleanly, marked incomplete
(:func:`deputy.gateway.responses.end_body`), with one warning naming the server. What is *not*
passed: the client's ``Authorization`` and cookies (MCP "Token Passthrough" is
forbidden), hop-by-hop headers (RFC 9110 §7.6.1), and the upstream's
``Set-Cookie``/``WWW-Authenticate``, which would speak for Deputy's origin. The
only credentials sent are Deputy's own for that server
(:mod:`deputy.gateway.upstream_credentials`: a token minted for the upstream,
configured headers, or none), or, for ``credentials = "oauth"``, the user's own upstream token carried by the
exchange (:mod:`deputy.gateway.connection_answers`, which also decides what an upstream 401/403 to that token
means: the request is sent once more with fresh headers, or the user is asked to connect); a client header of
the same name is dropped. The client's
``traceparent`` and ``tracestate`` are dropped too: W3C Trace Context §3.2 has each hop
send its own, so the upstream is sent Deputy's (:meth:`TraceContext.upstream_traceparent
<deputy.telemetry.trace_context.TraceContext.upstream_traceparent>`, naming Deputy's upstream
span as parent) and the validated ``tracestate``, or neither when the call has no trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp

from deputy.config import UpstreamServer
from deputy.gateway.exchange import Exchange, Headers, UpstreamRefusals
from deputy.gateway.observation import mark_upstream_error
from deputy.gateway.response_rewrite import (
    MAX_REWRITTEN,
    ListKeyScanner,
    RewriteResult,
    may_hold_list,
    rewrite_json_body,
    rewrite_sse,
)
from deputy.gateway.responses import (
    CLIENT_LEFT,
    JSONRPC_INTERNAL_ERROR,
    RETRY_AFTER,
    end_body,
    jsonrpc_error,
    relay_until_disconnect,
    send_json,
)
from deputy.gateway.stream_caps import Slots
from deputy.gateway.upstream_credentials import UpstreamCredentials
from deputy.gateway.upstream_pool import UPSTREAM_CALLS_PER_SERVER, UpstreamPool

log = logging.getLogger(__name__)

SESSION_HEADER = b"mcp-session-id"
DROP_REQUEST_HEADERS = frozenset({
    b"host", b"authorization", b"cookie", b"content-length", b"connection", b"keep-alive",
    b"proxy-authorization", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"accept-encoding", b"dpop", SESSION_HEADER, b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"origin", b"traceparent", b"tracestate",
    # The body's representation is Deputy's to state: the JSON it decided on (deputy.gateway.request_reading).
    b"content-type", b"content-encoding",
})
DROP_RESPONSE_HEADERS = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"trailer", b"upgrade", b"set-cookie",
    b"www-authenticate", SESSION_HEADER, b"server", b"date", b"proxy-authenticate",
})
# A response up to this size with a known length is read whole and sent in one piece.
SMALL_BODY = 64 * 1024


class HttpUpstream:
    def __init__(self, server: UpstreamServer, pool: UpstreamPool, credentials: UpstreamCredentials) -> None:
        assert server.url is not None  # config validation guarantees url for HTTP upstreams
        self.server = server
        self.url = server.url
        self.pool = pool
        self.credentials = credentials
        self.calls = Slots(UPSTREAM_CALLS_PER_SERVER)
        self.drop_request_headers = DROP_REQUEST_HEADERS | {n.encode("latin-1") for n in credentials.header_names}

    async def close(self) -> None:
        return None  # the shared pool is closed by its owner

    async def forward(self, exchange: Exchange) -> None:
        stream = exchange.method == "GET"
        give_back = await self.pool.admit(self.calls, stream, exchange.receive)
        if give_back is None or give_back is CLIENT_LEFT:
            await self._busy(exchange, stream, unread=give_back is CLIENT_LEFT)
            return
        try:
            await self._forward(exchange, self.pool.session_for(stream))
        finally:
            give_back()  # after the response's release below: its connection is back in the pool or closed

    async def _busy(self, exchange: Exchange, stream: bool, unread: bool) -> None:
        """No place in the pool: 503 with Retry-After (RFC 9110 §15.6.4), the request never sent; ``unread``: its
        client went away while it waited, and the answer (for the call's record) is marked so."""
        log.warning("upstream %s: no free %s connection; %s", self.server.name, "stream" if stream else "call",
                    "the client left while its call waited, the call not sent" if unread else "answered 503")
        mark_upstream_error(exchange.scope, "busy")
        message = ("too many event streams open to upstream servers" if stream
                   else "no free connection to the upstream server")
        await send_json(exchange.send, 503, jsonrpc_error(JSONRPC_INTERNAL_ERROR, f"{message}; try again later",
                                                          request_id=exchange.request_id),
                        [(b"retry-after", RETRY_AFTER)], unread=unread)

    async def _forward(self, exchange: Exchange, session: aiohttp.ClientSession) -> None:
        scope, send = exchange.scope, exchange.send
        # RFC 9110 §5.5: a field value excludes surrounding whitespace.
        headers = [(k.decode("latin-1"), v.strip(b" \t").decode("latin-1"))
                   for k, v in scope["headers"] if k not in self.drop_request_headers]
        headers.append(("Accept-Encoding", "identity"))
        if exchange.body:
            headers.append(("Content-Type", "application/json"))
        if exchange.session is not None:
            headers.append(("Mcp-Session-Id", exchange.session))
        headers.extend(self.credentials.headers(exchange.principal))
        if exchange.upstream_headers:
            headers.extend(exchange.upstream_headers)
        if exchange.trace is not None:
            headers.append(("traceparent", exchange.trace.upstream_traceparent().decode("ascii")))
            if exchange.trace.tracestate:
                headers.append(("tracestate", exchange.trace.tracestate))
        url = self.url
        if scope["query_string"]:
            url = f"{url}?{scope['query_string'].decode('latin-1')}"
        try:
            response = await session.request(
                exchange.method, url, headers=headers, data=exchange.body or None, allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            await self._unreachable(exchange, exc)
            return
        if exchange.refusals is not None and response.status in (401, 403):
            retried = await self._refused(exchange, session, exchange.refusals, url, headers, response)
            if retried is None:
                return
            response = retried
        try:
            await self._relay(exchange, response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are out (a break before them is answered in _relay); all that is left is to end the
            # stream early and cleanly, marked incomplete for the call's record.
            log.warning("upstream %s stream broke: %s", self.server.name, type(exc).__name__)
            mark_upstream_error(scope, "broken")
            await end_body(send, complete=False)
        finally:
            response.release()

    async def _unreachable(self, exchange: Exchange, exc: BaseException) -> None:
        log.warning("upstream %s unreachable: %s", self.server.name, type(exc).__name__)
        mark_upstream_error(exchange.scope, "timeout" if isinstance(exc, TimeoutError) else "unreachable")
        await send_json(exchange.send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream server unreachable",
                                                          request_id=exchange.request_id))

    async def _refused(self, exchange: Exchange, session: aiohttp.ClientSession, refusals: UpstreamRefusals, url: str,
                       headers: list[tuple[str, str]], response: aiohttp.ClientResponse
                       ) -> aiohttp.ClientResponse | None:
        """The upstream refused the user's own token (RFC 6750 §3.1: the request was not processed): the same
        request once more with the fresh headers ``refusals`` gives, or None when it answered the client itself.
        A retry refused again goes back to ``refusals`` (reconnect, step up), never to a third attempt."""
        response.release()  # its connection back to the pool while the token is refreshed
        fresh = await refusals.refused(exchange.send, response.status, response.headers.get("www-authenticate"))
        if fresh is None:
            return None
        try:
            response = await session.request(
                exchange.method, url, headers=_with_credentials(headers, exchange.upstream_headers, fresh),
                data=exchange.body or None, allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            await self._unreachable(exchange, exc)
            return None
        if response.status in (401, 403):
            response.release()
            again = await refusals.refused(exchange.send, response.status, response.headers.get("www-authenticate"))
            if again is not None:  # never a third attempt: the refusal it is (502)
                await self._relay(exchange, response)
            return None
        return response

    async def _relay(self, exchange: Exchange, response: aiohttp.ClientResponse) -> None:
        send = exchange.send
        if response.status in (401, 403):
            # The upstream refused Deputy's own credentials; that is not the client's to fix.
            log.warning("upstream %s refused the gateway (%d)", self.server.name, response.status)
            mark_upstream_error(exchange.scope, "refused")
            await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream refused the gateway",
                                                     request_id=exchange.request_id))
            return
        if exchange.rewrite_result is not None and \
                response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            # Deputy asked for identity: a coded body is one it cannot read, so a list in it could not be filtered.
            # Relaying it would let the upstream pick what passes the policy's list filter.
            log.warning("upstream %s answered in a content coding Deputy did not ask for", self.server.name)
            mark_upstream_error(exchange.scope, "refused")
            await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream answered in a content coding "
                                                     "(Content-Encoding) the gateway did not ask for",
                                                     request_id=exchange.request_id))
            return
        out = [(k, v) for k, v in response.raw_headers if k.lower() not in DROP_RESPONSE_HEADERS]
        upstream_session = response.headers.get("mcp-session-id")
        if upstream_session is not None:
            out.append((SESSION_HEADER, exchange.bind_session(upstream_session).encode("latin-1")))
        elif exchange.refusals is not None:  # credentials = "oauth": a stateless upstream (sessions.SessionBinder.own)
            own = exchange.refusals.own_session(response.status)
            if own is not None:
                out.append((SESSION_HEADER, own.encode("latin-1")))
        content_type = response.headers.get("content-type", "")
        length = response.content_length
        event_stream = content_type.startswith("text/event-stream")
        rewrite = exchange.rewrite_result
        if rewrite is not None:
            if not event_stream:
                await self._relay_rewritten(exchange, response, out, rewrite)
                return
            out = [(k, v) for k, v in out if k.lower() != b"content-length"]
        if length is not None and length <= SMALL_BODY and not event_stream:
            try:
                body = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                await self._broke_before_start(exchange, exc)
                return
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        if event_stream:
            chunks: AsyncIterator[bytes] = response.content.iter_any()
            if rewrite is not None:
                chunks = rewrite_sse(chunks, exchange.request_id, rewrite, answers_list=exchange.answers_list)
            await end_body(send, complete=await relay_until_disconnect(chunks, exchange.receive, send,
                                                                       exchange.stream_ends))
            return
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await end_body(send)

    async def _broke_before_start(self, exchange: Exchange, exc: BaseException) -> None:
        """The upstream broke off before anything was sent to the client: a 502 in its stead."""
        log.warning("upstream %s stream broke: %s", self.server.name, type(exc).__name__)
        mark_upstream_error(exchange.scope, "broken")
        await send_json(exchange.send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream response broke off",
                                                          request_id=exchange.request_id))

    async def _relay_rewritten(self, exchange: Exchange, response: aiohttp.ClientResponse,
                               headers: list[tuple[bytes, bytes]], rewrite: RewriteResult) -> None:
        """A JSON answer that passes the list filter: read whole (capped; see the module docstring)."""
        request_id = exchange.request_id
        chunks: list[bytes] = []
        received = 0
        too_large = (response.content_length or 0) > MAX_REWRITTEN
        try:
            if not too_large:
                async for chunk in response.content.iter_any():
                    received += len(chunk)
                    chunks.append(chunk)
                    if received > MAX_REWRITTEN:
                        too_large = True
                        break
        except (TimeoutError, aiohttp.ClientError) as exc:
            await self._broke_before_start(exchange, exc)
            return
        if too_large:
            held = b"".join(chunks)
            if not exchange.answers_list and not may_hold_list(held):
                await self._pass_unless_list(exchange, response, headers, held)
                return
            log.warning("upstream %s answered a filtered request with more than %d bytes", self.server.name,
                        MAX_REWRITTEN)
            mark_upstream_error(exchange.scope, "too_large")
            await send_json(exchange.send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream response too large",
                                                              request_id=request_id))
            return
        original = b"".join(chunks)
        body = await rewrite_json_body(original, request_id, rewrite, answers_list=exchange.answers_list)
        drop = {b"content-length"} if body is original else {b"content-length", b"content-type", b"content-encoding"}
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
        if body is not original:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await exchange.send({"type": "http.response.start", "status": response.status, "headers": headers})
        await exchange.send({"type": "http.response.body", "body": body})

    async def _pass_unless_list(self, exchange: Exchange, response: aiohttp.ClientResponse,
                                headers: list[tuple[bytes, bytes]], held: bytes) -> None:
        """An answer too large to parse that is not a list request's: relayed as it comes while none of it
        could hold a list; cut short (unparseable for the client) where a list key appears."""
        scanner = ListKeyScanner()
        scanner.clean(held)
        await exchange.send({"type": "http.response.start", "status": response.status, "headers": headers})
        await exchange.send({"type": "http.response.body", "body": held, "more_body": True})
        async for chunk in response.content.iter_any():
            if not scanner.clean(chunk):
                log.warning("upstream %s: a list key in an oversized answer; body cut short", self.server.name)
                await end_body(exchange.send, complete=False)
                return
            await exchange.send({"type": "http.response.body", "body": chunk, "more_body": True})
        await end_body(exchange.send)


def _with_credentials(headers: list[tuple[str, str]], old: Headers, fresh: Headers) -> list[tuple[str, str]]:
    """``headers`` with the credential headers ``old`` replaced by ``fresh``."""
    replaced = {name.lower() for name, _ in old} | {name.lower() for name, _ in fresh}
    return [(name, value) for name, value in headers if name.lower() not in replaced] + list(fresh)
