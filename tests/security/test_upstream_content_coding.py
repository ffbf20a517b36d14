"""An upstream answer in a content coding Deputy did not ask for never passes the list filter unread.

From an outside review (2026-12-06): Deputy asks upstreams for ``Accept-Encoding: identity``, but an upstream that
answered gzip anyway had its answer relayed as it came — bytes no list scan could read, which the client inflates
into a list no policy filtered. For a server whose answers are filtered, such an answer is now a 502. Against a real
``deputy serve`` and an upstream that gzips every answer.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tests.support.demo_policies import guarded_server
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice

POLICY = '@id("list-nothing")\nforbid (principal, action == Deputy::Action::"tools/list", resource);\n'


async def gzipping_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every POST with a gzip-coded JSON result holding a tool list, whatever it was asked."""
    if scope["type"] != "http":
        return
    message = json.loads(await Request(scope, receive).body() or b"null")
    result: dict[str, Any] = {"tools": [{"name": "delete_everything", "inputSchema": {"type": "object"}}]}
    if isinstance(message, dict) and message.get("method") == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "gzip", "version": "0"}}
    body = json.dumps({"jsonrpc": "2.0", "id": message.get("id") if isinstance(message, dict) else None,
                       "result": result}).encode()
    await Response(gzip.compress(body), headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})(
        scope, receive, send)


@pytest.fixture(scope="module")
def deputy(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    with guarded_server(tmp_path_factory.mktemp("content-coding"), upstream_url, "coded", POLICY,
                        app=gzipping_upstream, server_extra='credentials = "exchange"\n') as guarded:
        yield guarded.deputy


@pytest.mark.parametrize("method", ["tools/list", "ping"])
async def test_a_coded_answer_to_a_filtered_request_is_refused_not_relayed(deputy: RunningDeputy,
                                                                           method: str) -> None:
    token, _ = await tokens_for_alice(deputy, deputy.resource("coded"))
    response = await mcp_post(deputy, token, server="coded", headers={"Accept": "application/json"},
                              body={"jsonrpc": "2.0", "id": 3, "method": method, "params": {}})
    assert response.headers.get("content-encoding") is None
    assert b"delete_everything" not in response.content
    assert response.status_code == 502 and "content coding" in response.json()["error"]["message"], response.text
