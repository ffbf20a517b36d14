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
"""

from __future__ import annotations

import json
from typing import Any

from deputy.gateway.jsonrpc import McpMessage
from deputy.policy import Decision

CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
INPUT_KEY = "deputy_approval"
STATE_PREFIX = "deputy-approval:"


def declares_url_elicitation(message: McpMessage) -> bool:
    """Whether the request's ``_meta`` declares the client's URL-mode elicitation capability."""
    params = message.params
    meta = params.get("_meta") if isinstance(params, dict) else None
    capabilities = meta.get(CLIENT_CAPABILITIES) if isinstance(meta, dict) else None
    elicitation = capabilities.get("elicitation") if isinstance(capabilities, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


def declined_approval(message: McpMessage) -> bool:
    """Whether this is a retry whose answer to Deputy's approval elicitation is ``decline`` or ``cancel``."""
    params = message.params
    responses = params.get("inputResponses") if isinstance(params, dict) else None
    answer = responses.get(INPUT_KEY) if isinstance(responses, dict) else None
    return isinstance(answer, dict) and answer.get("action") in ("decline", "cancel")


def input_required(message: McpMessage, approval_id: str, approval_url: str, tool: str) -> dict[str, Any]:
    """The JSON-RPC response asking the client to send its user to the approval page, then retry."""
    elicitation = {"method": "elicitation/create", "params": {
        "mode": "url", "url": approval_url,
        "message": f"Calling {tool} needs a human approval. Open the page to see the exact call and who can "
                   f"approve it; then retry."}}
    return {"jsonrpc": "2.0", "id": message.id, "result": {
        "resultType": "input_required", "inputRequests": {INPUT_KEY: elicitation},
        "requestState": STATE_PREFIX + approval_id}}


def denial_data(decision: Decision, approval_id: str, approval_url: str, expires_at: int) -> dict[str, Any]:
    """``data`` of the JSON-RPC error for a held call, for clients without URL-mode elicitation."""
    return {**decision.error_data(), "approval_id": approval_id, "approval_url": approval_url,
            "expires_at": expires_at}



def without_own_input(message: McpMessage) -> bytes | None:
    """The body to forward for a retry that carries Deputy's ``requestState``: the same message without
    it and without Deputy's ``inputResponses`` entry; None for any other message (forward it as received).

    The message was parsed strictly (no duplicate keys, exact numbers), so serialising the parsed
    document again says exactly what the policy decided on.
    """
    params = message.params
    state = params.get("requestState") if isinstance(params, dict) else None
    if not isinstance(params, dict) or not isinstance(state, str) or not state.startswith(STATE_PREFIX):
        return None
    forwarded = {key: value for key, value in params.items() if key != "requestState"}
    responses = params.get("inputResponses")
    if isinstance(responses, dict):
        others = {key: value for key, value in responses.items() if key != INPUT_KEY}
        if others:
            forwarded["inputResponses"] = others
        else:
            del forwarded["inputResponses"]
    document = {"jsonrpc": "2.0", "id": message.id, "method": message.method, "params": forwarded}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
