"""Per-address budgets behind a reverse proxy, on a real ``deputy serve`` (deputy.forwarded_client).

The test client plays the proxy: every request comes from 127.0.0.1. The budget observed is registrations per
address (``[registration] rate_limit_per_minute = 2``): past it, 429.

- Without ``trusted_proxies`` a forwarded header is believed from no one: a client that writes one gets no budget
  of its own, and everyone behind the proxy shares one.
- With ``trusted_proxies = ["127.0.0.1"]`` each client the proxy names has its own budget, and one outsider
  spending hers leaves the others theirs (the weakness found by the attack review: one outsider could spend the
  sign-in budget of everyone behind the proxy). Entries a client writes in front of the proxy's cannot buy it
  a new budget, and a forwarded value that is not an address counts as the proxy.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy

LIMIT = "\n[registration]\nmode = \"loopback\"\nrate_limit_per_minute = 2\n"
BODY = {"client_name": "Forwarded", "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://localhost:5000/cb"]}


@pytest.fixture(scope="module")
def trusted(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("deputy-forwarded-trusted")
    with database_url("sqlite", directory) as url, running_deputy(
            directory, url, upstream_url, LIMIT, top_level='trusted_proxies = ["127.0.0.1"]') as running:
        yield running


@pytest.fixture(scope="module")
def untrusted(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("deputy-forwarded-untrusted")
    with database_url("sqlite", directory) as url, running_deputy(directory, url, upstream_url, LIMIT) as running:
        yield running


async def register(deputy: RunningDeputy, *forwarded_for: str) -> int:
    headers = [("X-Forwarded-For", value) for value in forwarded_for]
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{deputy.url}/register", json=BODY, headers=headers)
    assert response.status_code in (201, 429), response.text
    return response.status_code


async def test_without_trusted_proxies_no_forwarded_header_is_believed(untrusted: RunningDeputy) -> None:
    """Everyone behind the proxy is the proxy: what a client writes buys her no budget of her own."""
    assert [await register(untrusted, "203.0.113.10") for _ in range(2)] == [201, 201]
    assert await register(untrusted, "203.0.113.11") == 429
    assert await register(untrusted, "198.51.100.77, 203.0.113.12") == 429


async def test_one_outsider_spends_only_her_own_budget(trusted: RunningDeputy) -> None:
    assert [await register(trusted, "203.0.113.10") for _ in range(3)] == [201, 201, 429]
    assert await register(trusted, "203.0.113.11") == 201, "another client behind the proxy keeps hers"


async def test_entries_written_in_front_of_the_proxys_buy_no_new_budget(trusted: RunningDeputy) -> None:
    assert [await register(trusted, "203.0.113.20") for _ in range(2)] == [201, 201]
    for written in ("192.0.2.1", "192.0.2.2, 192.0.2.3"):  # her own text, left of what the proxy appended
        assert await register(trusted, f"{written}, 203.0.113.20") == 429
    assert await register(trusted, "192.0.2.4", "203.0.113.20") == 429  # split over two header lines alike


async def test_a_forwarded_value_that_is_no_address_counts_as_the_proxy(trusted: RunningDeputy) -> None:
    assert [await register(trusted, "unknown") for _ in range(2)] == [201, 201]  # the proxy's own budget
    assert await register(trusted, "not-an-address") == 429, "free text is not a new client"
    assert await register(trusted, "203.0.113.30") == 201, "a real client's budget is untouched"
