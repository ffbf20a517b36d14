"""Deputy's Prometheus metrics: one :class:`Metrics` per application, in a registry of its own.

Served in the Prometheus text exposition format (or OpenMetrics, when the scraper asks for it) on ``[metrics]
listen`` (:mod:`deputy.telemetry.metrics_listener`), never on the public port. Every label has a closed, small set
of values — a server name from the configuration, an MCP method from :data:`MCP_METHODS` (else ``other``), an
outcome, a grant type from the token endpoint's closed list (else ``other``), an OAuth error code (RFC 6749 §5.2,
the closed set of :mod:`deputy.oauth.errors`) — never a user, client, token or argument, so the number of series
is bounded by the configuration, not by traffic.

No ``_created`` series: prometheus-client adds one per labelled counter and histogram (a second series for each),
and the switch that turns them off (``disable_created_metrics``) is global to the process, so this module's
registry drops them itself. What they carry, the moment a count began, matters only to the first ``rate()`` after
a restart, which Prometheus's counter-reset handling covers.

Gauges read at scrape time (``Gauge.set_function``) cost the served path nothing: the audit queue depth, the age of
the newest checkpoint, the revocation view's staleness, and the pending approvals, a database count kept by
:class:`CachedCount` so a scrape never waits for the database. Every instrument is safe to read from another
thread (prometheus-client locks each value), which lets the listener render a scrape off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import RestrictedRegistry

from deputy import clock

log = logging.getLogger(__name__)

# Methods of MCP 2026-07-28 a client sends; anything else is counted as "other" (labels stay bounded).
MCP_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/templates/list",
    "resources/read", "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get",
    "completion/complete", "logging/setLevel", "notifications/initialized", "notifications/cancelled",
    "notifications/progress", "notifications/roots/list_changed",
})
# Seconds: the gateway's own stages take tens of microseconds to milliseconds, an upstream up to minutes.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Records per commit: 1 for a lone appender, up to [audit] batch_max (512 by default) under load.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# A commit holds the sequencer lock: sub-millisecond on SQLite, milliseconds on PostgreSQL, up to the
# [audit] append_timeout_ms bound (seconds) when the lock is contended.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def method_label(method: str | None) -> str:
    """The MCP method as a label value: a known method, ``other``, or ``none`` for a GET or DELETE."""
    if method is None:
        return "none"
    return method if method in MCP_METHODS else "other"


class Metrics:
    """The metrics of one Deputy application (a registry each, so two applications in one process never clash)."""

    def __init__(self) -> None:
        self.registry = registry = WithoutCreated(auto_describe=True)
        # The gateway, /mcp/NAME: one count and one duration per request.
        self.requests = Counter(
            "deputy_requests", "Requests to /mcp/NAME by server, MCP method and outcome",
            ("server", "method", "outcome"), registry=registry)
        self.request_seconds = Histogram(
            "deputy_request_duration_seconds", "Whole request at the gateway, until its answer is done",
            ("server", "method"), buckets=REQUEST_BUCKETS, registry=registry)
        self.stage_seconds = Histogram(
            "deputy_stage_duration_seconds", "One stage of a gateway request: authenticate, decide, audit, upstream",
            ("stage",), buckets=STAGE_BUCKETS, registry=registry)
        self.decisions = Counter(
            "deputy_decisions", "Policy decisions by server and outcome",
            ("server", "outcome"), registry=registry)
        self.upstream_errors = Counter(
            "deputy_upstream_errors",
            "Upstream failures by server and kind (HTTP: unreachable, timeout, broken, refused, too_large, busy; "
            "stdio: process)",
            ("server", "kind"), registry=registry)
        # The authorization server (deputy.oauth.token).
        self.tokens_issued = Counter(
            "deputy_tokens_issued", "Access tokens issued by the token endpoint, by grant type",
            ("grant_type",), registry=registry)
        self.token_refusals = Counter(
            "deputy_token_refusals", "Token requests refused, by grant type and OAuth error code",
            ("grant_type", "error"), registry=registry)
        # The audit log (deputy.audit.log).
        self.audit_batch_records = Histogram(
            "deputy_audit_append_batch_records", "Records committed together in one audit append transaction",
            buckets=BATCH_BUCKETS, registry=registry)
        self.audit_queue_depth = Gauge(
            "deputy_audit_queue_depth", "Audit records waiting to be committed", registry=registry)
        self.audit_commit_seconds = Histogram(
            "deputy_audit_commit_duration_seconds", "One audit append transaction, sequencer lock included",
            buckets=COMMIT_BUCKETS, registry=registry)
        self.audit_commit_failures = Counter(
            "deputy_audit_commit_failures", "Audit append transactions that failed (each fails all its records)",
            registry=registry)
        self.audit_checkpoint_age = Gauge(
            "deputy_audit_checkpoint_age_seconds",
            "Age of the newest signed checkpoint in the database (NaN: none yet); grows while the log is idle",
            registry=registry)
        # Revocations and approvals.
        self.revocation_staleness = Gauge(
            "deputy_revocation_staleness_seconds", "Time since the revocation view was last read from the database",
            registry=registry)
        self.approvals_pending = Gauge(
            "deputy_approvals_pending",
            "Calls held for a human approval, not yet decided nor expired (NaN: the database could not be counted)",
            registry=registry)
        self._counts: list[CachedCount] = []

    def count_at_scrape(self, gauge: Gauge, read: Callable[[], Awaitable[int]]) -> CachedCount:
        """Let ``gauge`` show the database count ``read`` returns, cached (:class:`CachedCount`)."""
        count = CachedCount(read)
        gauge.set_function(count.value)
        self._counts.append(count)
        return count

    def before_scrape(self) -> None:
        """Start the reads of the counts that are due (on the event loop; the scrape does not wait for them)."""
        for count in self._counts:
            count.poke()

    async def read_counts(self) -> None:
        """Read every count now (at start-up, so the first scrape has them)."""
        for count in self._counts:
            await count.refresh()

    async def close(self) -> None:
        """Cancel the counts still being read (before the database they read is disposed of)."""
        for count in self._counts:
            await count.close()


def _without_created(metrics: Iterable[Metric]) -> Iterator[Metric]:
    for metric in metrics:
        # Each collect builds its Metric objects afresh, so filtering them in place touches no shared state.
        metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
        yield metric


class WithoutCreated(CollectorRegistry):
    """A registry whose exposition has no ``_created`` series (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        return _without_created(super().collect())

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        return _RestrictedWithoutCreated(names, self)  # the ``name[]`` filter of a scrape URL


class _RestrictedWithoutCreated(RestrictedRegistry):
    def collect(self) -> Iterator[Metric]:
        return _without_created(super().collect())


class CachedCount:
    """A number read from the database for a scrape, at most every ``max_age`` seconds, never waited for.

    :meth:`value` (the gauge's function, called while the registry is rendered, perhaps off the event loop)
    returns the last count. :meth:`poke` (on the event loop, as a scrape begins) starts a new read in the
    background when the last one is older than ``max_age``, bounded by ``timeout``; the scrape goes on with the
    last count. While the database cannot be read the value is NaN — an unknown count, not a stale one passed
    off as current — and it is tried again ``max_age`` later, so a dead database is not asked on every scrape.
    Before the first read has finished the value is NaN as well (:meth:`refresh` reads at start-up).
    """

    def __init__(self, read: Callable[[], Awaitable[int]], max_age: float = 5.0, timeout: float = 2.0) -> None:
        self.read = read
        self.max_age = max_age
        self.timeout = timeout
        self._value = math.nan
        self._asked_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def value(self) -> float:
        return self._value

    def poke(self) -> None:
        """Start a read in the background if the count is due one (call on the event loop)."""
        if self._task is None and (self._asked_at is None or clock.monotonic() - self._asked_at >= self.max_age):
            self._asked_at = clock.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._refresh(), name="deputy-metrics-count")

    async def refresh(self) -> None:
        """Read the count now, unless a read is already running."""
        if self._task is None:
            self._asked_at = clock.monotonic()
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            self._value = float(await asyncio.wait_for(self.read(), self.timeout))
        except Exception as exc:  # the database's failure of any kind: the count is unknown
            if not self._failing:  # once per outage, not once per scrape
                log.warning("metrics: a count could not be read from the database: %s", type(exc).__name__)
            self._failing = True
            self._value = math.nan
        else:
            self._failing = False
        finally:
            self._task = None

    async def close(self) -> None:
        """Cancel a read still running (at shutdown, before the database goes)."""
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
