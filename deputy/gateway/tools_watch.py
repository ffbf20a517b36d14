"""Noticing ``notifications/tools/list_changed`` in an upstream's answer as it streams past (MCP "Tools": List
Changed Notification), so a server's policy schema is read again (:meth:`PolicyLifecycle.tools_changed
<deputy.gateway.policy_lifecycle.PolicyLifecycle.tools_changed>`)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Send

TOOLS_LIST_CHANGED = b"notifications/tools/list_changed"
SEAM = len(TOOLS_LIST_CHANGED) - 1


def watching_tools(send: Send, tools_changed: Callable[[], None]) -> Send:
    """``send`` that calls ``tools_changed`` when the upstream's answer carries ``notifications/tools/list_changed``.

    A plain byte search over what streams past (a notification split across two chunks is
    still seen); a false match only costs a re-read of the tools.
    """
    tail = b""

    async def watching(message: Message) -> None:
        nonlocal tail
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            # Searched in the chunk and across the seam with the previous one; only the seam is copied.
            if TOOLS_LIST_CHANGED in body or TOOLS_LIST_CHANGED in tail + body[:SEAM]:
                tools_changed()
                tail = b""
            else:
                tail = (tail + body[-SEAM:])[-SEAM:]
        await send(message)

    return watching
