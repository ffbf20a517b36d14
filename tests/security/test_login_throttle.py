"""Password guessing on the login page is throttled per user name.

After ten failed sign-ins for one name within a minute, further attempts for that name —
even with the right password — get 429 with Retry-After; other users are unaffected.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlencode, urljoin

import httpx

from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import Pkce
from tests.support.sdk_client import parse_form


async def _login_form(http: httpx.AsyncClient, deputy: RunningDeputy) -> tuple[str, dict[str, str]]:
    query = urlencode({"response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI,
                       "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
                       "resource": deputy.resource("demo"), "state": "s"})
    page = await http.get(f"{deputy.url}/authorize?{query}")
    assert page.status_code == 200
    form = parse_form(page.text)
    return urljoin(f"{deputy.url}/authorize", form.action), form.data()


async def test_repeated_failures_lock_the_name_not_the_others(deputy: RunningDeputy) -> None:
    """Login throttling: 10 failures per name per minute, then 429 even for the right password."""
    target = f"target-{secrets.token_hex(4)}"
    added = await asyncio.to_thread(deputy.cli, "users", "add", target, "--password", PASSWORD)
    assert added.returncode == 0, added.stderr
    async with httpx.AsyncClient() as http:
        action, fields = await _login_form(http, deputy)
        for _ in range(10):
            wrong = await http.post(action, data={**fields, "username": target, "password": "guess"})
            assert wrong.status_code == 401
        locked = await http.post(action, data={**fields, "username": target.upper(), "password": PASSWORD})
        assert locked.status_code == 429, "the name is locked, whatever its case and even with the password"
        assert int(locked.headers["retry-after"]) in range(1, 61)
        assert "Too many failed sign-ins" in locked.text

    async with httpx.AsyncClient() as http:  # another browser, another user: not affected
        action, fields = await _login_form(http, deputy)
        alice = await http.post(action, data={**fields, "username": "alice", "password": PASSWORD})
        assert alice.status_code == 303
