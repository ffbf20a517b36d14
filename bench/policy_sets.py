"""Realistic Cedar policy sets of any size for the demo server's schema, for the scaling benchmarks.

A set of ``count`` policies is the demo policies (``deputy/demo/policies``, 6: they decide the benchmark's calls as
they do in the demo) plus ``count - 6`` generated ones, each one of the shapes an operator with many teams writes
(Cedar policy language, https://docs.cedarpolicy.com/policies/syntax-policy.html), with a number ``k`` that makes it
distinct:

- a team (``context.user.groups``) may call one tool; a team's scope opens every tool (``action in "tools/call"``);
- a team's deletes need a human approval (``@approval("required")``) or a scope (``@requires_scope``);
- a user or an agent is blocked (``principal ==``, ``context.agent.client_id``, ``context.actor_client_ids``);
- an argument condition: ``add`` beyond a bound, ``echo`` text like a pattern, ``delete_user`` of a reserved id range
  unless the caller is in the range's admin group;
- another server's resource needs its own scope (``resource ==`` with ``unless``).

None of the generated policies is satisfied by the benchmark's requests (user ``alice``/``bench-user``, agent
``bench-client``/``agent-b``, small arguments), so every decision is the one the demo policies give, and the cost
measured is that of the set's size alone: Cedar evaluates every policy it is given (Deputy gives it, per request,
the policies whose action scope may match: :mod:`deputy.policy.slices`).
"""

from __future__ import annotations

from pathlib import Path

from deputy.starter import DEMO_POLICY_DIR

DEMO_POLICY_COUNT = 6  # listing.cedar 1, tools.cedar 5
TOOLS = ("echo", "add", "list_users", "delete_user")


def _policy(k: int) -> str:
    tool = TOOLS[k % len(TOOLS)]
    shapes = (
        f'@id("team-{k}-may-call-{tool}")\n'
        f'permit (principal, action == Deputy::Action::"{tool}", resource)\n'
        f'when {{ context.user.groups.contains("team-{k}") && context.scopes.contains("demo:tools") }};',
        f'@id("team-{k}-scope-opens-tools")\n'
        f'permit (principal, action in Deputy::Action::"tools/call", resource)\n'
        f'when {{ context.scopes.contains("team-{k}:tools") }};',
        f'@id("team-{k}-deletes-need-approval")\n@approval("required")\n'
        f'permit (principal, action == Deputy::Action::"delete_user", resource)\n'
        f'when {{ context.user.groups.contains("ops-{k}") }};',
        f'@id("team-{k}-admin-echo")\n@requires_scope("team-{k}:admin")\n'
        f'permit (principal, action == Deputy::Action::"echo", resource)\n'
        f'when {{ context.user.groups.contains("echo-admins-{k}") }};',
        f'@id("blocked-user-{k}")\nforbid (principal == Deputy::User::"former-employee-{k}", action, resource);',
        f'@id("blocked-agent-{k}")\nforbid (principal, action, resource)\n'
        f'when {{ context.agent.client_id == "rogue-agent-{k}"\n'
        f'       || context.actor_client_ids.contains("rogue-agent-{k}") }};',
        f'@id("add-bound-{k}")\nforbid (principal, action == Deputy::Action::"add", resource)\n'
        f'when {{ context.input.a > {1_000_000 + k} && context.user.groups.contains("capped-{k}") }};',
        f'@id("echo-no-secret-{k}")\nforbid (principal, action == Deputy::Action::"echo", resource)\n'
        f'when {{ context.input.text like "*secret-{k}-*" }};',
        f'@id("reserved-ids-{k}")\nforbid (principal, action == Deputy::Action::"delete_user", resource)\n'
        f'when {{ context.input.id >= {100_000 + 100 * k} && context.input.id < {100_100 + 100 * k} }}\n'
        f'unless {{ context.user.groups.contains("admins-{k}") }};',
        f'@id("server-{k}-needs-its-scope")\nforbid (principal, action, resource == Deputy::Server::"server-{k}")\n'
        f'unless {{ context.scopes.contains("server-{k}") }};',
    )
    return shapes[k % len(shapes)]


def generated_policies(count: int) -> str:
    """The ``count - 6`` generated policies (see the module docstring), as one Cedar file."""
    if count < DEMO_POLICY_COUNT:
        raise ValueError(f"a set has at least the {DEMO_POLICY_COUNT} demo policies")
    return "\n\n".join(_policy(k) for k in range(count - DEMO_POLICY_COUNT)) + "\n"


def write_policy_set(directory: Path, count: int) -> Path:
    """Write the demo policies and the generated ones into ``directory`` (created); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in DEMO_POLICY_DIR.glob("*.cedar"):
        (directory / path.name).write_text(path.read_text())
    (directory / "zz_generated.cedar").write_text(generated_policies(count))
    return directory
