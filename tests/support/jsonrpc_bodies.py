"""Bodies of JSON-RPC messages for the parser's tests, and the refusal one gets (deputy.gateway.jsonrpc)."""

from __future__ import annotations

import pytest

from deputy.gateway.jsonrpc import JsonRpcRefused, parse_message

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


def refusal(body: bytes) -> JsonRpcRefused:
    with pytest.raises(JsonRpcRefused) as caught:
        parse_message(body)
    return caught.value


def call(arguments: str, request_id: str = "1") -> bytes:
    """A tools/call of "echo" with the given arguments JSON text, as UTF-8."""
    return (f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
            f'"params":{{"name":"echo","arguments":{arguments}}}}}').encode()
