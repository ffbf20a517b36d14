"""The audit stage of the gateway: every call's decision is a log record, durable before the call goes upstream.

What is recorded (:mod:`deputy.audit.records`): for each ``tools/call``, ``resources/read``,
``prompts/get`` and any method Deputy does not recognise — whether a policy decided it or the
server has none — a ``decision`` record with who (user, agent, the ordered actor chain, txn,
the token's ``jti``), what (server, method, tool or URI, the arguments as ``[audit] arguments``
says: stored, or their SHA-256; exactly, integers beyond 2^53 included, see
:func:`~deputy.audit.records.arguments_fields`), and the answer (outcome, the deciding
policies, the policy-set and schema versions, errors, the approval used or asked for). A call
that is forwarded is forwarded only after its record is committed: when the append fails, or
the decision cannot be recorded exactly, the call is refused (HTTP 503) and nothing reaches
the upstream. A refusal's record is appended too; when that append fails the refusal stands
(refusing is already the safe answer). A ``completion/complete`` refused by policy is recorded the same way
(method and the prompt name or URI it completes): it asked about something the user may not see. One let through
is not, like a list: it is asked at every keystroke, and reveals only what the user may see.

After the upstream answered, a ``call.outcome`` record ties the decision to what came back: the
HTTP status, the size and SHA-256 of the relayed body (JSON or the SSE stream as relayed), the
duration, and ``complete``: false when the answer was cut short — the upstream broke off
mid-stream or the client left before its end (:data:`~deputy.gateway.responses.INCOMPLETE`), or
the body was never ended (the relay failed) — the size and digest being then those of the part
the client got. It is appended without holding the client (the answer has already been sent), and may wait a
moment for the next call's decision to share its commit (:data:`deputy.audit.log.LINGER_SECONDS`); a failure to
append it is logged. A call answered by Deputy in the upstream's stead because the user's own upstream
credential was missing or unusable (``credentials = "oauth"``, :mod:`deputy.gateway.connection_answers`) says so:
``not_forwarded`` (``connection_needed`` or ``connection_failed``) and ``not_forwarded_reason`` (why: the
:class:`~deputy.connections.model.ConnectionNeeded` reason, or the :class:`~deputy.connections.errors.ConnectionFailed`
one), both absent on every other record.

Both records carry the call's W3C trace id (``trace_id``, 32 lowercase hex; :mod:`deputy.telemetry.tracing`) when
the call has one — the client's, from a valid ``traceparent``, or the one Deputy started with tracing on — so a
denial can be found from its trace and its trace from the record. Like ``arguments_big_integers`` it is an optional
field that extends the version-1 records compatibly: absent when there is no trace, and, like every field, covered
by the record's leaf hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Send

from deputy.audit.log import AuditLog, AuditUnavailable
from deputy.audit.records import ArgumentsMode, RecordError, arguments_fields, new_record
from deputy.gateway.jsonrpc import Category, McpMessage
from deputy.gateway.principal import Principal
from deputy.gateway.responses import INCOMPLETE
from deputy.policy import Decision
from deputy.policy.user_attributes import recorded_attributes

log = logging.getLogger(__name__)

RECORDED = frozenset({Category.TOOL_CALL, Category.RESOURCE_READ, Category.PROMPT_GET, Category.UNKNOWN})
REFUSALS_RECORDED = RECORDED | {Category.COMPLETION}
# Set on the ``http.response.start`` of an answer Deputy gave because the call could not go upstream with the user's
# own credential: (``not_forwarded``, ``not_forwarded_reason``). Gateway-internal, like responses.INCOMPLETE.
NOT_FORWARDED = "deputy.not_forwarded"


def who(principal: Principal) -> dict[str, Any]:
    """The fields that say who made a request: the same in every record about one."""
    return {"user": principal.user, "agent": principal.agent, "actors": [actor.claim() for actor in principal.actors],
            "txn": principal.txn, "jti": principal.token_id, "server": principal.server}


class AuditStage:
    def __init__(self, audit_log: AuditLog, arguments: ArgumentsMode) -> None:
        self.log = audit_log
        self.arguments = arguments
        self._pending: set[asyncio.Task[Any]] = set()

    @staticmethod
    def records(message: McpMessage) -> bool:
        return message.operation.category in RECORDED

    @staticmethod
    def records_refusal(message: McpMessage) -> bool:
        return message.operation.category in REFUSALS_RECORDED

    async def decision(self, principal: Principal, message: McpMessage, decision: Decision | None,
                       outcome: str, *, approval_id: str | None = None, reason: str | None = None,
                       trace_id: str | None = None) -> str:
        """Append the decision on ``message`` and return its id (``decision`` None: the server has no policies,
        or none could be made — ``outcome`` and ``reason`` say which); raises AuditUnavailable when the
        record could not be made durable."""
        operation = message.operation
        fields: dict[str, Any] = {
            **who(principal), "decision_id": decision.decision_id if decision else uuid.uuid4().hex,
            "outcome": outcome, "method": message.method,
            "tool": operation.target,
            "policies": list(decision.determining) if decision else [],
            "policy_version": decision.policy_version if decision else None,
            "schema_version": decision.schema_version if decision else None,
            "errors": list(decision.errors) if decision else ([reason] if reason else []),
            "approval_id": approval_id or (decision.approval_id if decision else None),
        }
        if trace_id is not None:
            fields["trace_id"] = trace_id
        if principal.user_attributes.idp:  # what policy saw of the user (deputy.policy.user_attributes)
            fields["user_attributes"] = recorded_attributes(principal.user_attributes)
        try:
            fields.update(arguments_fields(operation.arguments, self.arguments))
            await self.log.append(new_record("decision", **fields))
        except RecordError as exc:
            # The parser admits only what a record holds exactly; should anything else get here, the record would
            # not say what was decided, so there is no record and no call.
            log.error("decision not recorded, call refused: %s", exc)
            raise AuditUnavailable(f"the decision cannot be recorded exactly: {exc}") from None
        return str(fields["decision_id"])

    async def refusal(self, principal: Principal, message: McpMessage, decision: Decision | None, outcome: str,
                      *, approval_id: str | None = None, reason: str | None = None,
                      trace_id: str | None = None) -> None:
        """Append the decision on a request that is refused; the refusal stands whether or not this succeeds."""
        try:
            await self.decision(principal, message, decision, outcome, approval_id=approval_id, reason=reason,
                                trace_id=trace_id)
        except AuditUnavailable as exc:
            log.error("refusal not recorded: %s", exc)

    def outcome_recorder(self, send: Send, principal: Principal, message: McpMessage,
                         decision_id: str, *, trace_id: str | None = None
                         ) -> tuple[Send, Callable[[], Awaitable[None]]]:
        """``send`` that measures the answer as it streams past, and the coroutine that records it once done."""
        digest = hashlib.sha256()
        # complete: the answer's body was ended (ASGI ``more_body`` false) and not marked cut short.
        state: dict[str, Any] = {"status": 0, "size": 0, "complete": False}
        started = time.perf_counter()

        async def measuring(message_out: Message) -> None:
            if message_out["type"] == "http.response.start":
                state["status"] = message_out["status"]
                if NOT_FORWARDED in message_out:
                    state[NOT_FORWARDED] = message_out[NOT_FORWARDED]
            elif message_out["type"] == "http.response.body":
                body = message_out.get("body", b"")
                digest.update(body)
                state["size"] += len(body)
                if not message_out.get("more_body", False):
                    state["complete"] = not message_out.get(INCOMPLETE, False)
            await send(message_out)

        async def finish() -> None:
            record = new_record("call.outcome", **who(principal), decision_id=decision_id, method=message.method,
                                status=state["status"], response_bytes=state["size"],
                                response_sha256=digest.hexdigest(), complete=bool(state["complete"]),
                                duration_us=int((time.perf_counter() - started) * 1_000_000))
            if trace_id is not None:
                record["trace_id"] = trace_id
            if NOT_FORWARDED in state:
                record["not_forwarded"], record["not_forwarded_reason"] = state[NOT_FORWARDED]
            task = asyncio.get_running_loop().create_task(self._append_quietly(record))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        return measuring, finish

    async def _append_quietly(self, record: dict[str, Any]) -> None:
        try:
            await self.log.append(record, linger=True)  # nobody waits for it: it may share the next call's commit
        except (AuditUnavailable, RecordError) as exc:
            log.error("call outcome not recorded: %s", exc)
