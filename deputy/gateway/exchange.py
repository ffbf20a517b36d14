"""One authenticated call on its way upstream, and what an upstream must do with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from deputy.gateway.jsonrpc import McpMessage
from deputy.gateway.principal import Principal


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
    # Applied by the upstream to the result of the response to this request (list filtering,
    # :mod:`deputy.gateway.response_rewrite`); None: the response passes as it is.
    rewrite_result: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

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
