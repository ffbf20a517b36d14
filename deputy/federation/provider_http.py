"""Requests to an identity provider: through Deputy's own client (:mod:`deputy.outbound_http`), answers capped.

The provider is the operator's choice, so its URLs are not treated as a stranger's (no address filtering), but
every request still goes the one way all of Deputy's do: no redirect followed (a 3xx is an answer, and a wrong
one), no cookies, no proxy from the environment, a time limit on each step, the body capped while it is read; and
the JSON is parsed with its nesting bounded (:mod:`deputy.bounded_json`). A failure is a :class:`ProviderHttpError`
whose message names the problem without echoing the body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from deputy import bounded_json
from deputy.outbound_http import BodyTooLarge, NoAnswer, fetch, open_session, step_timeout

TIMEOUT = 5.0
SessionFactory = Callable[[], aiohttp.ClientSession]


class ProviderHttpError(Exception):
    """No usable answer: unreachable, too large, a redirect, not JSON; the message says which."""


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int
    document: Any  # the parsed JSON body; None when the body is not JSON
    headers: Mapping[str, str]


def default_session() -> aiohttp.ClientSession:
    return open_session(step_timeout(TIMEOUT))


class ProviderHttp:
    """GETs and form POSTs to identity providers, each in a session from ``session`` (tests point it elsewhere)."""

    def __init__(self, session: SessionFactory = default_session) -> None:
        self.session = session

    async def get_json(self, url: str, max_bytes: int) -> JsonAnswer:
        return await self._request("GET", url, max_bytes, {"Accept": "application/json"}, None)

    async def post_form(self, url: str, form: bytes, headers: Mapping[str, str], max_bytes: int) -> JsonAnswer:
        sent = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded", **headers}
        return await self._request("POST", url, max_bytes, sent, form)

    async def _request(self, method: str, url: str, max_bytes: int, headers: Mapping[str, str],
                       data: bytes | None) -> JsonAnswer:
        try:
            async with self.session() as session:
                answer = await fetch(session, method, url, max_bytes=max_bytes, headers=headers, data=data)
        except NoAnswer as exc:
            raise ProviderHttpError(f"no answer from {url} ({exc.cause_name})") from None
        except BodyTooLarge:
            raise ProviderHttpError(f"the answer from {url} is larger than {max_bytes} bytes") from None
        if 300 <= answer.status < 400:
            # RFC 9110 §15.4: a redirect's target is a URL nobody configured; it is never followed.
            raise ProviderHttpError(f"{url} answered with a redirect (HTTP {answer.status}), which is not followed")
        try:
            document: Any = bounded_json.loads(answer.body)
        except (ValueError, UnicodeError):
            document = None
        return JsonAnswer(answer.status, document, answer.headers)
