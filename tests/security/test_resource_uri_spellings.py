"""A resource URI is decided in the spelling the upstream reads (deputy.gateway.resource_uris), end to end.

From an outside review (2026-12-06): with ``forbid ... when { context.uri == "demo://users/1" }``, reading
``demo://users/%31`` returned user 1's record — the demo's template ``demo://users/{id}`` (the official SDK's)
percent-decodes what ``{id}`` matched. Against a real ``deputy serve`` and an upstream that records what reached it:
every other spelling of a URI is refused (-32602) before it is decided or forwarded, and the policy decides the
one spelling left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.demo_policies import GuardedDeputy, guarded_server
from tests.support.oauth_flow import mcp_post, tokens_for_alice

POLICY = '''
@id("read-resources")
permit (principal, action == Deputy::Action::"resources/read", resource);

@id("user-1-is-private")
forbid (principal, action == Deputy::Action::"resources/read", resource) when { context.uri == "demo://users/1" };
'''


Setup = GuardedDeputy


@pytest.fixture(scope="module")
def setup(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with guarded_server(tmp_path_factory.mktemp("resource-uris"), upstream_url, "uris", POLICY) as guarded:
        yield guarded


def reads_reaching(setup: Setup, uri: str) -> int:
    count = 0
    for request in setup.recorder.seen:
        message = json.loads(request.body or b"null")
        if isinstance(message, dict) and message.get("method") == "resources/read" and \
                message.get("params", {}).get("uri") == uri:
            count += 1
    return count


async def read(setup: Setup, uri: str) -> tuple[int, dict[str, Any]]:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("uris"))
    response = await mcp_post(setup.deputy, token, server="uris", headers={"Accept": "application/json"},
                              body={"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
    return response.status_code, response.json()


@pytest.mark.parametrize("uri", ["demo://users/%31", "Demo://users/1", "demo://USERS/1", "demo://users/x/../1"])
async def test_another_spelling_of_a_forbidden_uri_never_reaches_the_upstream(setup: Setup, uri: str) -> None:
    status, answer = await read(setup, uri)
    assert status == 400 and answer["error"]["code"] == -32602, answer
    assert reads_reaching(setup, uri) == 0


async def test_the_one_spelling_left_is_decided_by_the_policy(setup: Setup) -> None:
    _, denied = await read(setup, "demo://users/1")
    assert denied["error"]["code"] == -32003, denied
    status, allowed = await read(setup, "demo://users/2")
    assert status == 200 and "Alan Turing" in json.dumps(allowed), allowed
    assert reads_reaching(setup, "demo://users/1") == 0 and reads_reaching(setup, "demo://users/2") == 1
