"""The official conformance suite against Deputy itself.

- ``authorization`` scenarios (0.2.0-alpha.12) against Deputy's issuer: metadata
  discovery and a full authorization code grant, login and consent driven over HTTP.
- ``server`` scenarios through Deputy pass exactly as they do directly against the same
  upstream (our SDK-built fixture server): Deputy must not break anything it forwards.
  The suite cannot send a bearer token, so a test-only forwarder adds a real token that
  Deputy issued through the authorization code flow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conformance.harness import (
    BearerForwarder,
    fixture_server,
    form_login_driver,
    free_port,
    require_conformance,
    run_authorization_scenarios,
    run_server_scenarios,
)
from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.oauth_flow import tokens_for_alice

pytestmark = pytest.mark.conformance

CONFORMANCE_CLIENT = "conformance-suite"


@dataclass(frozen=True)
class Setup:
    deputy: RunningDeputy
    fixture_url: str
    callback_port: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_conformance("alpha")
    directory = tmp_path_factory.mktemp("conformance-deputy")
    callback_port = free_port()
    # The suite's callback is http://127.0.0.1:PORT/callback (an IP literal, RFC 8252 §7.3), so this Deputy
    # runs on localhost: a redirect URI on Deputy's own host would be sent Deputy's cookies, and is refused.
    extra = f'''
[[clients]]
client_id = "{CONFORMANCE_CLIENT}"
client_name = "MCP conformance suite"
redirect_uris = ["http://127.0.0.1:{callback_port}/callback"]
'''
    with fixture_server() as fixture_url, database_url("sqlite", directory) as url, \
            running_deputy(directory, url, fixture_url, extra, public_host="localhost") as deputy:
        yield Setup(deputy, fixture_url, callback_port)


def test_authorization_scenarios_pass_against_deputys_issuer(setup: Setup, tmp_path: Path) -> None:
    results = run_authorization_scenarios(
        setup.deputy.url, CONFORMANCE_CLIENT, setup.callback_port, form_login_driver("alice", PASSWORD),
        out_dir=tmp_path, resource=setup.deputy.resource("demo"))
    assert results == {"authorization-server-metadata-endpoint": True, "authorization-code-grant": True}, (
        (tmp_path / "console.log").read_text()[-3000:])


async def test_server_scenarios_pass_through_deputy_as_they_do_directly(setup: Setup, tmp_path: Path) -> None:
    direct = run_server_scenarios(setup.fixture_url, tmp_path / "direct")
    access_token, _refresh = await tokens_for_alice(setup.deputy, setup.deputy.resource("demo"))
    with BearerForwarder(setup.deputy.resource("demo"), access_token, translate_authority=True) as forwarder:
        through = run_server_scenarios(forwarder.url, tmp_path / "through")
    assert set(direct) == set(through), "the same scenarios ran"
    broken = sorted(name for name, passed in direct.items() if passed and not through[name])
    assert broken == [], f"pass directly but fail through Deputy: {broken}"
    assert sum(direct.values()) >= 40, "the baseline itself is meaningful"
