"""Guesses sent all at once meet the sign-in back-off as guesses sent one after another do.

The back-off (deputy.rate_limit.FailureBackoff, per client address and user name) used to count a failure only
once its password had been checked: every guess already in flight had passed the check before the first failure
was counted, so twenty guesses sent at once were all heard. A guess now counts as a failure from the moment it is
heard (a right password clears the count). Status codes only.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlencode, urljoin

import httpx

from deputy.web.sign_in import FREE_FAILED_SIGN_INS
from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import Pkce
from tests.support.sdk_client import parse_form

GUESSES = 20


async def _login_form(http: httpx.AsyncClient, deputy: RunningDeputy) -> tuple[str, dict[str, str]]:
    query = urlencode({"response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI,
                       "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
                       "resource": deputy.resource("demo"), "state": "s"})
    page = await http.get(f"{deputy.url}/authorize?{query}")
    assert page.status_code == 200, page.text
    form = parse_form(page.text)
    return urljoin(f"{deputy.url}/authorize", form.action), form.data()


async def test_guesses_sent_at_once_are_not_all_heard(deputy: RunningDeputy) -> None:
    owner = f"owner-{secrets.token_hex(4)}"
    added = await asyncio.to_thread(deputy.cli, "users", "add", owner, "--password", PASSWORD)
    assert added.returncode == 0, added.stderr
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=GUESSES)) as guesser:
        action, fields = await _login_form(guesser, deputy)
        answers = await asyncio.gather(*(guesser.post(action, data={**fields, "username": owner, "password": "x"})
                                         for _ in range(GUESSES)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429}, statuses
    # The free failures and the one that starts the wait are heard; the rest wait, however they were sent — but for
    # a guess that arrives after a wait is over (1 s, then 2, 4, 8: on a loaded machine twenty requests may take
    # seconds to arrive), so up to four more than that. Counted only once checked, all twenty were heard.
    assert statuses.count(401) <= FREE_FAILED_SIGN_INS + 1 + 4, statuses
