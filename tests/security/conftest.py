"""The security package shares the session's Deputy per backend (see tests/conftest.py).

``backend`` and ``deputy`` are package-scoped here so that the package-scoped ``browser``
(alice signed in once) can depend on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import DeputyPool
from tests.support.databases import BACKENDS
from tests.support.deputy_process import RunningDeputy


@pytest.fixture(scope="package", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="package")
def deputy(backend: str, deputies: DeputyPool) -> RunningDeputy:
    return deputies.get(backend)


@pytest.fixture(scope="package")
async def browser(deputy: RunningDeputy) -> AsyncIterator[httpx.AsyncClient]:
    """alice's browser, shared by the package: she signs in on first use and stays signed in.

    Tests that attack the authorization request or the token endpoint pass it to
    `authorize` so that each flow costs no password check; tests about the login page
    itself use fresh browsers.
    """
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
