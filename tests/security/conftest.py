"""One Deputy per backend for the whole security package.

The root ``deputy`` fixture is module-scoped; the security tests are split by concept
over many modules, and a Deputy start costs seconds, so here the same fixture is
package-scoped. Every test starts its own flows (fresh browser, fresh code, fresh
grant), so tests do not depend on one another's state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import BACKENDS
from tests.support.deputy_process import RunningDeputy, deputy_on


@pytest.fixture(scope="package", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="package")
def deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-security-{backend}")
    with deputy_on(backend, upstream_url, directory) as running:
        yield running


@pytest.fixture(scope="package")
async def browser(deputy: RunningDeputy) -> AsyncIterator[httpx.AsyncClient]:
    """alice's browser, shared by the package: she signs in on first use and stays signed in.

    Tests that attack the authorization request or the token endpoint pass it to
    `authorize` so that each flow costs no password check; tests about the login page
    itself use fresh browsers.
    """
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
