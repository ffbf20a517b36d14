"""Bodies that are not one well-formed JSON-RPC message are refused at the gateway, and nothing is forwarded.

MCP Streamable HTTP: a POST carries one JSON-RPC message (batches were removed in
2025-06-18). A policy may only decide on what the upstream will see, so Deputy parses
each body strictly (deputy.gateway.jsonrpc) before forwarding: malformed JSON, invalid
UTF-8 and duplicate keys → 400 with -32700; a batch or a message that is not JSON-RPC 2.0
→ 400 with -32600; a tools/call without a tool name → 400 with -32602; a body over 4 MiB →
413. The upstream here records every request it receives, so each test also shows that
the refused body never reached it — and the control shows that an accepted body reaches
it byte for byte (never re-serialised).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


@dataclass(frozen=True)
class Setup:
    deputy: RunningDeputy
    recorder: RequestRecorder


@pytest.fixture(scope="module")
def setup(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-jsonrpc-{backend}")
    with recording_upstream() as (upstream_url, recorder), database_url(backend, directory) as db_url, \
            running_deputy(directory, db_url, upstream_url) as deputy:
        yield Setup(deputy, recorder)


@pytest.fixture(scope="module")
async def token(setup: Setup) -> str:
    access, _refresh = await tokens_for_alice(setup.deputy)
    return access


async def _post(setup: Setup, token: str, body: bytes, method: str = "POST") -> httpx.Response:
    """Send `body` exactly as given, after forgetting what the upstream saw so far."""
    setup.recorder.seen.clear()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.request(method, setup.deputy.resource("demo"), content=body, headers=headers)


def _tool_call(arguments: str, request_id: str = "7") -> bytes:
    return (f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "tools/call", '
            f'"params": {{"name": "echo", "arguments": {arguments}}}}}').encode()


def _refused(setup: Setup, response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """The response is `status` with a JSON-RPC error `code`, and the upstream received nothing."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["code"] == code, body
    assert setup.recorder.seen == [], "a refused body must not reach the upstream"
    return body


async def test_a_valid_call_reaches_the_upstream_byte_for_byte(setup: Setup, token: str) -> None:
    """Control: the upstream gets the client's bytes unchanged (spacing, key order, escapes kept)."""
    body = b'{ "params" : {"arguments": {"text": "caf\\u00e9 \xc3\xa9"}, "name": "echo"},\n "id": 7,' \
           b' "method": "tools/call", "jsonrpc": "2.0" }'
    response = await _post(setup, token, body)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == "café é"
    (seen,) = setup.recorder.seen
    assert seen.method == "POST"
    assert seen.body == body


async def test_malformed_json_is_a_parse_error(setup: Setup, token: str) -> None:
    _refused(setup, await _post(setup, token, _tool_call('{"text": "unterminated}')), 400, PARSE_ERROR)


async def test_an_empty_body_is_a_parse_error(setup: Setup, token: str) -> None:
    _refused(setup, await _post(setup, token, b""), 400, PARSE_ERROR)


async def test_duplicate_keys_in_tool_arguments_are_refused(setup: Setup, token: str) -> None:
    """One parser keeps the first "text", another the last: neither the policy nor the upstream may choose."""
    body = _tool_call('{"text": "harmless", "text": "rm -rf /"}')
    refused = _refused(setup, await _post(setup, token, body), 400, PARSE_ERROR)
    assert "duplicate" in refused["error"]["message"]


async def test_duplicate_keys_nested_deep_in_arguments_are_refused(setup: Setup, token: str) -> None:
    body = _tool_call('{"text": "x", "options": {"a": [1, {"b": {"c": 1, "c": 2}}]}}')
    _refused(setup, await _post(setup, token, body), 400, PARSE_ERROR)


async def test_duplicate_top_level_keys_are_refused(setup: Setup, token: str) -> None:
    body = (b'{"jsonrpc": "2.0", "id": 7, "method": "tools/list", "method": "tools/call",'
            b' "params": {"name": "echo", "arguments": {"text": "x"}}}')
    _refused(setup, await _post(setup, token, body), 400, PARSE_ERROR)


async def test_a_batch_is_refused(setup: Setup, token: str) -> None:
    body = b"[" + _tool_call('{"text": "one"}', "1") + b", " + _tool_call('{"text": "two"}', "2") + b"]"
    refused = _refused(setup, await _post(setup, token, body), 400, INVALID_REQUEST)
    assert "batch" in refused["error"]["message"]
    assert refused["id"] is None


async def test_a_message_that_is_not_jsonrpc_2_0_is_refused(setup: Setup, token: str) -> None:
    body = _tool_call('{"text": "x"}', '"call-1"').replace(b'"2.0"', b'"1.0"')
    refused = _refused(setup, await _post(setup, token, body), 400, INVALID_REQUEST)
    assert refused["id"] == "call-1", "the id is echoed when it could be read"


async def test_a_null_request_id_is_refused(setup: Setup, token: str) -> None:
    _refused(setup, await _post(setup, token, _tool_call('{"text": "x"}', "null")), 400, INVALID_REQUEST)


async def test_invalid_utf8_is_a_parse_error(setup: Setup, token: str) -> None:
    _refused(setup, await _post(setup, token, _tool_call('{"text": "X"}').replace(b"X", b"\xff\xfe")), 400,
             PARSE_ERROR)


async def test_a_byte_order_mark_is_a_parse_error(setup: Setup, token: str) -> None:
    _refused(setup, await _post(setup, token, b"\xef\xbb\xbf" + _tool_call('{"text": "x"}')), 400, PARSE_ERROR)


async def test_nan_is_a_parse_error(setup: Setup, token: str) -> None:
    _refused(setup, await _post(setup, token, _tool_call('{"text": "x", "n": NaN}')), 400, PARSE_ERROR)


async def test_a_tool_call_without_a_name_is_invalid_params(setup: Setup, token: str) -> None:
    body = b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"arguments": {"text": "x"}}}'
    refused = _refused(setup, await _post(setup, token, body), 400, INVALID_PARAMS)
    assert refused["id"] == 9


async def test_tool_arguments_that_are_not_an_object_are_invalid_params(setup: Setup, token: str) -> None:
    refused = _refused(setup, await _post(setup, token, _tool_call('["x"]', "10")), 400, INVALID_PARAMS)
    assert refused["id"] == 10


async def test_an_oversized_body_is_refused_413(setup: Setup, token: str) -> None:
    body = _tool_call(json.dumps({"text": "x" * (4 * 1024 * 1024)}))
    _refused(setup, await _post(setup, token, body), 413, INVALID_REQUEST)


async def test_delete_is_not_parsed_and_still_reaches_the_upstream(setup: Setup, token: str) -> None:
    """Only POST bodies are parsed: DELETE (no body) goes through to the upstream as before."""
    await _post(setup, token, b"", method="DELETE")
    assert [seen.method for seen in setup.recorder.seen] == ["DELETE"]
