"""One authenticated call on its way upstream, and what an upstream must do with it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from deputy.gateway.jsonrpc import McpMessage
from deputy.gateway.principal import Principal
from deputy.telemetry.tracing import TraceContext

Headers = Sequence[tuple[str, str]]


class UpstreamRefusals(Protocol):
    """What an HTTP upstream does when a ``credentials = "oauth"`` server refuses the user's own token
    (:class:`deputy.gateway.connection_answers.OAuthCall`)."""

    async def refused(self, send: Send, status: int, www_authenticate: str | None) -> Headers | None:
        """Fresh headers to send the same request with once more; None: the client has been answered."""
        ...

    def own_session(self, status: int) -> str | None:
        """The session id to give a client whose answer (``status``) came without one; None: none."""
        ...


@dataclass(frozen=True, slots=True)
class Exchange:
    """An authenticated request: the ASGI triple, who sent it, its body and its upstream session."""

    scope: Scope
    receive: Receive
    send: Send
    principal: Principal
    body: bytes
    session: str | None
    # Turns an upstream session id into the principal-bound id the client sees.
    bind_session: Callable[[str], str]
    # A POST's body, parsed strictly and classified; None for GET and DELETE. Forward `body`, not this.
    message: McpMessage | None = None
    # Applied by the upstream to every answer it relays for this request (list filtering,
    # :mod:`deputy.gateway.response_rewrite`); None: answers pass as they are (a server without policies).
    rewrite_result: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
    # This is a list request: its answer is the list (filtered whatever its id, fail closed on any doubt).
    answers_list: bool = False
    # The request's place in a trace (deputy.telemetry.tracing): what an HTTP upstream is sent as ``traceparent``;
    # None: no trace (tracing off and no valid client traceparent), and nothing is sent.
    trace: TraceContext | None = None
    # credentials = "oauth" (deputy.connections): the user's own upstream credential headers, and who handles the
    # upstream refusing them; () and None for every other server.
    upstream_headers: Headers = ()
    refusals: UpstreamRefusals | None = None
    # A GET stream: set when Deputy begins to shut down; the relay then ends the stream cleanly (the client may open
    # it again, on a replica that stays) instead of holding the shutdown up until it is cut. None for POST and DELETE.
    stream_ends: asyncio.Event | None = None

    @property
    def request_id(self) -> str | int | None:
        """The id of the POSTed request, for an error Deputy answers in its stead; None otherwise."""
        return self.message.id if self.message is not None else None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None


class Upstream(Protocol):
    async def forward(self, exchange: Exchange) -> None: ...

    async def close(self) -> None: ...
