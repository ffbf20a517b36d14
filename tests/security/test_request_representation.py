"""A POST is decided on as UTF-8 JSON, so nothing else reaches the upstream (parser differentials, "Records and
decisions": what is decided is what is run).

The attack (an outside review): ``Content-Type: application/json; charset=utf-7`` on a body that Deputy, reading
UTF-8, takes for a ``ping`` (no decision, no record), which Express's ``json()`` — what the TypeScript SDK's server
app installs — decodes as UTF-7 into a ``tools/call``. A content coding (gzip, which the same parser inflates) is the
same kind of hole. Against a real ``deputy serve`` and an upstream that records every request as it arrived: each
such request is answered 415 and never forwarded; a request in the one representation Deputy decides on is
forwarded with Deputy's own ``Content-Type: application/json``; a GET or DELETE with a body (which would go upstream
undecided) is answered 400.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.agents import agent_token, agents_config
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.recording_upstream import RequestRecorder, recording_upstream

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
# The reviewer's body: UTF-8 reads a ping whose _meta holds a string; UTF-7 reads the string's "+...-" run as
# `"}},"method":"tools/call","params":{"name":"delete_all","arguments":{}},"x":{"y":{"z":"`.
UTF7_SMUGGLED = (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"a":"+ACIAfQB9ACwAIgBtAGUAdABoAG8AZAAiADo'
                 b'AIgB0AG8AbwBsAHMALwBjAGEAbABsACIALAAiAHAAYQByAGEAbQBzACIAOgB7ACIAbgBhAG0AZQAiADoAIgBkAGUAbABlAHQA'
                 b'ZQBfAGEAbABsACIALAAiAGEAcgBnAHUAbQBlAG4AdABzACIAOgB7AH0AfQAsACIAeAAiADoAewAiAHkAIgA6AHsAIgB6ACIAO'
                 b'gAi-"}}}')


@dataclass
class Setup:
    deputy: RunningDeputy
    recorder: RequestRecorder
    token: str


@pytest.fixture(scope="module")
def setup_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDeputy, RequestRecorder]]:
    directory = tmp_path_factory.mktemp("representation")
    with (recording_upstream() as (url, recorder), database_url("sqlite", directory) as db_url,
          running_deputy(directory, db_url, url, agents_config(directory)) as deputy):
        yield deputy, recorder


@pytest.fixture(scope="module")
async def setup(setup_process: tuple[RunningDeputy, RequestRecorder]) -> Setup:
    deputy, recorder = setup_process
    return Setup(deputy, recorder, await agent_token(deputy))


async def _send(setup: Setup, method: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    sent = {"Authorization": f"Bearer {setup.token}", "Accept": "application/json, text/event-stream", **headers}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, setup.deputy.resource("demo"), content=body, headers=sent)


def _marked(n: int) -> bytes:
    """A ping the recorder can tell apart from every other request of the module."""
    return json.dumps({**PING, "id": f"representation-{n}"}).encode()


def _reached(recorder: RequestRecorder, body: bytes) -> bool:
    return any(request.body == body for request in recorder.seen)


@pytest.mark.parametrize(("content_type", "n"), [
    ("application/json; charset=utf-7", 1),
    ("application/json; charset=UTF-16", 2),
    ('application/json;charset="latin1"', 3),
    ("text/plain", 4),
    ("application/x-www-form-urlencoded", 5),
    (None, 6),
])
async def test_a_body_in_any_other_media_type_or_charset_is_refused_unsent(
        setup: Setup, content_type: str | None, n: int) -> None:
    body = _marked(n)
    response = await _send(setup, "POST", body, {} if content_type is None else {"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == -32600
    assert not _reached(setup.recorder, body)


async def test_the_reviewers_utf7_smuggled_call_is_refused_unsent(setup: Setup) -> None:
    response = await _send(setup, "POST", UTF7_SMUGGLED, {"Content-Type": "application/json; charset=utf-7"})
    assert response.status_code == 415, response.text
    assert not _reached(setup.recorder, UTF7_SMUGGLED)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "identity, gzip"])
async def test_a_content_coding_is_refused_unsent(setup: Setup, coding: str) -> None:
    body = gzip.compress(_marked(10)) if coding == "gzip" else _marked(11)
    response = await _send(setup, "POST", body, {"Content-Type": "application/json", "Content-Encoding": coding})
    assert response.status_code == 415, response.text
    assert response.headers["accept-encoding"] == "identity"  # RFC 9110 §15.5.16: the coding it would accept
    assert not _reached(setup.recorder, body)


async def test_two_content_types_are_refused_unsent(setup: Setup) -> None:
    body = _marked(12)
    sent = {"Authorization": f"Bearer {setup.token}", "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        request = http.build_request("POST", setup.deputy.resource("demo"), content=body, headers=sent)
        request.headers.update({"Content-Type": "application/json"})
        raw = [*request.headers.raw, (b"Content-Type", b"text/plain; charset=utf-7")]
        response = await http.send(httpx.Request("POST", request.url, content=body, headers=raw))
    assert response.status_code == 415, response.text
    assert not _reached(setup.recorder, body)


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=\"UTF-8\"",
                                          "application/json; charset=utf-8; profile=x"])
async def test_utf8_json_is_forwarded_as_application_json_of_deputys_own(setup: Setup, content_type: str) -> None:
    body = _marked(20 + len(content_type))
    response = await _send(setup, "POST", body, {"Content-Type": content_type, "Content-Encoding": "identity"})
    assert response.status_code == 200, response.text
    (forwarded,) = [request for request in setup.recorder.seen if request.body == body]
    assert forwarded.headers["content-type"] == "application/json"
    assert "content-encoding" not in forwarded.headers


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_get_or_delete_with_a_body_is_refused_unsent(setup: Setup, method: str) -> None:
    body = _marked(40 if method == "GET" else 41)
    response = await _send(setup, method, body, {"Content-Type": "application/json", "Mcp-Session-Id": "none"})
    assert response.status_code in (400, 404), response.text  # 404 first when the session is not hers
    assert not _reached(setup.recorder, body)
    without_session = await _send(setup, method, body, {"Content-Type": "application/json"})
    assert without_session.status_code == 400, without_session.text
    assert "carries no body" in without_session.json()["error"]["message"]
    assert not _reached(setup.recorder, body)


async def test_a_ping_in_the_right_representation_still_passes(setup: Setup) -> None:
    body = _marked(50)
    response = await _send(setup, "POST", body, {"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["result"] == {}
    assert _reached(setup.recorder, body)
