"""Issue 14: nobody can flood the audit log through an identity provider's callback, or start sign-ins without end.

Anyone can send ``GET /login/callback/NAME?state=…`` and each refusal writes a ``signin.failed`` record. So refusals
that are no sign-in of the browser sending them are counted per client address (``[limits]
signin_failures_per_minute``, 5 here) and so are sign-ins started (``signin_starts_per_minute``, 8 here): past the
first, such refusals from that address are answered 429 with ``Retry-After`` and write no record (a callback without
a binding cookie before anything is read); past the second, starts are. A person from another address signs in
meanwhile (that nobody at the same address is locked out by them is tests/security/test_federated_sign_in_lockout.py).
The limiter runs in the process, before storage, so one backend (SQLite) is enough; its window arithmetic is the
registration limit's (:mod:`deputy.rate_limit`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.security.test_federated_sign_in_pages import answer, authorize_url, callback, valid_claims
from tests.support.audit_log import read_log
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.hostile_idp import CLIENT_ID, CLIENT_SECRET, HostileIdp, hostile_idp, sent_parameters

FAILURES_PER_MINUTE = 5
STARTS_PER_MINUTE = 8
FLOODER = "127.0.0.3"  # any 127/8 address reaches a listener on 127.0.0.1 (Linux loopback)
STARTER = "127.0.0.4"
PERSON = "127.0.0.5"
ALL_AT_ONCE = "127.0.0.6"
STARTS_AT_ONCE = "127.0.0.7"
FLOOD = 40


@pytest.fixture(scope="module")
async def idp() -> AsyncIterator[HostileIdp]:
    async with hostile_idp("corp") as served:
        yield served


@pytest.fixture(scope="module")
def deputy(idp: HostileIdp, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("deputy-signin-throttle")
    extra = (f'\n[[identity_providers]]\nname = "corp"\ntitle = "Corp"\nissuer = "{idp.issuer}"\n'
             f"client_id = \"{CLIENT_ID}\"\nclient_secret = {json.dumps(CLIENT_SECRET)}\n"
             f"\n[limits]\nsignin_failures_per_minute = {FAILURES_PER_MINUTE}\n"
             f"signin_starts_per_minute = {STARTS_PER_MINUTE}\n")
    with running_deputy(directory, f"sqlite+aiosqlite:///{directory / 'deputy.db'}", upstream_url,
                        extra) as running:
        yield running


def browser_from(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=FLOOD),
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def failures(deputy: RunningDeputy) -> list[dict[str, Any]]:
    return [dict(leaf.record) for leaf in (await read_log(deputy.database_url)).of_type("signin.failed")]


async def test_a_flood_of_forged_callbacks_writes_a_bounded_number_of_records(deputy: RunningDeputy,
                                                                            idp: HostileIdp) -> None:
    before = len(await failures(deputy))
    answers: list[int] = []
    async with browser_from(FLOODER) as flooder:
        for _ in range(40):
            forged = await callback(flooder, deputy, "corp", [("code", "c"), ("state", secrets.token_urlsafe(16)),
                                                              ("iss", idp.issuer)])
            answers.append(forged.status_code)
            if forged.status_code == 429:
                assert int(forged.headers["retry-after"]) >= 1
                assert "too_many_attempts" in forged.text
        # Starting at an unknown provider is a refusal too, and the address is out of budget for it as well.
        unknown = await flooder.post(f"{deputy.url}/login/start/nobody", data={"csrf_token": "x"})
        assert unknown.status_code == 429
    assert answers[:FAILURES_PER_MINUTE] == [400] * FAILURES_PER_MINUTE, answers
    assert answers[FAILURES_PER_MINUTE:] == [429] * (40 - FAILURES_PER_MINUTE), answers
    written = (await failures(deputy))[before:]
    assert len(written) == FAILURES_PER_MINUTE
    assert {(record["reason"], record["idp"]) for record in written} == {("state_unknown", "corp")}

    # Meanwhile a person elsewhere signs in (one provider, no local users: /authorize goes straight there).
    async with browser_from(PERSON) as person:
        started = await person.get(authorize_url(deputy))
        assert started.status_code == 303, started.text
        sent = sent_parameters(started.headers["location"])
        idp.id_token = idp.sign(valid_claims(idp, sent, sub="throttle-alice"))
        back = await callback(person, deputy, "corp", answer(idp, sent))
        assert back.status_code == 303 and back.headers["location"].startswith("/authorize/consent?request_id=")
    assert len((await failures(deputy))[before:]) == FAILURES_PER_MINUTE


async def test_sign_ins_started_from_one_address_are_bounded(deputy: RunningDeputy) -> None:
    """With one provider and no local users /authorize starts at once: each start keeps a waiting sign-in."""
    answers: list[int] = []
    async with browser_from(STARTER) as starter:
        for _ in range(STARTS_PER_MINUTE + 4):
            started = await starter.get(authorize_url(deputy))
            answers.append(started.status_code)
            if started.status_code == 429:
                assert int(started.headers["retry-after"]) >= 1
    assert answers == [303] * STARTS_PER_MINUTE + [429] * 4, answers
    async with browser_from(PERSON) as person:  # another address starts as usual
        assert (await person.get(authorize_url(deputy))).status_code == 303


async def test_forged_callbacks_sent_all_at_once_meet_the_same_limit(deputy: RunningDeputy, idp: HostileIdp) -> None:
    """A refusal used to be counted only when it was answered: forty callbacks sent at once had all passed the check
    before the first was counted, and each wrote a record. A callback without a binding cookie now counts from when it
    is heard (it cannot be anyone's answer), one with a cookie the moment its lookup finds no sign-in of its own."""
    before = len(await failures(deputy))
    async with browser_from(ALL_AT_ONCE) as flooder:
        answers = await asyncio.gather(*(
            callback(flooder, deputy, "corp", [("code", "c"), ("state", secrets.token_urlsafe(16)),
                                               ("iss", idp.issuer)])
            for _ in range(FLOOD)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {400, 429}, statuses
    assert statuses.count(400) <= FAILURES_PER_MINUTE, statuses
    assert len((await failures(deputy))[before:]) <= FAILURES_PER_MINUTE


async def test_refused_starts_sent_all_at_once_meet_the_same_limit(deputy: RunningDeputy) -> None:
    """The same for a login page's start button: forty starts with a wrong CSRF token, sent at once."""
    before = len(await failures(deputy))
    async with browser_from(STARTS_AT_ONCE) as flooder:
        answers = await asyncio.gather(*(flooder.post(f"{deputy.url}/login/start/corp", data={"csrf_token": "x"})
                                         for _ in range(FLOOD)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {403, 429}, statuses
    assert statuses.count(403) <= FAILURES_PER_MINUTE, statuses
    assert len((await failures(deputy))[before:]) <= FAILURES_PER_MINUTE
