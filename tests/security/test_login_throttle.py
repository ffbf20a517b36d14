"""Password guessing on the sign-in form meets a back-off per client address and user name, never a lock-out.

Issue 11, finding 8: ten failed sign-ins as ``BOB`` used to lock ``bob`` out everywhere, even
with the right password. Now failures are counted per (address, name): the guesser's own
attempts wait longer and longer (429 with Retry-After), while ``bob`` signing in from another
address gets in at once. The growth of the wait is checked on the back-off itself with a
clock the test moves (:mod:`tests.unit.test_login_backoff`).
"""

from __future__ import annotations

import asyncio
import secrets

import httpx

from tests.support.deputy_process import PASSWORD, RunningDeputy
from tests.support.sign_in_form import sign_in_form

GUESSER_ADDRESS = "127.0.0.1"
OWNER_ADDRESS = "127.0.0.2"  # any 127/8 address reaches a listener on 127.0.0.1 (Linux loopback)


def browser_from(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30, transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_guessing_as_BOB_does_not_lock_bob_out(deputy: RunningDeputy) -> None:
    """Finding 8: 10 failures as the upper-case name from one address; bob, from another, signs in (303)."""
    owner = f"owner-{secrets.token_hex(4)}"
    added = await asyncio.to_thread(deputy.cli, "users", "add", owner, "--password", PASSWORD)
    assert added.returncode == 0, added.stderr
    async with browser_from(GUESSER_ADDRESS) as guesser:
        action, fields = await sign_in_form(guesser, deputy)
        answers = []
        for _ in range(10):
            wrong = await guesser.post(action, data={**fields, "username": owner.upper(), "password": "guess"})
            answers.append(wrong.status_code)
            if wrong.status_code == 429:
                assert int(wrong.headers["retry-after"]) >= 1
                assert "Too many failed sign-ins" in wrong.text
        assert answers[:5] == [401] * 5, "the first failures cost nothing"
        assert set(answers) <= {401, 429} and 429 in answers, answers

    async with browser_from(OWNER_ADDRESS) as own_browser:
        action, fields = await sign_in_form(own_browser, deputy)
        signed_in = await own_browser.post(action, data={**fields, "username": owner, "password": PASSWORD})
        assert signed_in.status_code == 303, "the owner, from another address, is not locked out"
