"""Benchmark: Cedar policy decisions per second on Deputy's real decision path, one thread.

The schema is generated from the demo server's real ``tools/list`` (its ``MCPServer``
built in process) exactly as Deputy does it; the policy set is the demo policies
(``deputy/demo/policies``: 5) plus 15 realistic others (:data:`EXTRA`) — 20 policies,
validated, pre-parsed once. Each decision is ``PolicyEngine.decide(principal,
"tools/call", tool, arguments)``: argument conversion by the schema, the common
context (scopes, agent, the actor chain, txn, time), ``cedarpy.is_authorized``
with the pre-parsed ``PolicySet`` and ``Schema``, the annotation semantics, a
``Decision`` with a fresh id. Four requests rotate: echo (allow), add (allow),
delete_user id 500 (approval_required), delete_user id 7 (deny). All of it twice: a
direct call (no actor chain) and a delegated one (a two-hop chain: each hop is a
Cedar record in ``context.actors``, and Cedar's cost grows with the context).

The baseline in the same run is bare ``cedarpy.is_authorized`` on the same four
requests, pre-built (context included), same ``PolicySet``, ``Schema`` and empty
``Entities`` handle: what Deputy's own work adds is the ratio.

    .venv/bin/python bench/policy_decisions.py [--decisions 20000] [--rounds 5] [--cpu N]

Single-threaded throughout; ``--cpu N`` pins the process to CPU N.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deputy.act_chain import Actor
from deputy.demo.server import build_demo_server
from deputy.gateway.principal import Principal
from deputy.policy import PolicyEngine, build_schema
from deputy.policy.engine import common_context
from deputy.policy.schema import ACTION_TYPE, SERVER_TYPE, USER_TYPE
from deputy.starter import DEMO_POLICY_DIR

DEMO_POLICIES = DEMO_POLICY_DIR

EXTRA = """
@id("no-secrets-echoed")
forbid (principal, action == Deputy::Action::"echo", resource)
when { context.input.text like "*password*" || context.input.text like "*BEGIN PRIVATE KEY*" };

@id("small-sums")
forbid (principal, action == Deputy::Action::"add", resource)
when { context.input.a > 1000000000 || context.input.b > 1000000000 };

@id("blocked-users")
forbid (principal, action, resource) when { [Deputy::User::"mallory", Deputy::User::"eve"].contains(principal) };

@id("blocked-agents")
forbid (principal, action, resource)
when { ["rogue-bot", "scraper"].containsAny(context.actor_client_ids) || context.agent.client_id == "rogue-bot" };

@id("deletes-need-a-reason")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { context.input.reason == "" };

@id("deletes-need-a-task")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { !(context has txn) };

@id("dynamic-clients-read-only")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { context.agent.registration == "dynamic" };

@id("ops-may-list")
permit (principal == Deputy::User::"ops", action == Deputy::Action::"list_users", resource);

@id("admin-echo")
@requires_scope("demo:admin")
permit (principal, action == Deputy::Action::"echo", resource);

@id("prod-needs-prod-scope")
forbid (principal, action in Deputy::Action::"tools/call", resource == Deputy::Server::"prod")
unless { context.scopes.contains("prod") };

@id("maintenance-window")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { context.time < 0 };

@id("chain-must-start-at-a-trusted-agent")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { context.actor_count > 0
       && !context.actors.contains({index: context.actor_count - 1, sub: "agent-a", client_id: "agent-a",
                                    iss: "http://127.0.0.1:8000"}) };

@id("no-self-delete-ids")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { context.input.id == 4242 };

@id("service-accounts-no-prompts")
forbid (principal, action == Deputy::Action::"prompts/get", resource)
when { context.agent.client_id like "svc-*" };

@id("readme-for-everyone")
permit (principal, action == Deputy::Action::"resources/read", resource)
when { context.uri == "demo://readme" };
"""

REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("echo", {"text": "hello"}, "allow"),
    ("add", {"a": 2, "b": 3}, "allow"),
    ("delete_user", {"id": 500, "reason": "left"}, "approval_required"),
    ("delete_user", {"id": 7, "reason": "left"}, "deny"),
]


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000


def measure(call: Callable[[int], object], count: int) -> tuple[float, float, float]:
    """(decisions/s, p50 µs, p99 µs) of ``count`` calls ``call(i)``."""
    samples = [0] * count
    clock = time.perf_counter_ns
    start = clock()
    for i in range(count):
        t0 = clock()
        call(i)
        samples[i] = clock() - t0
    elapsed = (clock() - start) / 1e9
    samples.sort()
    return count / elapsed, percentile(samples, 0.50), percentile(samples, 0.99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20000, help="decisions per run (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each a bare run and a Deputy run (default 5)")
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.getLogger("deputy.policy").setLevel(logging.WARNING)

    async def tools() -> list[dict[str, Any]]:
        listed = await build_demo_server().list_tools()
        return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed]

    schema = build_schema(asyncio.run(tools()))
    with tempfile.TemporaryDirectory() as directory:
        for path in DEMO_POLICIES.glob("*.cedar"):
            (Path(directory) / path.name).write_text(path.read_text())
        (Path(directory) / "zz_extra.cedar").write_text(EXTRA)
        engine = PolicyEngine(Path(directory), schema)
    policies = len(engine.loaded.sources)
    loaded = engine.loaded
    no_entities = cedarpy.Entities.from_json_str("[]")

    results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for hops in (0, 2):
        actors = tuple(Actor(f"agent-{c}", f"agent-{c}", "http://127.0.0.1:8000") for c in "ba"[2 - hops:])
        principal = Principal(user="alice", agent="agent-b", scopes=frozenset({"demo:tools", "openid"}),
                              token_id="t", server="demo", actors=actors, txn="txn-1")
        for tool, arguments, expected in REQUESTS:  # the path is the real one: check it answers as it should
            outcome = str(engine.decide(principal, "tools/call", tool, arguments).outcome)
            if outcome != expected:
                print(f"{tool} {arguments}: expected {expected}, got {outcome}", file=sys.stderr)
                return 1
        bare_requests = [{"principal": {"type": USER_TYPE, "id": "alice"}, "action": {"type": ACTION_TYPE, "id": tool},
                          "resource": {"type": SERVER_TYPE, "id": "demo"},
                          "context": {"input": arguments, **common_context(principal, "unknown", int(time.time()))}}
                         for tool, arguments, _ in REQUESTS]

        def bare(i: int, requests: list[dict[str, Any]] = bare_requests) -> object:
            return cedarpy.is_authorized(requests[i & 3], loaded.policy_set, no_entities, schema=loaded.schema.handle)

        def deputy(i: int, principal: Principal = principal) -> object:
            tool, arguments, _ = REQUESTS[i & 3]
            return engine.decide(principal, "tools/call", tool, arguments)

        measure(bare, 2000), measure(deputy, 2000)  # warm-up
        for round_ in range(args.rounds):
            for name, call in [("bare", bare), ("deputy", deputy)][:: 1 if round_ % 2 == 0 else -1]:
                rate, p50, p99 = measure(call, args.decisions)
                results.setdefault((hops, name), []).append((rate, p50, p99))
                print(f"{hops} hops, round {round_ + 1}, {name:6} {rate:9,.0f}/s  p50 {p50:6.1f} µs  "
                      f"p99 {p99:6.1f} µs", flush=True)

    print(f"\n{policies} policies, {args.decisions} decisions per run, {args.rounds} rounds; medians of the rounds:\n")
    print("| actor chain | path | decisions/s | p50 µs | p99 µs | ÷ bare |")
    print("|---|---|---|---|---|---|")
    for hops in (0, 2):
        bare_rate = statistics.median(r for r, _, _ in results[(hops, "bare")])
        for name, label in (("bare", "cedarpy `is_authorized` alone (pre-built request)"),
                            ("deputy", "Deputy `PolicyEngine.decide` (whole path)")):
            rows = results[(hops, name)]
            rate = statistics.median(r for r, _, _ in rows)
            p50, p99 = statistics.median(p for _, p, _ in rows), statistics.median(p for _, _, p in rows)
            print(f"| {hops} hops | {label} | {rate:,.0f} | {p50:.0f} | {p99:.0f} | {rate / bare_rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
