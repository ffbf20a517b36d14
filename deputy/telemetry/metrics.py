"""Deputy's Prometheus metrics: one :class:`Metrics` per application, in a registry of its own.

Served in the Prometheus text exposition format on ``[metrics] listen``, never on the public port. Every label has
a closed, small set of values — a server name from the configuration, an MCP method from :data:`MCP_METHODS` (else
``other``), an outcome, a grant type, an OAuth error code (RFC 6749 §5.2) — never a user, client, token or argument,
so the number of series is bounded by the configuration, not by traffic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def method_label(method: str | None) -> str:
    """The MCP method as a label value: a known method, ``other``, or ``none`` for a GET or DELETE."""
    if method is None:
        return "none"
    return method if method in MCP_METHODS else "other"


class Metrics:
    """The metrics of one Deputy application (a registry each, so two applications in one process never clash)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # The gateway, /mcp/NAME: one count and one duration per request.
        self.requests = Counter(
            "deputy_requests", "Requests to /mcp/NAME by server, MCP method and outcome",
            ("server", "method", "outcome"), registry=registry)
        self.request_seconds = Histogram(
            "deputy_request_duration_seconds", "Whole request at the gateway, until the answer's headers",
            ("server", "method"), buckets=REQUEST_BUCKETS, registry=registry)
        self.stage_seconds = Histogram(
            "deputy_stage_duration_seconds", "One stage of a gateway request: authenticate, decide, audit, upstream",
            ("stage",), buckets=STAGE_BUCKETS, registry=registry)
        self.decisions = Counter(
            "deputy_decisions", "Policy decisions by server and outcome",
            ("server", "outcome"), registry=registry)
        self.upstream_errors = Counter(
            "deputy_upstream_errors", "Upstream failures by server and kind (unreachable, timeout, status, process)",
            ("server", "kind"), registry=registry)
        # The authorization server.
        self.tokens_issued = Counter(
            "deputy_tokens_issued", "Access tokens issued by grant type", ("grant_type",), registry=registry)
        self.token_refusals = Counter(
            "deputy_token_refusals", "Token requests refused, by grant type and OAuth error code",
            ("grant_type", "error"), registry=registry)
        # The audit log.
        self.audit_batch_records = Histogram(
            "deputy_audit_append_batch_records", "Records committed together in one audit append",
            buckets=BATCH_BUCKETS, registry=registry)
        self.audit_queue_depth = Gauge(
            "deputy_audit_queue_depth", "Audit records waiting to be committed", registry=registry)
        self.audit_commit_seconds = Histogram(
            "deputy_audit_commit_duration_seconds", "One audit batch's commit, sequencer lock included",
            buckets=STAGE_BUCKETS, registry=registry)
        self.audit_checkpoint_age = Gauge(
            "deputy_audit_checkpoint_age_seconds", "Age of the newest signed checkpoint", registry=registry)
        # Revocations and approvals.
        self.revocation_staleness = Gauge(
            "deputy_revocation_staleness_seconds", "Time since the revocation view was last read", registry=registry)
        self.approvals_pending = Gauge(
            "deputy_approvals_pending", "Calls held for a human approval and not yet decided", registry=registry)
