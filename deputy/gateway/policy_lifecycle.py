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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deputy.config import UpstreamServer
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
    """No decision can be made for the server right now; ``reason`` is for the log and the error message."""

    reason: str


class PolicyLifecycle:
    """One server's engine, made from its live tool list and kept current."""

    def __init__(self, server: UpstreamServer, credentials: UpstreamCredentials, issuer: str,
                 user_claims: tuple[str, ...] = ()) -> None:
        assert server.policies is not None
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

    @property
    def readable_before_serving(self) -> bool:
        """Whether the tools can be read while Deputy is not yet serving (its JWKS is not needed)."""
        return self.server.url is None or self.server.credentials != "exchange"

    async def check_at_start(self) -> None:
        """Raise PolicyLoadError for a policy set that cannot be used (see the module docstring)."""
        parse_policy_files(read_policy_files(self.directory))
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
                self.engine = PolicyEngine(self.directory, build_schema(tools, self.user_claims))
            except CatalogUnavailable as exc:
                return self._failed(f"the server's tools could not be read: {exc}")
            except (PolicyLoadError, SchemaError) as exc:
                return self._failed(f"the policies of {self.server.name} do not validate:\n{exc}")
            self._failure = None
            log.info("policies of %s active: version %s", self.server.name, self.engine.version[:12])
            return self.engine

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

    def tools_changed(self) -> None:
        """Schedule a re-read of the server's tools and a re-validation against them.

        A change announced while a re-read is under way is read again after it: the running
        one may already have fetched the list from before that change.
        """
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
        try:
            tools = await fetch_tools(self.server, self.credentials, self.issuer)
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
    """Reloads a server's policies when its directory's ``*.cedar`` files change (names, sizes, mtimes)."""

    def __init__(self, policies: Iterable[PolicyLifecycle], interval: float) -> None:
        self.policies = list(policies)
        self.interval = interval
        self._seen = {id(policy): _fingerprint(policy.directory) for policy in self.policies}
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
                now = _fingerprint(policy.directory)
                if now != self._seen[id(policy)]:
                    self._seen[id(policy)] = now
                    log.warning("policy files of %s changed on disk: reloading", policy.server.name)
                    policy.reload()


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.glob("*.cedar")))
    except OSError:
        return ()
