"""What importing Deputy's modules loads: the heavy packages only where they are used (issue 16, item 6).

Every ``deputy`` command imports the CLI, and a serving process imports what the app needs; the MCP SDK (its
package ``__init__`` builds every protocol model: ~30 MB and a second of CPU), SQLAlchemy and Cedar are loaded by
the code that uses them, not by importing a module that merely names them. Checked in a fresh interpreter through
``sys.modules``: what a module imports is a fact about it, whatever the test process already loaded. No timing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
{statements}
print(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}})))
"""


def loaded_packages(statements: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after running ``statements`` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(statements=statements)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", [
    "deputy.connections.service", "deputy.connections.discovery", "deputy.connections.registration",
    "deputy.connections.token_responses", "deputy.connections.upstream_metadata", "deputy.connections.connect_flow",
])
def test_the_connections_do_not_import_the_mcp_sdk_until_they_use_it(module: str) -> None:
    assert "mcp" not in loaded_packages(f"import {module}")


def test_the_sdk_helpers_are_the_sdks_once_used() -> None:
    # The wrappers call the SDK itself, which is then loaded: one definition of each rule.
    loaded = loaded_packages("from deputy.connections.sdk_auth import issuers_match\n"
                             "assert issuers_match('https://a.example', 'https://a.example/')\n"
                             "assert not issuers_match('https://a.example/x', 'https://a.example/x/')")
    assert "mcp" in loaded


def test_the_services_container_imports_its_parts_only_when_it_builds_them() -> None:
    loaded = loaded_packages("import deputy.services")
    assert not loaded & {"mcp", "sqlalchemy", "alembic", "aiohttp", "cedarpy"}


# uvicorn (and starlette under it) is for serving only; joserfc and cryptography come with the configuration's
# readers (deputy.config_values judges JWK Sets), which --help does not read: --workers' bound is deputy.limits'.
HEAVY_FOR_HELP = {"mcp", "sqlalchemy", "alembic", "aiohttp", "cedarpy", "uvicorn", "starlette", "joserfc",
                  "cryptography"}


@pytest.mark.parametrize("argv", [["--help"], ["users", "--help"], ["audit", "--help"], ["approvals", "list", "--help"],
                                  ["policy", "test", "--help"], ["connections", "--help"],
                                  ["serve", "--help"], ["demo", "--help"]])
def test_the_cli_shows_its_help_without_the_storage_the_sdk_or_cedar(argv: list[str]) -> None:
    # Every deputy command starts by importing the CLI and reading every command's options; what a command
    # needs to run is imported when it runs.
    loaded = loaded_packages("from deputy.cli import app\n"
                             "try:\n"
                             f"    app({argv!r})\n"
                             "except SystemExit as exit:\n"
                             "    assert not exit.code, exit.code")
    assert not loaded & HEAVY_FOR_HELP, loaded & HEAVY_FOR_HELP


def test_approvals_status_choices_are_the_storages_statuses() -> None:
    from deputy.cli.approvals import STATUS_NAMES, StatusName
    from deputy.storage.approvals import Status

    assert tuple(status.value for status in Status) == STATUS_NAMES
    assert [member.value for member in StatusName] == list(STATUS_NAMES)
