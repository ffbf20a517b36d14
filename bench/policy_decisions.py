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

How the cost grows with the policy set: ``--policy-counts 10,100,1000`` instead measures, for each size, a set of
that many realistic policies (the demo's 5 plus generated ones, :mod:`policy_sets`: team permits, approvals,
blocked users and agents, argument conditions, per-server scopes; all validated against the schema), the same
four requests (no actor chain), bare and through Deputy, the sizes interleaved within each round. Deputy's own
work per decision is the difference of the two; if only the bare figure grows with the set, the growth is Cedar's.

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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from policy_sets import write_policy_set

from deputy.act_chain import Actor
from deputy.demo.server import build_demo_server
from deputy.gateway.principal import Principal
from deputy.policy import PolicyEngine, build_schema
from deputy.policy.engine import LoadedPolicies, common_context
from deputy.policy.schema import ACTION_TYPE, SERVER_TYPE, USER_TYPE, PolicySchema
from deputy.policy.slices import action_members
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
    parser.add_argument("--policy-counts", type=lambda v: [int(c) for c in v.split(",")], default=None,
                        help="measure sets of these many generated policies instead (e.g. 10,100,1000)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.getLogger("deputy.policy").setLevel(logging.WARNING)

    async def tools() -> list[dict[str, Any]]:
        listed = await build_demo_server().list_tools()
        return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed]

    schema = build_schema(asyncio.run(tools()))
    if args.policy_counts:
        return by_policy_count(schema, args)
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
            paths: list[tuple[str, Callable[[int], object]]] = [("bare", bare), ("deputy", deputy)]
            for name, call in paths[:: 1 if round_ % 2 == 0 else -1]:
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


def cpu_per_call_us(call: Callable[[int], object], count: int) -> float:
    """Process CPU µs per call of ``count`` calls ``call(i)``: on a shared, loaded machine CPU time is what holds."""
    start = time.process_time()
    for i in range(count):
        call(i)
    return 1e6 * (time.process_time() - start) / count


def by_policy_count(schema: PolicySchema, args: argparse.Namespace) -> int:
    """Bare Cedar, Cedar on the action's slice of the set, and Deputy's whole decide path, for each set size."""
    principal = Principal(user="alice", agent="agent-b", scopes=frozenset({"demo:tools", "openid"}),
                          token_id="t", server="demo", actors=(), txn="txn-1")
    calls: dict[tuple[int, str], Callable[[int], object]] = {}
    kept: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        for count in args.policy_counts:
            started = time.process_time()
            engine = PolicyEngine(write_policy_set(Path(directory) / str(count), count), schema)
            loaded = engine.loaded
            no_entities = loaded.no_entities  # made with the schema, as Deputy's: group scopes match
            print(f"{len(loaded.sources)} policies validated and parsed in {time.process_time() - started:.2f} s CPU")
            if len(loaded.sources) != count:
                print(f"expected {count} policies, loaded {len(loaded.sources)}", file=sys.stderr)
                return 1
            for tool, arguments, expected in REQUESTS:  # generated policies change no decision: check it
                decision = engine.decide(principal, "tools/call", tool, arguments)
                if str(decision.outcome) != expected or not all(p.startswith("demo-") for p in decision.determining):
                    print(f"{count} policies, {tool}: expected {expected} by demo policies, got {decision.outcome} "
                          f"by {decision.determining}", file=sys.stderr)
                    return 1
            requests = [{"principal": {"type": USER_TYPE, "id": "alice"}, "action": {"type": ACTION_TYPE, "id": tool},
                         "resource": {"type": SERVER_TYPE, "id": "demo"},
                         "context": {"input": arguments, **common_context(principal, "unknown", int(time.time()))}}
                        for tool, arguments, _ in REQUESTS]
            ests = {pid: source.est for pid, source in loaded.sources.items()}
            members = action_members(ests, loaded.schema.json_text)  # what Deputy's per-action sets hold
            slices = [loaded.policy_set_for(tool) for tool, _, _ in REQUESTS]
            kept[count] = statistics.mean(len(members[tool]) for tool, _, _ in REQUESTS)
            for request, policy_slice in zip(requests, slices, strict=True):  # the slice decides the same
                whole = cedarpy.is_authorized(request, loaded.policy_set, no_entities, schema=loaded.schema.handle)
                part = cedarpy.is_authorized(request, policy_slice, no_entities, schema=loaded.schema.handle)
                if (whole.decision, sorted(whole.diagnostics.reasons)) != (part.decision,
                                                                           sorted(part.diagnostics.reasons)):
                    print(f"{count} policies: the action's slice decides differently", file=sys.stderr)
                    return 1

            def bare(i: int, requests: list[dict[str, Any]] = requests, loaded: LoadedPolicies = loaded) -> object:
                return cedarpy.is_authorized(requests[i & 3], loaded.policy_set, loaded.no_entities,
                                             schema=loaded.schema.handle)

            def sliced(i: int, requests: list[dict[str, Any]] = requests, slices: list[Any] = slices,
                       loaded: LoadedPolicies = loaded) -> object:
                return cedarpy.is_authorized(requests[i & 3], slices[i & 3], loaded.no_entities,
                                             schema=loaded.schema.handle)

            def deputy(i: int, engine: PolicyEngine = engine) -> object:
                tool, arguments, _ = REQUESTS[i & 3]
                return engine.decide(principal, "tools/call", tool, arguments)

            calls[(count, "bare")], calls[(count, "sliced")], calls[(count, "deputy")] = bare, sliced, deputy
            for call in (bare, sliced, deputy):
                cpu_per_call_us(call, 200)  # warm-up
    results: dict[tuple[int, str], list[float]] = {}
    names = ("bare", "sliced", "deputy")
    for round_ in range(args.rounds):
        order = args.policy_counts if round_ % 2 == 0 else args.policy_counts[::-1]
        for count in order:
            for name in names if round_ % 2 == 0 else names[::-1]:
                decisions = max(400, args.decisions * min(args.policy_counts) // count)
                us = cpu_per_call_us(calls[(count, name)], decisions)
                results.setdefault((count, name), []).append(us)
                print(f"round {round_ + 1}, {count:5} policies, {name:6} {us:8.1f} µs CPU/decision "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"\nmedians of {args.rounds} rounds, process CPU µs per decision (4 rotating tools/call requests, "
          "no actor chain):\n")
    print("| policies | Cedar alone (cedarpy `is_authorized`, pre-built request) | Deputy `decide` (whole path) "
          "| Deputy's own work (difference) | Cedar ÷ smallest set | Deputy ÷ smallest set "
          "| Cedar on the action's slice (policies kept, mean) |")
    print("|---|---|---|---|---|---|---|")
    smallest = min(args.policy_counts)
    base = {name: statistics.median(results[(smallest, name)]) for name in names}
    for count in args.policy_counts:
        per = {name: statistics.median(results[(count, name)]) for name in names}
        print(f"| {count:,} | {per['bare']:.1f} | {per['deputy']:.1f} | {per['deputy'] - per['bare']:.1f} "
              f"| {per['bare'] / base['bare']:.2f} | {per['deputy'] / base['deputy']:.2f} "
              f"| {per['sliced']:.1f} ({kept[count]:.0f}) |")
    return 0

if __name__ == "__main__":
    sys.exit(main())
