"""Shared fixtures: databases on both backends, the demo upstream, a running Deputy.

A Deputy start costs seconds, so one Deputy per backend serves the whole session,
started on first use. Tests start their own flows (fresh browser, code, grant), so
they do not depend on each other's state; a test that needs other configuration
starts its own Deputy with `tests.support.deputy_process.running_deputy`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.databases import BACKENDS
from tests.support.deputy_process import RunningDeputy, demo_upstream, deputy_on
from tests.support.document_server import DocumentServer, document_server
from tests.support.tls import TlsFiles, make_test_tls


class DeputyPool:
    """One running Deputy per backend, started when first asked for, stopped at session end."""

    def __init__(self, upstream_url: str, tmp_path_factory: pytest.TempPathFactory, stack: ExitStack) -> None:
        self.upstream_url = upstream_url
        self.tmp_path_factory = tmp_path_factory
        self.stack = stack
        self.running: dict[str, RunningDeputy] = {}

    def get(self, backend: str) -> RunningDeputy:
        if backend not in self.running:
            directory = self.tmp_path_factory.mktemp(f"deputy-{backend}")
            self.running[backend] = self.stack.enter_context(deputy_on(backend, self.upstream_url, directory))
        return self.running[backend]


@pytest.fixture(scope="session")
def upstream_url() -> Iterator[str]:
    with demo_upstream() as url:
        yield url


@pytest.fixture(scope="session")
def deputies(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeputyPool]:
    with ExitStack() as stack:
        yield DeputyPool(upstream_url, tmp_path_factory, stack)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def deputy(backend: str, deputies: DeputyPool) -> RunningDeputy:
    return deputies.get(backend)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    return make_test_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def docs(tls: TlsFiles) -> Iterator[DocumentServer]:
    """An HTTPS server on loopback serving whatever documents a test configures."""
    with document_server(tls) as server:
        yield server
