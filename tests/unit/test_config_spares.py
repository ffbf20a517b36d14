"""``servers.NAME.spare_processes``: a stdio server's processes started ahead of its sessions (issue 16 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deputy.config_servers import DEFAULT_SPARE_PROCESSES, MAX_SPARE_PROCESSES
from tests.support.config_files import config_error, load

STDIO = '[servers.local]\ncommand = ["mcp-local"]\n'
HTTP = '[servers.web]\nurl = "http://127.0.0.1:9000/mcp"\n'


def test_a_stdio_server_keeps_one_spare_by_default_and_an_http_server_none(tmp_path: Path) -> None:
    settings = load(tmp_path, STDIO + HTTP)
    assert DEFAULT_SPARE_PROCESSES == 1
    assert settings.servers["local"].spare_processes == 1
    assert settings.servers["web"].spare_processes == 0


@pytest.mark.parametrize("count", [0, 3, MAX_SPARE_PROCESSES])
def test_spare_processes_from_zero_to_the_maximum(tmp_path: Path, count: int) -> None:
    assert load(tmp_path, f"{STDIO}spare_processes = {count}\n").servers["local"].spare_processes == count


@pytest.mark.parametrize("value", ["-1", str(MAX_SPARE_PROCESSES + 1), "1.5", "true", '"1"', "[1]"])
def test_a_spare_count_out_of_range_or_not_an_integer_names_the_key(tmp_path: Path, value: str) -> None:
    error = config_error(tmp_path, f"{STDIO}spare_processes = {value}\n")
    assert error.key == "servers.local.spare_processes"
    assert f"from 0 to {MAX_SPARE_PROCESSES}" in str(error)


def test_spare_processes_on_an_http_server_is_refused(tmp_path: Path) -> None:
    error = config_error(tmp_path, f"{HTTP}spare_processes = 1\n")
    assert error.key == "servers.web.spare_processes"
    assert "stdio" in str(error)
