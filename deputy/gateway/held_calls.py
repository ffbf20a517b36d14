"""How a client learns that its call waits for a human approval, and where to get it.

A held call (:class:`~deputy.gateway.policy_stage.Held`) is answered in one of two ways:

* **URL-mode elicitation** (MCP 2026-07-28, multi round-trip requests): when the request
  declares the client's ``elicitation.url`` capability in its ``_meta``
  (``io.modelcontextprotocol/clientCapabilities``), the answer is a result with
  ``resultType: "input_required"`` whose one input request is an ``elicitation/create``
  in ``url`` mode pointing at the approval page. The client shows the user the URL and
  retries the same request with ``inputResponses`` and the echoed ``requestState``; the
  retry is decided like any call, so it proceeds only once the approval is given (and then
  uses it up). A retry whose elicitation response is ``decline`` or ``cancel`` gets the
  denial: the user chose not to go on.
* Otherwise a JSON-RPC error with :data:`~deputy.policy.decision.POLICY_DENIED`, whose
  ``data`` carries ``approval_id``, ``approval_url`` and ``expires_at``.

``requestState`` is only echoed back: nothing is read from it (a client controls it), the
approval is found again by the call itself. What Deputy added to a retry is Deputy's: a
retry carrying Deputy's ``requestState`` reaches the upstream without it and without the
answer to Deputy's elicitation (:func:`without_own_input`) — the upstream never asked, and
a spec-following one refuses a ``requestState`` it did not issue.

The same round trip sends a user to connect her account at an upstream
(:mod:`deputy.gateway.connection_answers`): the capability check, the ``input_required`` result,
the decline check and the stripping of Deputy's own input are here, once, for both.
"""

from __future__ import annotations

import json
from typing import Any

from deputy.gateway.jsonrpc import McpMessage
from deputy.policy import Decision

CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
INPUT_KEY = "deputy_approval"
STATE_PREFIX = "deputy-approval:"
# A connection the user must make first (deputy.gateway.connection_answers).
CONNECT_INPUT_KEY = "deputy_connect"
CONNECT_STATE_PREFIX = "deputy-connect:"
OWN_STATE_PREFIXES = (STATE_PREFIX, CONNECT_STATE_PREFIX)
OWN_INPUT_KEYS = frozenset({INPUT_KEY, CONNECT_INPUT_KEY})


def declares_url_elicitation(message: McpMessage) -> bool:
    """Whether the request's ``_meta`` declares the client's URL-mode elicitation capability."""
    params = message.params
    meta = params.get("_meta") if isinstance(params, dict) else None
    capabilities = meta.get(CLIENT_CAPABILITIES) if isinstance(meta, dict) else None
    elicitation = capabilities.get("elicitation") if isinstance(capabilities, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


def declined(message: McpMessage, input_key: str = INPUT_KEY) -> bool:
    """Whether this is a retry whose answer to Deputy's elicitation ``input_key`` is ``decline`` or ``cancel``."""
    params = message.params
    responses = params.get("inputResponses") if isinstance(params, dict) else None
    answer = responses.get(input_key) if isinstance(responses, dict) else None
    return isinstance(answer, dict) and answer.get("action") in ("decline", "cancel")


def declined_approval(message: McpMessage) -> bool:
    """Whether this is a retry whose answer to Deputy's approval elicitation is ``decline`` or ``cancel``."""
    return declined(message, INPUT_KEY)


def url_input_required(message: McpMessage, input_key: str, url: str, text: str, state: str) -> dict[str, Any]:
    """The JSON-RPC response (MCP 2026-07-28 ``InputRequiredResult``) asking the client to send its user to ``url``
    with ``text`` (one URL-mode ``elicitation/create``), then retry with ``state`` echoed."""
    elicitation = {"method": "elicitation/create", "params": {"mode": "url", "url": url, "message": text}}
    return {"jsonrpc": "2.0", "id": message.id, "result": {
        "resultType": "input_required", "inputRequests": {input_key: elicitation}, "requestState": state}}


def input_required(message: McpMessage, approval_id: str, approval_url: str, tool: str) -> dict[str, Any]:
    """The JSON-RPC response asking the client to send its user to the approval page, then retry."""
    return url_input_required(
        message, INPUT_KEY, approval_url,
        f"Calling {tool} needs a human approval. Open the page to see the exact call and who can approve it; then "
        f"retry.", STATE_PREFIX + approval_id)


def denial_data(decision: Decision, approval_id: str, approval_url: str, expires_at: int) -> dict[str, Any]:
    """``data`` of the JSON-RPC error for a held call, for clients without URL-mode elicitation."""
    return {**decision.error_data(), "approval_id": approval_id, "approval_url": approval_url,
            "expires_at": expires_at}


def without_own_input(message: McpMessage) -> bytes | None:
    """The body to forward for a retry that carries Deputy's ``requestState`` (an approval's or a connection's):
    the same message without it and without Deputy's ``inputResponses`` entries; None for any other message
    (forward it as received).

    The message was parsed strictly (no duplicate keys, exact numbers), so serialising the parsed
    document again says exactly what the policy decided on.
    """
    params = message.params
    state = params.get("requestState") if isinstance(params, dict) else None
    if not isinstance(params, dict) or not isinstance(state, str) or not state.startswith(OWN_STATE_PREFIXES):
        return None
    forwarded = {key: value for key, value in params.items() if key != "requestState"}
    responses = params.get("inputResponses")
    if isinstance(responses, dict):
        others = {key: value for key, value in responses.items() if key not in OWN_INPUT_KEYS}
        if others:
            forwarded["inputResponses"] = others
        else:
            del forwarded["inputResponses"]
    document = {"jsonrpc": "2.0", "id": message.id, "method": message.method, "params": forwarded}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
