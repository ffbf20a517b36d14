"""The decide stage of the gateway: Cedar decides each call before anything is forwarded.

For a server configured with ``policies``, every ``tools/call`` (the tool and its full
arguments), ``resources/read`` and ``prompts/get`` is decided by that server's
:class:`~deputy.policy.engine.PolicyEngine`, and so is any method Deputy does not
recognise (denied unless a policy permits it). Protocol housekeeping (``initialize``,
``ping``, notifications, ``logging/setLevel``) and the client's responses pass.
``completion/complete`` lists values for the arguments of one prompt or resource template, so it is
decided as that item's visibility (:func:`completion_decision`): refused when the item's list-time decision
is deny — what a user may not see listed, she may not have completed either. List requests (``tools/list``,
``resources/list``, ``resources/templates/list``, ``prompts/list``) are forwarded with a hook
(:meth:`PolicyStage.list_filter`) that filters their result: one list-time decision
per item (:meth:`~deputy.policy.engine.PolicyEngine.decide_each` — its own action, so a
rule on a tool's arguments never empties a list), an item dropped when that decision
is deny, everything else in the result (cursor, ``_meta``) kept. When no decision can
be made the list request is refused like a call.

The engine needs the server's schema, which comes from its tools; how each server's
engine is checked at start, built and kept current (reloads, changed tools) is
:mod:`deputy.gateway.policy_lifecycle`. Until the tools are read and the policies
validated against them, nothing is decided and every such call is refused (fail
closed). A ``credentials = "oauth"`` server's tools are read with the caller's own
connection, so the engine is asked for with her principal; when she has none usable the
refusal carries what she must do, and the gateway sends her to connect.

Answers: a denial is a JSON-RPC error with code :data:`~deputy.policy.decision.POLICY_DENIED`,
the message "denied by policy…" and ``data`` naming the decision id and the deciding
policies — never "tool not found", never a silent drop. Arguments that do not fit the tool's
schema add ``reason: "arguments_invalid"`` and which arguments and why
(:mod:`deputy.policy.argument_problems`) — except for a tool the caller's list hides: its denied call is answered
exactly as one of a tool that is not there (no policies, no problems), so calling cannot reveal what the list keeps
back; the audit record keeps everything. A step-up (a permit annotated ``@requires_scope``
the token lacks) is HTTP 403 with ``WWW-Authenticate: Bearer error="insufficient_scope"``
naming every scope needed, so a client that follows the MCP authorization spec
re-authorizes and retries.

Approvals: a ``tools/call`` whose outcome is ``approval_required`` (a permit annotated
``@approval("required")``) is held. When an approver has approved that exact call —
same server, tool and arguments (:func:`~deputy.storage.approvals.call_hash`), same user,
agent and whole actor chain (:func:`~deputy.storage.approvals.chain_hash`) — and the call,
decided again as approved, is allowed (a ``forbid`` still wins), the approval is used up
(:meth:`~deputy.storage.approvals.ApprovalRepository.consume`, once, even across replicas)
and the call proceeds. Otherwise a pending approval is created (or the live one for the same
call reused, recording whether the policy lets the requesting user approve it:
``@approval("self")``) and the call is answered as held (:mod:`deputy.gateway.held_calls`:
URL-mode elicitation of the approval page, or an error naming it); an approver decides on
that page (:mod:`deputy.web.approvals`) or with ``deputy approvals approve|deny ID --as NAME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError

from deputy.gateway.jsonrpc import Category, McpMessage, Operation
from deputy.gateway.policy_lifecycle import PolicyLifecycle, PolicyWatcher, Unavailable
from deputy.gateway.principal import Principal
from deputy.gateway.response_rewrite import LIST_ITEMS, RewriteRefused, RewriteResult
from deputy.page_paths import APPROVAL_PAGE
from deputy.policy import Decision, Outcome, PolicyEngine
from deputy.policy.schema import PROMPTS_LIST, RESOURCE_TEMPLATES_LIST, RESOURCES_LIST, TOOLS_LIST
from deputy.storage.approvals import Approval, ApprovalRepository, call_hash
from deputy.storage.clients import Client

log = logging.getLogger(__name__)

REGISTRATION_TTL = 60.0
DECIDED = {Category.TOOL_CALL: "tools/call", Category.RESOURCE_READ: "resources/read",
           Category.PROMPT_GET: "prompts/get"}


@dataclass(frozen=True, slots=True)
class Held:
    """A call that waits for a human approval: the decision that held it and the approval to ask for."""

    decision: Decision
    approval: Approval
    approval_url: str


class RegistrationKinds:
    """How each agent was registered (``context.agent.registration``), read from the client store and
    remembered for :data:`REGISTRATION_TTL` seconds: ``config``, ``cli``, ``document`` (a Client ID Metadata
    Document), ``dynamic`` (RFC 7591) or ``none`` (no registration: a workload identity). A store that cannot
    be read raises, and the call is refused."""

    NAMES: Final = {"config": "config", "cli": "cli", "document": "document", "registration": "dynamic"}

    def __init__(self, find: Callable[[str], Awaitable[Client | None]]) -> None:
        self.find = find
        self._known: dict[str, tuple[float, str]] = {}

    async def of(self, client_id: str) -> str:
        known = self._known.get(client_id)
        if known is not None and time.monotonic() - known[0] < REGISTRATION_TTL:
            return known[1]
        client = await self.find(client_id)
        kind = "none" if client is None else self.NAMES.get(client.source, "unknown")
        if len(self._known) >= 10_000:
            self._known.clear()
        self._known[client_id] = (time.monotonic(), kind)
        return kind


class PolicyStage:
    def __init__(self, policies: Mapping[str, PolicyLifecycle], approvals: ApprovalRepository, public_url: str,
                 watch_seconds: float, find_client: Callable[[str], Awaitable[Client | None]]) -> None:
        self.policies = policies
        self.approvals = approvals
        self.registrations = RegistrationKinds(find_client)
        self.public_url = public_url
        self.watcher = PolicyWatcher(policies.values(), watch_seconds)

    async def start(self) -> None:
        """Check every server's policies (raises PolicyLoadError: start-up stops), then watch for changes:
        the policy directories, and SIGHUP (reload every server's policies and re-read its tools)."""
        for policy in self.policies.values():
            await policy.check_at_start()
        self.watcher.start()
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here (not the main thread, Windows)
            log.info("SIGHUP does not reload policies in this process")

    def reload(self) -> None:
        log.warning("reloading policies and tools of %s", ", ".join(self.policies) or "no server")
        for policy in self.policies.values():
            policy.reload()
            policy.tools_changed()

    async def stop(self) -> None:
        await self.watcher.stop()
        for policy in self.policies.values():
            await policy.close()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def tools_changed(self, server: str, principal: Principal | None = None) -> None:
        """The upstream said its tools changed (``notifications/tools/list_changed``) in an answer to ``principal``."""
        policy = self.policies.get(server)
        if policy is not None:
            policy.tools_changed(principal)

    async def decide(self, principal: Principal, message: McpMessage) -> Decision | Held | Unavailable | None:
        """The decision on ``message`` (Held when it waits for an approval), Unavailable when none can be made,
        None when it is not decided."""
        policy = self.policies.get(principal.server)
        operation = message.operation
        category = operation.category
        if policy is None or category in (Category.HOUSEKEEPING, Category.LIST, Category.RESPONSE):
            return None
        engine = await policy.ready_engine(principal)
        if isinstance(engine, Unavailable):
            return engine
        try:
            registration = await self.registrations.of(principal.agent)
        except (SQLAlchemyError, OSError) as exc:
            log.error("client registrations unavailable: %s", type(exc).__name__)
            return Unavailable("the client store is unavailable")
        if category is Category.UNKNOWN:
            return engine.decide(principal, str(message.method), str(message.method), registration=registration)
        if category is Category.COMPLETION:
            return completion_decision(engine, principal, operation, registration)
        name = operation.target
        decision = engine.decide(principal, DECIDED[category], str(name), operation.arguments,
                                 registration=registration)
        if category is Category.TOOL_CALL and decision.outcome is Outcome.DENY and \
                engine.decide_each(principal, TOOLS_LIST, [str(name)], registration=registration)[0].outcome \
                is Outcome.DENY:
            return dataclasses.replace(decision, hidden=True)
        if decision.outcome is not Outcome.APPROVAL_REQUIRED or category is not Category.TOOL_CALL:
            return decision
        try:
            return await self._approval(engine, self.approvals, principal, str(name), operation.arguments, decision,
                                        registration)
        except (SQLAlchemyError, OSError) as exc:
            log.error("approvals unavailable: %s", type(exc).__name__)
            return Unavailable("approvals are unavailable")

    async def _approval(self, engine: PolicyEngine, approvals: ApprovalRepository, principal: Principal,
                        tool: str, arguments: dict[str, Any], decision: Decision, registration: str) -> Decision | Held:
        """The call proceeds on an approval of exactly it (used up here), or is held for one."""
        try:
            digest = call_hash(principal.server, tool, arguments)
        except (ValueError, TypeError) as exc:  # not canonical JSON (RFC 8785: e.g. an integer beyond 2**53)
            log.info("no approval possible for %s on %s: %s", tool, principal.server, type(exc).__name__)
            return decision
        approved = engine.decide(principal, DECIDED[Category.TOOL_CALL], tool, arguments, approved=True,
                                 registration=registration)
        if not approved.allowed:
            return approved  # an approval would not help: a forbid wins
        actors = [actor.claim() for actor in principal.actors] or None
        used = await approvals.consume(digest, principal.user, principal.agent, actors,
                                       self_approval=approved.self_approval)
        if used is not None:
            log.info("%s on %s proceeds on approval %s", tool, principal.server, used)
            return dataclasses.replace(approved, approval_id=used)
        approval = await approvals.create(server=principal.server, tool=tool, arguments=arguments,
                                          user_id=principal.user, agent=principal.agent, actors=actors,
                                          decision_id=decision.decision_id, self_approval=decision.self_approval)
        return Held(decision, approval, f"{self.public_url}{APPROVAL_PAGE}{approval.approval_id}")

    async def list_filter(self, principal: Principal, message: McpMessage) -> RewriteResult | Unavailable | None:
        """The rewrite of a list request's result, Unavailable when none can be made, None when not filtered.

        Asked before the request is forwarded: a list that could not be filtered is not asked for."""
        policy = self.policies.get(principal.server)
        if policy is None or message.operation.category is not Category.LIST or message.method not in LIST_ITEMS:
            return None
        engine = await policy.ready_engine(principal)
        if isinstance(engine, Unavailable):
            return engine
        try:
            registration = await self.registrations.of(principal.agent)
        except (SQLAlchemyError, OSError) as exc:
            log.error("client registrations unavailable: %s", type(exc).__name__)
            return Unavailable("the client store is unavailable")

        async def rewrite(result: dict[str, Any]) -> dict[str, Any]:
            return filter_lists(engine, principal, result, registration)

        return rewrite

    def answer_filter(self, principal: Principal) -> RewriteResult | None:
        """The rewrite of any list in any answer relayed to ``principal`` (a GET stream, a replay, another
        request's stream: :mod:`deputy.gateway.response_rewrite`); None when the server has no policies.

        The engine is asked for only when a list shows up; when none can be had the rewrite raises, and
        the list is replaced by an error (fail closed)."""
        policy = self.policies.get(principal.server)
        if policy is None:
            return None

        async def rewrite(result: dict[str, Any]) -> dict[str, Any]:
            engine = await policy.ready_engine(principal)
            if isinstance(engine, Unavailable):
                raise RewriteRefused(f"no policy decisions for {principal.server}: {engine.reason}")
            try:
                registration = await self.registrations.of(principal.agent)
            except (SQLAlchemyError, OSError) as exc:
                raise RewriteRefused(f"client registrations unavailable: {type(exc).__name__}") from None
            return filter_lists(engine, principal, result, registration)

        return rewrite


def completion_decision(engine: PolicyEngine, principal: Principal, operation: Operation,
                        registration: str = "unknown") -> Decision | None:
    """The refusal of a ``completion/complete`` (None: it goes on): the list-time decision on what it completes.

    A ``ref/prompt`` is the prompt of ``prompts/list``. A ``ref/resource`` names a URI or a URI template (MCP
    completion, ``ResourceTemplateReference``): with a ``{`` it is a template of ``resources/templates/list``
    (RFC 6570 expressions are braced, and RFC 3986 admits no ``{`` in a URI), else a resource of
    ``resources/list``. As in a list, only deny refuses: step-up and approval are for calls."""
    if operation.name is not None:
        method, target = PROMPTS_LIST, operation.name
    else:
        target = str(operation.uri)
        method = RESOURCE_TEMPLATES_LIST if "{" in target else RESOURCES_LIST
    decision = engine.decide_each(principal, method, [target], registration=registration)[0]
    return decision if decision.outcome is Outcome.DENY else None


def filter_lists(engine: PolicyEngine, principal: Principal, result: dict[str, Any],
                 registration: str = "unknown") -> dict[str, Any]:
    """``result`` with every list in it (:data:`LIST_ITEMS`, by its items key) filtered by its list-time decisions."""
    for method, (key, field) in LIST_ITEMS.items():
        result = filter_items(engine, principal, method, key, field, result, registration)
    return result


def filter_items(engine: PolicyEngine, principal: Principal, method: str, key: str, field: str,
                 result: dict[str, Any], registration: str = "unknown") -> dict[str, Any]:
    """``result`` without the items of ``result[key]`` the principal's list-time decision denies.

    An item without a string ``field`` cannot be decided and is dropped; a ``result[key]`` that
    is not a list raises (the caller answers with an error: fail closed).
    """
    if key not in result:
        return result
    items = result[key]
    if not isinstance(items, list):
        raise ValueError(f"{method}: {key!r} is not a list")
    named = [item for item in items if isinstance(item, dict) and isinstance(item.get(field), str)]
    decisions = engine.decide_each(principal, method, [item[field] for item in named], registration=registration)
    kept = [item for item, decision in zip(named, decisions, strict=True) if decision.outcome is not Outcome.DENY]
    if len(kept) < len(items):
        log.debug("%s for %s: %d of %d items withheld", method, principal.user, len(items) - len(kept), len(items))
    return {**result, key: kept}
