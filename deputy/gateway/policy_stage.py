"""The decide stage of the gateway: Cedar decides each call before anything is forwarded.

For a server configured with ``policies``, every ``tools/call`` (the tool and its full
arguments), ``resources/read`` and ``prompts/get`` is decided by that server's
:class:`~deputy.policy.engine.PolicyEngine`, and so is any method Deputy does not
recognise (denied unless a policy permits it). Protocol housekeeping (``initialize``,
``ping``, notifications, ``logging/setLevel``, completion), list requests and the
client's responses pass; list results are not filtered yet.

The engine needs the server's schema, which comes from its tools: Deputy reads them
itself (:mod:`deputy.gateway.tool_catalog`) on the first call that needs a decision —
not at start, because an upstream that verifies Deputy's tokens fetches Deputy's JWKS
from the very process that is starting. Until the tools are read and the policies
validated against them, nothing is decided and every such call is refused (fail
closed): a catalog that cannot be read is tried again after :data:`RETRY_SECONDS`; a
policy set that does not validate is logged with every ``file:line:col`` and keeps the
server closed until the policies are fixed (``deputy policy validate`` says why).

Answers: a denial is a JSON-RPC error with code :data:`~deputy.policy.decision.POLICY_DENIED`,
the message "denied by policy…" and ``data`` naming the decision id and the deciding
policies — never "tool not found", never a silent drop. A step-up (a permit annotated
``@requires_scope`` the token lacks) is HTTP 403 with ``WWW-Authenticate: Bearer
error="insufficient_scope"`` naming every scope needed, so a client that follows the
MCP authorization spec re-authorizes and retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from deputy.config import UpstreamServer
from deputy.gateway.jsonrpc import Category, McpMessage
from deputy.gateway.principal import Principal
from deputy.gateway.tool_catalog import CatalogUnavailable, fetch_tools
from deputy.gateway.upstream_credentials import UpstreamCredentials
from deputy.policy import Decision, PolicyEngine, PolicyLoadError, SchemaError, build_schema

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
DECIDED = {Category.TOOL_CALL: "tools/call", Category.RESOURCE_READ: "resources/read",
           Category.PROMPT_GET: "prompts/get"}


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No decision can be made for the server right now; ``reason`` is for the log and the error message."""

    reason: str


class ServerPolicy:
    """One server's engine, made on first need from its live tool list."""

    def __init__(self, server: UpstreamServer, credentials: UpstreamCredentials, issuer: str) -> None:
        assert server.policies is not None
        self.server = server
        self.directory = server.policies
        self.credentials = credentials
        self.issuer = issuer
        self.engine: PolicyEngine | None = None
        self._failure: tuple[float, str] | None = None
        self._lock = asyncio.Lock()

    async def ready_engine(self) -> PolicyEngine | Unavailable:
        if self.engine is not None:
            return self.engine
        async with self._lock:
            if self.engine is not None:
                return self.engine
            if self._failure is not None and time.monotonic() - self._failure[0] < RETRY_SECONDS:
                return Unavailable(self._failure[1])
            try:
                tools = await fetch_tools(self.server, self.credentials, self.issuer)
                self.engine = PolicyEngine(self.directory, build_schema(tools))
            except CatalogUnavailable as exc:
                return self._failed(f"the server's tools could not be read: {exc}")
            except (PolicyLoadError, SchemaError) as exc:
                return self._failed(f"the policies of {self.server.name} do not validate:\n{exc}")
            log.info("policies of %s active: version %s", self.server.name, self.engine.version[:12])
            return self.engine

    def _failed(self, reason: str) -> Unavailable:
        log.error("no policy decisions for %s: %s", self.server.name, reason)
        self._failure = (time.monotonic(), reason)
        return Unavailable(reason)


class PolicyStage:
    def __init__(self, policies: Mapping[str, ServerPolicy]) -> None:
        self.policies = policies

    async def decide(self, principal: Principal, message: McpMessage) -> Decision | Unavailable | None:
        """The decision on ``message``, Unavailable when none can be made, None when it is not decided."""
        policy = self.policies.get(principal.server)
        operation = message.operation
        category = operation.category
        if policy is None or category in (Category.HOUSEKEEPING, Category.LIST, Category.RESPONSE):
            return None
        engine = await policy.ready_engine()
        if isinstance(engine, Unavailable):
            return engine
        if category is Category.UNKNOWN:
            return engine.decide(principal, str(message.method), str(message.method))
        name = operation.uri if category is Category.RESOURCE_READ else operation.name
        return engine.decide(principal, DECIDED[category], str(name), operation.arguments)
