"""Rewriting the response to one request in a JSON body or an SSE stream, and failing closed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deputy.gateway.response_rewrite import FAILED, MAX_REWRITTEN, rewrite_json_body, rewrite_sse


async def drop_secret(result: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(result.get("tools"), list):
        raise ValueError("no tool list")
    return {**result, "tools": [tool for tool in result["tools"] if tool["name"] != "secret"]}


LISTED = {"tools": [{"name": "echo"}, {"name": "secret"}], "nextCursor": "page-2"}
RESPONSE = {"jsonrpc": "2.0", "id": 5, "result": LISTED}
PROGRESS = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\n\n'
LOGGED = (b': a comment\nevent: message\nid: 7\ndata: {"jsonrpc":"2.0","method":"notifications/message",\n'
          b'data: "params":{}}\n\n')


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def rewritten(chunks: list[bytes], request_id: int = 5) -> bytes:
    return b"".join([out async for out in rewrite_sse(stream(chunks), request_id, drop_secret)])


def sse_data(raw: bytes) -> list[Any]:
    """The JSON of each event, as a client reads it (any line ending, data lines joined by LF)."""
    events = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n")
    messages = []
    for event in events:
        data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            messages.append(json.loads(b"\n".join(data)))
    return messages


def split_everywhere(raw: bytes) -> list[bytes]:
    """The stream cut into pieces of 1 to 7 bytes: every event and line end is split somewhere."""
    pieces, at, size = [], 0, 1
    while at < len(raw):
        pieces.append(raw[at:at + size])
        at += size
        size = size % 7 + 1
    return pieces


async def test_the_response_event_split_across_chunks_is_rewritten_the_others_are_untouched() -> None:
    response = b"event: message\ndata: " + json.dumps(RESPONSE).encode() + b"\n\n"
    raw = PROGRESS + response + LOGGED
    out = await rewritten(split_everywhere(raw))
    assert out.startswith(PROGRESS)
    assert out.endswith(LOGGED)
    assert sse_data(out)[1] == {"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "echo"}],
                                                                       "nextCursor": "page-2"}}
    assert b"secret" not in out


async def test_crlf_line_endings_and_a_multi_line_data_field() -> None:
    text = json.dumps(RESPONSE, indent=1).replace("\n", "\r\ndata: ")
    raw = (PROGRESS.replace(b"\n", b"\r\n") + b"event: message\r\nid: 42\r\ndata: " + text.encode() + b"\r\n\r\n"
           + LOGGED.replace(b"\n", b"\r\n"))
    out = await rewritten(split_everywhere(raw))
    assert out.startswith(PROGRESS.replace(b"\n", b"\r\n"))
    assert out.endswith(LOGGED.replace(b"\n", b"\r\n"))
    assert b"event: message\r\nid: 42\r\ndata: {" in out, "the event's other fields and its line ends are kept"
    assert sse_data(out)[1]["result"] == {"tools": [{"name": "echo"}], "nextCursor": "page-2"}
    assert b"secret" not in out


async def test_an_unparseable_response_event_becomes_an_error_for_that_id() -> None:
    raw = PROGRESS + b'event: message\ndata: {"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"secret"}\n\n'
    out = await rewritten([raw[:30], raw[30:]])
    assert out.startswith(PROGRESS)
    error = sse_data(out)[1]
    assert error == {"jsonrpc": "2.0", "id": 5, "error": {"code": -32603, "message": FAILED}}
    assert b"secret" not in out


async def test_a_result_the_hook_cannot_rewrite_becomes_an_error() -> None:
    raw = b'data: {"jsonrpc":"2.0","id":"a","result":{"tools":"everything"}}\n\n'
    out = await rewritten([raw])
    assert sse_data(out) == [{"jsonrpc": "2.0", "id": "a", "error": {"code": -32603, "message": FAILED}}]


async def test_a_response_under_another_id_is_filtered_all_the_same() -> None:
    raw = b"data: " + json.dumps({**RESPONSE, "id": 6}).encode() + b"\n\n"
    out = await rewritten([raw])
    assert sse_data(out) == [{"jsonrpc": "2.0", "id": 6, "result": {"tools": [{"name": "echo"}],
                                                                    "nextCursor": "page-2"}}]


async def test_an_error_response_and_an_unended_last_event() -> None:
    error = b'data: {"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"no"}}\n\n'
    assert await rewritten([error]) == error
    unended = b"data: " + json.dumps(RESPONSE).encode()
    out = await rewritten([unended[:20], unended[20:]])
    assert b"secret" not in out
    assert sse_data(out)[0]["result"]["tools"] == [{"name": "echo"}]


async def test_an_oversized_event_ends_the_stream_with_an_error() -> None:
    chunks = [PROGRESS, b'data: {"jsonrpc":"2.0","id":5,"result":{"tools":[' + b" " * MAX_REWRITTEN, b"]}}\n\n",
              LOGGED]
    out = await rewritten(chunks)
    assert out.startswith(PROGRESS)
    assert sse_data(out)[1:] == [{"jsonrpc": "2.0", "id": 5, "error": {"code": -32603, "message": FAILED}}]


async def test_json_body() -> None:
    body = json.dumps(RESPONSE).encode()
    assert json.loads(await rewrite_json_body(body, 5, drop_secret))["result"]["tools"] == [{"name": "echo"}]
    error = b'{"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"no"}}'
    assert await rewrite_json_body(error, 5, drop_secret) is error
    failed = json.loads(await rewrite_json_body(body[:-3], 5, drop_secret))
    assert failed == {"jsonrpc": "2.0", "id": 5, "error": {"code": -32603, "message": FAILED}}


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
async def test_events_without_a_response_pass_byte_for_byte(ending: bytes) -> None:
    raw = (PROGRESS + b"retry: 10\n\n" + LOGGED + b"\n").replace(b"\n", ending)
    assert await rewritten(split_everywhere(raw)) == raw


async def filter_lists(result: dict[str, Any]) -> dict[str, Any]:
    """A list filter as the policy stage makes it: each list by its items key."""
    if "tools" in result:
        result = await drop_secret(result)
    if "prompts" in result:
        result = {**result, "prompts": []}
    return result


async def answered(chunks: list[bytes], request_id: int | None = None) -> bytes:
    """The stream as relayed when it answers something other than a list request (a GET, a replay, a call)."""
    return b"".join([out async for out in rewrite_sse(stream(chunks), request_id, filter_lists, answers_list=False)])


PRIMING = b"id: stream-1/0\nretry: 1000\ndata: \n\n"


@pytest.mark.parametrize("priming", [PRIMING, b"id: 9\ndata:\n\n", b"id: 9\ndata\n\n", b"id: 9\n\n"])
async def test_a_priming_event_passes_as_it_is_before_the_filtered_list(priming: bytes) -> None:
    """Issue 11 finding 6: an event with empty data is never dispatched by a client; it is not an error."""
    response = b"event: message\nid: 10\ndata: " + json.dumps(RESPONSE).encode() + b"\n\n"
    out = await rewritten(split_everywhere(priming + response))
    assert out.startswith(priming)
    assert sse_data(out[len(priming):]) == [{"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "echo"}],
                                                                                   "nextCursor": "page-2"}}]


async def test_any_stream_filters_a_list_whatever_request_it_answers() -> None:
    """Issue 11 finding 6: on a GET stream or a resumed one (no request, or another) a list answer is filtered by
    its items key; a tool's answer and the server's own messages pass byte for byte."""
    listed = b"id: 3\ndata: " + json.dumps({**RESPONSE, "id": 77}).encode() + b"\n\n"
    prompts = b'data: {"jsonrpc":"2.0","id":78,"result":{"prompts":[{"name":"greet"}]}}\n\n'
    tool = b'data: {"jsonrpc":"2.0","id":79,"result":{"content":[{"type":"text","text":"\\"tools\\" secret"}]}}\n\n'
    server_request = b'data: {"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{"tools":[1]}}\n\n'
    for request_id in (None, 79):
        out = await answered(split_everywhere(PRIMING + listed + prompts + tool + server_request + LOGGED),
                             request_id)
        assert out.startswith(PRIMING)
        assert out.endswith(tool + server_request + LOGGED)
        assert sse_data(out[len(PRIMING):])[:2] == [{"jsonrpc": "2.0", "id": 77, "result": {"tools": [{"name": "echo"}],
                                                                             "nextCursor": "page-2"}},
                                     {"jsonrpc": "2.0", "id": 78, "result": {"prompts": []}}]


async def test_a_json_answer_to_another_request_is_filtered_when_it_holds_a_list() -> None:
    listed = json.dumps({**RESPONSE, "id": 9}).encode()
    out = json.loads(await rewrite_json_body(listed, 9, filter_lists, answers_list=False))
    assert out["result"]["tools"] == [{"name": "echo"}]
    tool = b'{"jsonrpc":"2.0","id":9,"result":{"content":[]}}'
    assert await rewrite_json_body(tool, 9, filter_lists, answers_list=False) is tool
    not_json = b"<html>upstream error</html>"
    assert await rewrite_json_body(not_json, 9, filter_lists, answers_list=False) is not_json
    broken = listed[:-2]
    assert json.loads(await rewrite_json_body(broken, 9, filter_lists, answers_list=False))["error"]["message"] \
        == FAILED


async def test_an_oversized_answer_to_another_request_passes_until_a_list_key_shows() -> None:
    big = b'data: {"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"' + b"x" * MAX_REWRITTEN
    tail = b'"}]}}\n\n'
    out = await answered([big[:1000], big[1000:], tail, PROGRESS], 5)
    assert out == big + tail + PROGRESS, "a large tool answer is relayed whole"
    smuggled = await answered([big, b'"}],"to', b'ols":[{"name":"secret"}]}}\n\n', PROGRESS], 5)
    assert smuggled == big + b'"}],"to', "cut inside the event, which a client then never dispatches"
    assert b"secret" not in smuggled


async def test_a_byte_order_mark_before_the_first_event_is_kept_and_not_read_as_a_field() -> None:
    """WHATWG HTML §9.2.5: a leading U+FEFF is dropped by the client, so the first line is still `data:`."""
    response = b"data: " + json.dumps(RESPONSE).encode() + b"\n\n"
    out = await rewritten([b"\xef", b"\xbb", b"\xbf" + response[:9], response[9:]])
    assert out.startswith(b"\xef\xbb\xbf")
    assert sse_data(out[3:])[0]["result"]["tools"] == [{"name": "echo"}]


@pytest.mark.parametrize("blank", [b"\n", b"\r\n", b"\r"])
async def test_a_line_ended_by_cr_before_dropped_data_lines_still_ends_apart_from_the_blank_line(blank: bytes) -> None:
    """WHATWG HTML §9.2.5: CR then LF is one line end. The data lines after `event: message\\r` are dropped
    when the event is rewritten, so its CR would meet the blank line's LF: the event would never end and
    the next message would be read into it."""
    text = json.dumps(RESPONSE, indent=1).split("\n", 1)
    raw = (b"data: " + text[0].encode() + b"\nevent: message\rdata: " + text[1].replace("\n", "\ndata: ").encode()
           + b"\n" + blank + PROGRESS)
    out = await rewritten(split_everywhere(raw))
    filtered = {"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "echo"}], "nextCursor": "page-2"}}
    cr_end = b"\r\n" if blank.startswith(b"\n") else b"\r"
    assert out == (b"data: " + json.dumps(filtered, separators=(",", ":")).encode() + b"\nevent: message"
                   + cr_end + blank + PROGRESS)


async def test_an_unended_last_event_ending_in_cr_gets_a_blank_line_of_its_own() -> None:
    """At the end of the stream the blank line is supplied (an LF): the CR before it must not swallow it."""
    out = await rewritten([b"data: " + json.dumps(RESPONSE).encode() + b"\r"])
    assert out.endswith(b"\r\n\n") and b"secret" not in out


# -- a hostile upstream's other spellings of a list (outside review, 2026-12-06) ------------------------------------


async def test_a_list_key_spelt_with_escapes_is_found_and_filtered_in_any_answer() -> None:
    """``"\\u0074ools"`` is ``"tools"`` to every JSON reader, but no byte scan for ``"tools"`` finds it."""
    body = b'{"jsonrpc":"2.0","id":9,"result":{"\\u0074ools":[{"name":"echo"},{"name":"secret"}]}}'
    out = json.loads(await rewrite_json_body(body, 9, drop_secret, answers_list=False))
    assert out["result"]["tools"] == [{"name": "echo"}]
    events = sse_data(await rewritten(split_everywhere(b"event: message\ndata: " + body + b"\n\n"), 9))
    assert events[0]["result"]["tools"] == [{"name": "echo"}]


async def test_an_ordinary_answer_with_escaped_text_is_not_parsed() -> None:
    async def never(result: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not a list: never rewritten")

    body = b'{"jsonrpc":"2.0","id":9,"result":{"content":[{"type":"text","text":"caf\\u00e9 \\u4e2d"}]}}'
    assert await rewrite_json_body(body, 9, never, answers_list=False) is body


@pytest.mark.parametrize("answers_list", [True, False])
async def test_a_list_under_a_key_no_filter_reads_is_refused(answers_list: bool) -> None:
    """The Python SDK's models read ``resource_templates`` as ``resourceTemplates``: passing it would pass a list
    no policy filtered."""
    async def hide_every_template(result: dict[str, Any]) -> dict[str, Any]:  # as the policy filter reads a result
        return {**result, "resourceTemplates": []} if "resourceTemplates" in result else result

    body = json.dumps({"jsonrpc": "2.0", "id": 4, "result": {"resource_templates": [
        {"uri_template": "demo://users/{id}", "name": "user"}]}}).encode()
    out = json.loads(await rewrite_json_body(body, 4, hide_every_template, answers_list=answers_list))
    assert out["error"]["message"] == FAILED and out["id"] == 4
