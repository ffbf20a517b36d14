"""Shared fixtures: databases on both backends, the demo upstream, a running Deputy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import BACKENDS
from tests.support.deputy_process import RunningDeputy, demo_upstream, deputy_on


@pytest.fixture(scope="session")
def upstream_url() -> Iterator[str]:
    with demo_upstream() as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-{backend}")
    with deputy_on(backend, upstream_url, directory) as running:
        yield running
