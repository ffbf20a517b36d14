"""Issue 13, item 4: ``deputy serve`` with a misspelt key does not start; it says which key, and what was meant.

Before, ``[servers.x] polices = "…"`` started the server with no policy at all, and typos in ``[tokens]`` and
``[gateway]`` were ignored the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.forked_deputy import run_deputy

SERVER = '[servers.x]\nurl = "http://127.0.0.1:9/mcp"\n'


@pytest.mark.parametrize(("table", "path", "meant"), [
    (f'{SERVER}polices = "policies"\n', "servers.x.polices", "policies"),
    (f"{SERVER}[tokens]\nacess_token_ttl = 300\n", "tokens.acess_token_ttl", "access_token_ttl"),
    (f"{SERVER}[gateway]\nrevocation_max_stalenes = 1.0\n", "gateway.revocation_max_stalenes",
     "revocation_max_staleness"),
])
def test_serve_refuses_a_misspelt_key_in_one_line(tmp_path: Path, table: str, path: str, meant: str) -> None:
    config = tmp_path / "bad.toml"
    # Port 0: were the key ignored, Deputy would start listening instead of exiting, and the run time out.
    config.write_text(f'host = "127.0.0.1"\nport = 0\ndata_dir = "{tmp_path / "data"}"\n{table}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")}
    result = run_deputy(["serve", "--config", str(config)], env, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"configuration error: {path}: unknown setting; did you mean {meant}?"], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists(), "nothing was created before the configuration was checked"
