"""A Deputy for end-to-end tests with HTTPS documents on loopback (client metadata, JWK Sets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.tls import TlsFiles


@pytest.fixture(scope="module")
def documents_deputy(backend: str, upstream_url: str, tls: TlsFiles,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """Deputy in development mode trusting the test CA: 127.0.0.1 allowed, other domains held for approval."""
    directory: Path = tmp_path_factory.mktemp(f"deputy-documents-{backend}")
    extra = f'''
[client_documents]
development_mode = true
ca_file = "{tls.ca_file}"
allowed_domains = ["127.0.0.1"]
unknown_domains = "approval"
cache_min_seconds = 0
'''
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as running:
        yield running
