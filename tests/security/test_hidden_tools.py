"""Calling a tool the caller's list hides reveals nothing the list keeps back (deputy.gateway.policy_stage).

From an outside review (2026-12-06): ``delete_user`` was kept off the list, yet calling it with ``{}`` answered
"required argument is missing" for ``/id`` and ``/reason`` (and a forbid naming it showed in ``data.policies``),
while a tool that does not exist got a plain deny: any client could list hidden tools and probe their schemas. Now
a denied call of a hidden tool is answered exactly as one of a tool that is not there; the audit record still
says why. Against a real ``deputy serve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.audit_log import read_log
from tests.support.demo_policies import guarded_server
from tests.support.deputy_process import RunningDeputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice

POLICY = '''
@id("list-all-but-delete")
permit (principal, action == Deputy::Action::"tools/list", resource)
unless { context.name == "delete_user" };

@id("call-echo")
permit (principal, action == Deputy::Action::"echo", resource);

@id("never-delete-user-one")
forbid (principal, action == Deputy::Action::"delete_user", resource) when { context.input.id == 1 };
'''


@pytest.fixture(scope="module")
def deputy(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    with guarded_server(tmp_path_factory.mktemp("hidden-tools"), upstream_url, "hidden", POLICY) as guarded:
        yield guarded.deputy


async def call(deputy: RunningDeputy, tool: str, arguments: Any) -> dict[str, Any]:
    token, _ = await tokens_for_alice(deputy, deputy.resource("hidden"))
    response = await mcp_post(deputy, token, server="hidden", headers={"Accept": "application/json"},
                              body={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                    "params": {"name": tool, "arguments": arguments}})
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize("arguments", [{}, {"id": "one"}, {"id": 1, "reason": "x"}, {"id": 2, "reason": "x"}])
async def test_a_hidden_tool_is_answered_as_a_tool_that_is_not_there(deputy: RunningDeputy, arguments: Any) -> None:
    hidden = await call(deputy, "delete_user", arguments)
    absent = await call(deputy, "no_such_tool", arguments)
    assert hidden["code"] == absent["code"] == -32003
    assert hidden["message"] == absent["message"] == "denied by policy"
    assert {k: v for k, v in hidden["data"].items() if k != "decision_id"} == \
        {k: v for k, v in absent["data"].items() if k != "decision_id"} == {"outcome": "deny", "policies": []}


async def test_the_record_keeps_why_and_a_listed_tool_still_says_which_argument(deputy: RunningDeputy) -> None:
    hidden = await call(deputy, "delete_user", {"id": 1, "reason": "x"})

    async def recorded() -> dict[str, Any]:
        found = (await read_log(deputy.database_url)).decisions(decision_id=hidden["data"]["decision_id"])
        assert len(found) == 1
        return dict(found[0].record)

    assert (await eventually(recorded))["policies"] == ["never-delete-user-one"]
    listed = await call(deputy, "echo", {})
    assert listed["data"]["reason"] == "arguments_invalid" and listed["data"]["problems"], listed
