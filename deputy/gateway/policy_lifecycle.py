"""One upstream server's policy engine over its life: checked at start, built from the live tools, kept current.

Start (:meth:`PolicyLifecycle.check_at_start`): the policy files are read and parsed — a
syntax error, an unknown annotation or a duplicate id stops start-up with its
``file:line:col``. Then, where Deputy can read the server's tools before it serves
(credentials ``static`` or ``none``, or a stdio server), the set is validated against
the live schema and an invalid set stops start-up too. A server whose tools cannot be
read yet, or whose upstream credentials are minted by Deputy (``exchange``: the upstream
would fetch Deputy's JWKS from the very process that is starting), is validated on
first need instead (:meth:`PolicyLifecycle.ready_engine`): until then nothing is decided
and its calls are refused.

A ``credentials = "oauth"`` server has no credential of Deputy's own: only each user's
connection (:mod:`deputy.connections`). Its tools are not read at start (logged), but at the
first call, with the *calling* user's connection (asked of
:meth:`Connections.headers_for <deputy.connections.service.Connections.headers_for>` like a
forwarded call's). When she has none usable the policy cannot decide, and the answer is
:class:`Unavailable` carrying what her connection lacks (the gateway sends her to connect:
:mod:`deputy.gateway.connection_answers`); nothing is forwarded. Once built, decisions need no
connection: a second user without one is decided (a denial stays a denial). A re-read
(below) asks the connections again for the last user whose call built or refreshed the
engine — only her principal is kept, never a header or a token.

Kept current, never loosened by accident:

* :meth:`PolicyLifecycle.reload` (SIGHUP, or the policy directory changed on disk —
  :class:`PolicyWatcher`): the files are read again and validated against the current
  schema; an invalid set is refused, logged at ERROR with every problem, and the
  previous set stays active.
* :meth:`PolicyLifecycle.tools_changed` (the upstream sent
  ``notifications/tools/list_changed``, or a reload): the tools are read again and
  the policies validated against the new schema; when they no longer validate the old
  pair stays active, loudly. Refreshes run in the background, at most one at a time
  and at most one per :data:`REFRESH_MIN_SECONDS` per server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded
from deputy.gateway.principal import Principal
from deputy.gateway.tool_catalog import CatalogUnavailable, fetch_tools
from deputy.gateway.upstream_credentials import UpstreamCredentials
from deputy.policy import PolicyEngine, PolicyLoadError, SchemaError, build_schema
from deputy.policy.sources import parse_policy_files, read_policy_files

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
REFRESH_MIN_SECONDS = 1.0
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No decision can be made for the server right now; ``reason`` is for the log and the error message.

    ``connection``: for a ``credentials = "oauth"`` server whose tools are not read yet, why the caller's connection
    could not read them — what she must do (:class:`ConnectionNeeded`), or her connection's failure
    (:class:`ConnectionFailed`, or the store holding it unreachable)."""

    reason: str
    connection: ConnectionNeeded | Exception | None = None


class ConnectionHeaders(Protocol):
    """What the lifecycle asks of :class:`deputy.connections.service.Connections`: a user's headers."""

    async def headers_for(self, server: UpstreamServer, principal: Principal
                          ) -> Sequence[tuple[str, str]] | ConnectionNeeded: ...


class PolicyLifecycle:
    """One server's engine, made from its live tool list and kept current."""

    def __init__(self, server: UpstreamServer, credentials: UpstreamCredentials, issuer: str,
                 user_claims: tuple[str, ...] = (), connections: ConnectionHeaders | None = None) -> None:
        assert server.policies is not None
        self.connections = connections  # a credentials = "oauth" server's tools are read with a user's
        self.user_claims = user_claims  # the extra claims context.user.claims types
        self.server = server
        self.directory: Path = server.policies
        self.credentials = credentials
        self.issuer = issuer
        self.engine: PolicyEngine | None = None
        self._failure: tuple[float, str] | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._stale = False  # a tools change was announced and not yet read
        self._reader: Principal | None = None  # oauth: whose connection read the tools last (never her headers)

    @property
    def readable_before_serving(self) -> bool:
        """Whether the tools can be read while Deputy is not yet serving (its JWKS is not needed)."""
        return self.server.url is None or self.server.credentials not in ("exchange", "oauth")

    @property
    def per_user(self) -> bool:
        """Whether the tools are read with a user's own connection (Deputy has no credential there)."""
        return self.server.url is not None and self.server.credentials == "oauth"

    async def check_at_start(self) -> None:
        """Raise PolicyLoadError for a policy set that cannot be used (see the module docstring)."""
        parse_policy_files(read_policy_files(self.directory))
        if self.per_user:
            log.info("tools of %s are read at first use, with the calling user's connection (Deputy has no "
                     "credential of its own there); its policies are validated then", self.server.name)
            return
        if not self.readable_before_serving:
            return
        try:
            tools = await asyncio.wait_for(fetch_tools(self.server, self.credentials, self.issuer), START_TIMEOUT)
        except (CatalogUnavailable, TimeoutError) as exc:
            log.warning("tools of %s not readable at start (%s); policies are validated on first need",
                        self.server.name, exc or "timed out")
            return
        async with self._lock:
            self.engine = PolicyEngine(self.directory, build_schema(tools, self.user_claims))  # raises PolicyLoadError
        log.info("policies of %s active: version %s", self.server.name, self.engine.version[:12])

    async def ready_engine(self, principal: Principal | None = None) -> PolicyEngine | Unavailable:
        """The engine, built first when it is not yet (for an oauth server, with ``principal``'s connection)."""
        if self.engine is not None:
            return self.engine
        async with self._lock:
            if self.engine is not None:
                return self.engine
            if self._failure is not None and time.monotonic() - self._failure[0] < RETRY_SECONDS:
                return Unavailable(self._failure[1])
            headers = None
            if self.per_user:
                got = await self._headers_of(principal)
                if isinstance(got, Unavailable):
                    return got  # hers alone: not remembered as the server's failure
                headers = got
            try:
                tools = await fetch_tools(self.server, self.credentials, self.issuer, headers=headers)
                self.engine = PolicyEngine(self.directory, build_schema(tools, self.user_claims))
            except CatalogUnavailable as exc:
                return self._failed(f"the server's tools could not be read: {exc}")
            except (PolicyLoadError, SchemaError) as exc:
                return self._failed(f"the policies of {self.server.name} do not validate:\n{exc}")
            self._failure = None
            if self.per_user:
                self._reader = principal
            log.info("policies of %s active: version %s", self.server.name, self.engine.version[:12])
            return self.engine

    async def _headers_of(self, principal: Principal | None) -> Sequence[tuple[str, str]] | Unavailable:
        """``principal``'s headers at a ``credentials = "oauth"`` server, or why there are none (for her)."""
        name = self.server.name
        if self.connections is None or principal is None:
            return Unavailable(f"the tools of {name} are read with a user's connection, and there is none to use")
        try:
            got = await self.connections.headers_for(self.server, principal)
        except (ConnectionFailed, SQLAlchemyError, OSError) as exc:  # any other error is not a connection problem
            log.warning("tools of %s not read: the caller's connection cannot be used (%s)", name,
                        getattr(exc, "reason", type(exc).__name__))
            return Unavailable(f"the tools of {name} are read with the caller's connection, which cannot be used now",
                               connection=exc)
        if isinstance(got, ConnectionNeeded):
            return Unavailable(f"the tools of {name} are read with the caller's connection: {got.reason}",
                               connection=got)
        return got

    def _failed(self, reason: str) -> Unavailable:
        log.error("no policy decisions for %s: %s", self.server.name, reason)
        self._failure = (time.monotonic(), reason)
        return Unavailable(reason)

    def reload(self) -> None:
        """Re-read the policy files (the previous set stays active unless the new one validates)."""
        if self.engine is None:
            self._failure = None  # not built yet: the next call builds from the files as they are now
            return
        self.engine.reload()

    def tools_changed(self, principal: Principal | None = None) -> None:
        """Schedule a re-read of the server's tools and a re-validation against them.

        A change announced while a re-read is under way is read again after it: the running
        one may already have fetched the list from before that change. ``principal``: the user
        whose call's answer announced it; an oauth server's tools are re-read with her connection
        (else with that of the last user who read them).
        """
        if principal is not None and self.per_user and self.engine is not None:
            self._reader = principal
        self._stale = True
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_tools())

    async def _refresh_tools(self) -> None:
        while self._stale:
            wait = self._refreshed_at + REFRESH_MIN_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._stale = False
            self._refreshed_at = time.monotonic()
            await self._refresh_once()

    async def _refresh_once(self) -> None:
        if self.engine is None:
            self._failure = None
            return
        headers = None
        if self.per_user:
            got = await self._headers_of(self._reader)
            if isinstance(got, Unavailable):
                log.error("tools of %s changed but cannot be read (%s); the previous schema stays active",
                          self.server.name, got.reason)
                return
            headers = got
        try:
            tools = await fetch_tools(self.server, self.credentials, self.issuer, headers=headers)
            schema = build_schema(tools, self.user_claims)
        except (CatalogUnavailable, SchemaError) as exc:
            log.error("tools of %s changed but cannot be read (%s); the previous schema stays active",
                      self.server.name, exc)
            return
        if schema.version != self.engine.loaded.schema.version:
            result = self.engine.use_schema(schema)
            log.warning("tools of %s changed: schema %s %s", self.server.name, schema.version[:12],
                        "active" if result.applied else "REFUSED (the previous schema and policies stay active)")

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()


class PolicyWatcher:
    """Reloads a server's policies when its directory's ``*.cedar`` files change (names, sizes, mtimes) and then
    stay unchanged for one more interval: a file caught half-written can still be a valid set — cut after one
    policy, before the ``forbid`` that follows — which would be in force until the next poll."""

    def __init__(self, policies: Iterable[PolicyLifecycle], interval: float) -> None:
        self.policies = list(policies)
        self.interval = interval
        self._seen = {id(policy): _fingerprint(policy.directory) for policy in self.policies}
        self._changing: dict[int, tuple[tuple[str, int, int], ...]] = {}  # a change seen, not yet settled
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self.policies:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for policy in self.policies:
                key, now = id(policy), _fingerprint(policy.directory)
                if now == self._seen[key]:
                    self._changing.pop(key, None)
                elif self._changing.get(key) != now:
                    self._changing[key] = now  # changed: reloaded once it holds still for an interval
                else:
                    del self._changing[key]
                    self._seen[key] = now
                    log.warning("policy files of %s changed on disk: reloading", policy.server.name)
                    policy.reload()


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.glob("*.cedar")))
    except OSError:
        return ()
