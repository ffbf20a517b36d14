"""Integers a JavaScript upstream reads as another number never reach it (``servers.NAME.big_integers``).

The differential (an outside review): Cedar and the audit log read ``9007199254740993`` exactly; ``JSON.parse`` —
every Node server, the TypeScript SDK's included — reads it as ``9007199254740992``. A ``forbid`` on 2^53 is then
passed by sending 2^53 + 1. By default (``big_integers = "refuse"``) a request holding an integer beyond
±(2^53 - 1), anywhere in it, is answered -32602 (in ``params``) or -32600 (elsewhere: its id) before it is decided,
recorded or forwarded; a server declared ``big_integers = "pass"`` (an exact reader, such as Python) gets it, and the
policy decides on the exact value. Against a real ``deputy serve`` and an upstream that records every request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream

TWO_53 = 2**53
POLICY = """
@id("all-tools")
permit (principal, action, resource);

@id("never-two-to-the-53")
forbid (principal, action == Deputy::Action::"add", resource) when { context.input.a == 9007199254740992 };
"""


@dataclass
class Setup:
    deputy: RunningDeputy
    recorder: RequestRecorder


def servers(url: str, policies: Path) -> str:
    return "".join(f'''
[servers.{name}]
url = "{url}"
scopes = ["{name}:tools"]
policies = "{policies}"
{setting}
''' for name, setting in (("node", ""), ("exact", 'big_integers = "pass"')))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("big-integers")
    (directory / "policies").mkdir()
    (directory / "policies" / "numbers.cedar").write_text(POLICY)
    with (recording_upstream() as (url, recorder), database_url("sqlite", directory) as db_url,
          running_deputy(directory, db_url, url, servers(url, directory / "policies")) as deputy):
        yield Setup(deputy, recorder)


async def post(setup: Setup, server: str, body: bytes) -> httpx.Response:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource(server))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(setup.deputy.resource(server), content=body, headers=headers)


def add(a: str, request_id: str = "1", b: str = "1") -> bytes:
    """A tools/call of add with the numbers written as given (never through Python's json, which would too)."""
    return (f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
            f'"params":{{"name":"add","arguments":{{"a":{a},"b":{b}}}}}}}').encode()


def reached(setup: Setup, text: str) -> bool:
    """Whether any request the upstream received holds ``text`` (each test's own marker)."""
    return any(text.encode() in request.body for request in setup.recorder.seen)


@pytest.mark.parametrize(("a", "b", "pointer"), [
    (str(TWO_53 + 1), "1", "/params/arguments/a"),   # JSON.parse: 2^53, the forbidden value
    (str(-TWO_53 - 1), "1", "/params/arguments/a"),
    ("1", str(TWO_53 + 7), "/params/arguments/b"),
    ("1", str(2**63 - 1), "/params/arguments/b"),
    (str(TWO_53), "1", "/params/arguments/a"),        # exact in a double, but so is 2^53 + 1 read as it
])
async def test_an_integer_a_double_cannot_hold_is_refused_before_anything(setup: Setup, a: str, b: str,
                                                                          pointer: str) -> None:
    marker = f"big-{a}-{b}"
    response = await post(setup, "node", add(a, f'"{marker}"', b))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32602 and response.json()["id"] == marker, error
    assert pointer in error["message"] and "2^53" in error["message"], error["message"]
    assert not reached(setup, marker)


async def test_an_id_a_double_cannot_hold_is_an_invalid_request(setup: Setup) -> None:
    response = await post(setup, "node", add("2", str(TWO_53 + 1), "12345"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32600 and response.json()["id"] is None
    assert not reached(setup, '"b":12345')


async def test_the_largest_safe_integers_pass(setup: Setup) -> None:
    response = await post(setup, "node", add(str(TWO_53 - 1), '"safe"', str(-(TWO_53 - 1))))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"] == {"result": 0}


async def test_an_exact_upstream_gets_the_exact_integer_and_the_policy_decides_on_it(setup: Setup) -> None:
    """`big_integers = "pass"`: Cedar tells 2^53 + 1 from the forbidden 2^53, and so does the (Python) upstream."""
    allowed = await post(setup, "exact", add(str(TWO_53 + 1), '"exact"'))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["result"]["structuredContent"] == {"result": TWO_53 + 2}
    denied = await post(setup, "exact", add(str(TWO_53), '"forbidden"'))
    assert denied.json()["error"]["code"] == -32003, denied.text
    assert denied.json()["error"]["data"]["policies"] == ["never-two-to-the-53"]
    assert not any(json.loads(r.body or b"null") == json.loads(add(str(TWO_53), '"forbidden"'))
                   for r in setup.recorder.seen)
