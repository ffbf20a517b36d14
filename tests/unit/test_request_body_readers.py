"""Properties of the request-body readers (issue 11, "beyond these findings": the form/JSON readers).

- the OAuth form reader (RFC 6749 §3.2, Appendix B) answers any bytes under any content type with a
  form or one of the closed OAuth errors, and gives back exactly what a client encoded;
- the registration JSON reader (RFC 7591 §3.1, RFC 8259) likewise, with ``invalid_client_metadata``;
- the body cap (:class:`deputy.request_limits.CappedBody`) passes a body within its cap unchanged,
  refuses one past it at the first chunk that passes it (never asking for the next), and cuts a body
  that does not finish before its deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message

from deputy.oauth.errors import InvalidClientMetadata, InvalidRequest, InvalidTarget
from deputy.oauth.forms import FORM_TYPE, MAX_FIELD, MAX_FIELDS, parse_form
from deputy.oauth.registration import parse_registration_json
from deputy.request_limits import CappedBody, RequestLimits, RequestRefused

FORM_TYPES = [FORM_TYPE, "application/x-www-form-urlencoded; charset=UTF-8", "Application/X-WWW-Form-Urlencoded"]
JSON_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"]
OTHER_TYPES = ["", "multipart/form-data; boundary=x", "text/plain", "application/jsonx", "application/x-www-form"]
content_types = st.one_of(st.sampled_from(FORM_TYPES + JSON_TYPES + OTHER_TYPES), st.text(max_size=40))
# Bytes that look like a form (separators, escapes, UTF-8 and broken UTF-8) as well as any bytes at all.
form_like = st.lists(st.sampled_from([b"a", b"=", b"&", b"%", b"%2", b"%26", b"%C3%A9", b"%FF", b"+", b";",
                                      b"resource", b"audience", "é".encode(), b"\xff", b"\x00"]),
                     max_size=80).map(b"".join)
bodies = st.one_of(st.binary(max_size=600), form_like)
characters = st.characters(codec="utf-8")  # what urlencode and json.dumps can carry: no lone surrogates
text = st.text(characters, max_size=40)
unhurried = settings(deadline=None)  # on a loaded CI machine an example may take long; that is not a finding


@unhurried
@given(content_types, bodies)
def test_form_reader_answers_any_bytes_with_a_form_or_a_closed_error(content_type: str, body: bytes) -> None:
    try:
        form = parse_form(content_type, body)
    except (InvalidRequest, InvalidTarget) as refused:
        assert refused.status == 400
        return
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in form.items())
    assert len(form) <= MAX_FIELDS


@unhurried
@given(st.sampled_from(FORM_TYPES), st.dictionaries(text, st.text(characters, max_size=200), max_size=MAX_FIELDS))
def test_form_reader_gives_back_what_was_encoded(content_type: str, form: dict[str, str]) -> None:
    assert parse_form(content_type, urlencode(form).encode()) == form


@unhurried
@given(st.sampled_from(FORM_TYPES), text, st.lists(text, min_size=2, max_size=4))
def test_a_repeated_parameter_is_refused(content_type: str, name: str, values: list[str]) -> None:
    """RFC 6749 §3.2; a repeated resource or audience asks for several targets (RFC 8707 §2)."""
    body = urlencode([(name, value) for value in values]).encode()
    with pytest.raises(InvalidTarget if name in ("resource", "audience") else InvalidRequest):
        parse_form(content_type, body)


def test_a_form_past_its_field_count_or_field_size_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_form(FORM_TYPE, urlencode({f"f{index}": "x" for index in range(MAX_FIELDS + 1)}).encode())
    with pytest.raises(InvalidRequest):
        parse_form(FORM_TYPE, urlencode({"token": "x" * (MAX_FIELD + 1)}).encode())
    assert parse_form(FORM_TYPE, urlencode({"token": "x" * MAX_FIELD}).encode()) == {"token": "x" * MAX_FIELD}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20)
json_like = st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"a"', b":", b",", b"1", b"1e999", b"-",
                                      b"NaN", b"Infinity", b"null", b'"\\ud800"', b"\xff", b" "]),
                     max_size=60).map(b"".join)


@unhurried
@given(content_types, st.one_of(st.binary(max_size=600), json_like))
def test_json_reader_answers_any_bytes_with_an_object_or_a_closed_error(content_type: str, body: bytes) -> None:
    try:
        raw = parse_registration_json(content_type, body)
    except InvalidClientMetadata as refused:
        assert refused.status == 400
        return
    assert isinstance(raw, dict)


@unhurried
@given(st.sampled_from(JSON_TYPES), st.dictionaries(text, json_values, max_size=8))
def test_json_reader_gives_back_what_was_encoded(content_type: str, document: dict[str, Any]) -> None:
    assert parse_registration_json(content_type, json.dumps(document).encode()) == document


@pytest.mark.parametrize("body", [
    b'{"redirect_uris": ["http://127.0.0.1/a"], "redirect_uris": ["http://127.0.0.1/b"]}',  # RFC 8259 §4
    b'{"jwks": {"keys": [], "keys": [{}]}}',
    b'{"a": NaN}', b'{"a": -Infinity}',  # RFC 8259 §6
    b"[" * 200_000 + b"]" * 200_000,  # deeper than the parser's stack
    b'{"a": ' + b"9" * 5000 + b"}",  # past Python's integer digit limit
    b"\xef\xbb\xbf{}",  # RFC 8259 §8.1: no byte order mark
])
def test_ambiguous_or_unparseable_json_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidClientMetadata):
        parse_registration_json("application/json", body)


async def _read_all(body: CappedBody) -> bytes:
    received = b""
    while not body.complete:
        message = await body()
        received += message.get("body", b"")
    return received


def _chunks_receive(chunks: list[bytes]) -> tuple[list[int], Any]:
    asked = [0]

    async def receive() -> Message:
        index = asked[0]
        asked[0] += 1
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}
    return asked, receive


@settings(unhurried, max_examples=200)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=20), st.integers(min_value=0, max_value=800))
def test_body_cap_passes_what_fits_and_stops_at_the_first_chunk_past_it(chunks: list[bytes], cap: int) -> None:
    asked, receive = _chunks_receive(chunks)
    body = CappedBody(receive, cap, deadline=float("inf"))
    total = sum(map(len, chunks))
    if total <= cap:
        assert asyncio.run(_read_all(body)) == b"".join(chunks)
        return
    with pytest.raises(RequestRefused) as refused:
        asyncio.run(_read_all(body))
    assert refused.value.status == 413
    running = [sum(map(len, chunks[:index + 1])) for index in range(len(chunks))]
    assert asked[0] == next(index for index, size in enumerate(running) if size > cap) + 1


def test_a_body_past_its_deadline_is_cut_but_waiting_after_it_is_not() -> None:
    async def never() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cut() -> int:
        body = CappedBody(never, 100, deadline=asyncio.get_running_loop().time())
        with pytest.raises(RequestRefused) as refused:
            await body()
        return refused.value.status

    assert asyncio.run(cut()) == 408

    async def after_the_body() -> str:
        messages: Iterator[Message] = iter([{"type": "http.request", "body": b"done", "more_body": False},
                                            {"type": "http.disconnect"}])

        async def receive() -> Message:
            await asyncio.sleep(0)  # a real server suspends here, so a passed deadline would fire
            return next(messages)

        now = asyncio.get_running_loop().time()
        body = CappedBody(receive, 100, deadline=now + 60)
        await body()
        body.deadline = now - 60  # passed: waiting for the disconnect after the body is not a body read
        return str((await body())["type"])

    assert asyncio.run(after_the_body()) == "http.disconnect"


def test_a_declared_length_past_the_cap_is_refused_without_reading() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(_scope: Any, _receive: Any, _send: Any) -> None:
        raise AssertionError("the application was called")

    scope = {"type": "http", "method": "POST", "path": "/token", "query_string": b"",
             "headers": [(b"content-length", b"629145600")]}
    asyncio.run(RequestLimits(app, body_timeout=30)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
