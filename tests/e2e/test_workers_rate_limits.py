"""Per-address limits hold for the whole ``deputy serve --workers N``, not for each worker: each worker counts in its
own memory and admits its share (deputy.limits.worker_share). Registration is the case shown end to end — its
limiter counts an attempt before any ``await``, so concurrent requests cannot slip past it — with many concurrent
requests, each on a connection of its own, so that the kernel hands them to both workers. Status codes only."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.workers_support import fresh_client, wait_for_workers
from tests.support.databases import database_url
from tests.support.deputy_process import running_deputy

LIMIT = 4  # registrations per address per minute, for the whole Deputy: 2 for each of the 2 workers
ATTEMPTS = 24
BODY = {"redirect_uris": ["http://localhost:9/cb"], "token_endpoint_auth_method": "none"}


def test_two_workers_admit_the_configured_registrations_not_twice_as_many(upstream_url: str,
                                                                           tmp_path: Path) -> None:
    extra = f'\n[registration]\nmode = "loopback"\nrate_limit_per_minute = {LIMIT}\n'
    with database_url("sqlite", tmp_path) as url, running_deputy(
            tmp_path, url, upstream_url, extra, environment={"DEPUTY_WORKERS": "2"}) as deputy:
        wait_for_workers(deputy, 2)

        async def attempts() -> list[int]:
            async with fresh_client() as http:
                answers = await asyncio.gather(*(http.post(f"{deputy.url}/register", json=BODY)
                                                 for _ in range(ATTEMPTS)))
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(attempts())
    assert set(statuses) <= {201, 429}, statuses
    # Each worker admits LIMIT / 2: LIMIT in all when both got requests, LIMIT / 2 when one got them all; each
    # admitting LIMIT (the old count per process) would let up to 2 * LIMIT through.
    assert LIMIT // 2 <= statuses.count(201) <= LIMIT, statuses
