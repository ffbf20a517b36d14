"""A policy tightened from ``@approval("self")`` to ``"required"`` holds for the calls already waiting.

From an outside review (2026-12-06): a call held under ``"self"`` kept its approval's ``self_approval`` after the
operator required another person's approval; alice approved her own call and her retry ran upstream. Now the
waiting approval takes the rule decided at each retry (deputy.storage.approvals.ApprovalRepository.create), and
an approval the requester gave herself is used only when the decision made at the call allows it (``consume``).
Against a real ``deputy serve`` (policies reloaded by the watcher) and an upstream that records what reached it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.demo_policies import guarded_server
from tests.support.deputy_process import RunningDeputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.recording_upstream import RequestRecorder

BOB_PASSWORD = "bob's own long passphrase"
SELF = '''
@id("delete-with-own-approval")
@approval("self")
permit (principal, action == Deputy::Action::"delete_user", resource);
'''
REQUIRED = '''
@id("delete-with-another-users-approval")
@approval("required")
permit (principal, action == Deputy::Action::"delete_user", resource);
'''


@dataclass
class Setup:
    deputy: RunningDeputy
    recorder: RequestRecorder
    policy: Path


@pytest.fixture(scope="module")
def setup(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("approval-tightening")
    with guarded_server(directory, upstream_url, "held", SELF, extra="[gateway]\npolicy_watch_seconds = 0.2\n",
                        users=(("bob", BOB_PASSWORD),)) as guarded:
        yield Setup(guarded.deputy, guarded.recorder, directory / "held-policies" / "held.cedar")


async def call(setup: Setup, token: str, reason: str) -> dict[str, Any]:
    response = await mcp_post(setup.deputy, token, server="held", headers={"Accept": "application/json"},
                              body={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                    "params": {"name": "delete_user", "arguments": {"id": 150, "reason": reason}}})
    answer: dict[str, Any] = response.json()
    return answer


def ran(setup: Setup, reason: str) -> int:
    """How many calls of delete_user with ``reason`` reached the upstream."""
    count = 0
    for request in setup.recorder.seen:
        message = json.loads(request.body or b"null")
        if isinstance(message, dict) and message.get("method") == "tools/call" and \
                message["params"].get("arguments", {}).get("reason") == reason:
            count += 1
    return count


async def reloaded(setup: Setup, token: str, policy_id: str) -> None:
    """Wait until Deputy decides by ``policy_id``, probing with a call of its own (never the one under test)."""
    async def decided() -> None:
        held = await call(setup, token, f"probe {policy_id}")
        assert held["error"]["data"]["policies"] == [policy_id], held

    await eventually(decided)


async def test_a_waiting_call_needs_another_users_approval_once_the_policy_says_so(setup: Setup) -> None:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("held"))
    first = await call(setup, token, "waiting")
    assert first["error"]["data"]["outcome"] == "approval_required", first
    approval_id = first["error"]["data"]["approval_id"]
    setup.policy.write_text(REQUIRED)  # the operator tightens the rule

    async def tightened() -> dict[str, Any]:
        held = await call(setup, token, "waiting")
        assert held["error"]["data"]["policies"] == ["delete-with-another-users-approval"], held
        return held

    held = await eventually(tightened)
    assert held["error"]["data"]["approval_id"] == approval_id, "the waiting approval, narrowed"
    own = setup.deputy.cli("approvals", "approve", approval_id, "--as", "alice")
    assert own.returncode != 0 and "own request" in own.stderr + own.stdout, own
    assert "error" in await call(setup, token, "waiting") and ran(setup, "waiting") == 0
    assert setup.deputy.cli("approvals", "approve", approval_id, "--as", "bob").returncode == 0
    assert "result" in await call(setup, token, "waiting") and ran(setup, "waiting") == 1


async def test_an_approval_she_gave_herself_before_the_change_is_not_used_after_it(setup: Setup) -> None:
    setup.policy.write_text(SELF)
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("held"))

    async def held_under_self() -> str:
        held = await call(setup, token, "self-approved")
        assert held["error"]["data"]["policies"] == ["delete-with-own-approval"], held
        return str(held["error"]["data"]["approval_id"])

    approval_id = await eventually(held_under_self)
    assert setup.deputy.cli("approvals", "approve", approval_id, "--as", "alice").returncode == 0
    setup.policy.write_text(REQUIRED)
    await reloaded(setup, token, "delete-with-another-users-approval")
    held = await call(setup, token, "self-approved")
    assert held["error"]["data"]["outcome"] == "approval_required", held
    assert held["error"]["data"]["approval_id"] != approval_id, "a new approval is asked for"
    assert ran(setup, "self-approved") == 0
