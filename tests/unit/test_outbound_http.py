"""Deputy's one outbound HTTP home (issue 17, item 2): what every request it makes itself can rely on.

Against a real server on loopback: a redirect comes back as the answer and its target is never asked, a body
past the cap is refused (by its Content-Length before reading, or while reading a stream that never ends), no
cookie set by one answer is sent with the next, no proxy comes from the environment, a host that cannot be
reached is :class:`NoAnswer` (not a client library's own error); then the plain answer.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from deputy.outbound_http import BodyTooLarge, NoAnswer, fetch, open_session, step_timeout
from tests.support.local_http import LoopbackNames, serving

CAP = 64 * 1024
STREAM_CHUNKS = 1000  # 64 MB in all: far more than any socket buffer holds, so a reader that stops is seen


class Seen:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.chunks_sent = 0


def server_app(seen: Seen) -> Starlette:
    async def record(request: Request) -> None:
        seen.paths.append(request.url.path)
        seen.headers.append({k.lower(): v for k, v in request.headers.items()})

    async def moved(request: Request) -> Response:
        await record(request)
        return RedirectResponse("/target", status_code=302)

    async def target(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("target")

    async def large(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("x" * (CAP + 1))

    async def endless(request: Request) -> Response:
        await record(request)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(STREAM_CHUNKS):
                seen.chunks_sent += 1
                yield b"y" * CAP

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def cookie(request: Request) -> Response:
        await record(request)
        response = PlainTextResponse("set")
        response.set_cookie("session", "from-the-first-answer")
        return response

    async def echo(request: Request) -> Response:
        await record(request)
        return JSONResponse({"method": request.method, "body": (await request.body()).decode()})

    return Starlette(routes=[
        Route("/moved", moved), Route("/target", target), Route("/large", large), Route("/endless", endless),
        Route("/cookie", cookie), Route("/echo", echo, methods=["GET", "POST"]),
    ])


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()
    async with serving(server_app(seen)) as port:
        yield f"http://127.0.0.1:{port}", seen


async def test_a_redirect_is_the_answer_and_its_target_is_never_asked(server: tuple[str, Seen]) -> None:
    url, seen = server
    async with open_session(step_timeout(5)) as session:
        answer = await fetch(session, "GET", f"{url}/moved", max_bytes=CAP)
    assert (answer.status, answer.headers["Location"]) == (302, "/target")
    assert seen.paths == ["/moved"]


async def test_a_declared_length_past_the_cap_is_refused_before_reading(server: tuple[str, Seen]) -> None:
    url, _ = server
    async with open_session(step_timeout(5)) as session:
        with pytest.raises(BodyTooLarge) as refused:
            await fetch(session, "GET", f"{url}/large", max_bytes=CAP)
    assert refused.value.declared == CAP + 1


async def test_a_stream_past_the_cap_is_refused_while_reading(server: tuple[str, Seen]) -> None:
    url, seen = server
    async with open_session(step_timeout(5)) as session:
        with pytest.raises(BodyTooLarge) as refused:
            await fetch(session, "GET", f"{url}/endless", max_bytes=CAP)
    assert refused.value.declared is None
    assert seen.chunks_sent < STREAM_CHUNKS, "the whole stream was read before refusing it"


async def test_no_cookie_from_one_answer_goes_out_with_the_next(server: tuple[str, Seen]) -> None:
    url, seen = server
    # A host name, not an IP literal: a default cookie jar would keep a cookie for it.
    named = LoopbackNames({"cookies.test": int(url.rsplit(":", 1)[1])})
    async with open_session(step_timeout(5), resolver=named) as session:
        assert (await fetch(session, "GET", "http://cookies.test/cookie", max_bytes=CAP)).status == 200
        assert (await fetch(session, "GET", "http://cookies.test/echo", max_bytes=CAP)).status == 200
    assert "cookie" not in seen.headers[1]


async def test_no_proxy_is_taken_from_the_environment(server: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    url, seen = server
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: a proxy used would fail the request
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with open_session(step_timeout(5)) as session:
        answer = await fetch(session, "GET", f"{url}/echo", max_bytes=CAP)
    assert answer.status == 200 and seen.paths == ["/echo"]


async def test_an_unreachable_host_is_no_answer() -> None:
    down = LoopbackNames({"down.test": OSError(errno.EHOSTUNREACH, "host is down")})
    async with open_session(step_timeout(5), resolver=down) as session:
        with pytest.raises(NoAnswer) as failed:
            await fetch(session, "GET", "http://down.test/x", max_bytes=CAP)
    assert "host is down" in str(failed.value)
    async with open_session(step_timeout(5)) as session:
        with pytest.raises(NoAnswer):
            await fetch(session, "GET", "http://[not-an-address/x", max_bytes=CAP)


async def test_an_answer_is_read_whole_with_deputys_own_headers(server: tuple[str, Seen]) -> None:
    url, seen = server
    async with open_session(step_timeout(5), skip_auto_headers=("Content-Type",)) as session:
        answer = await fetch(session, "POST", f"{url}/echo", max_bytes=CAP, data=b"old 0\n",
                             headers={"Accept": "application/json"})
    assert (answer.status, answer.body) == (200, b'{"method":"POST","body":"old 0\\n"}')
    sent = seen.headers[0]
    assert (sent["user-agent"], sent["accept-encoding"], sent["accept"]) == ("Deputy", "identity", "application/json")
    assert "content-type" not in sent
