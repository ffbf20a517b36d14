"""`deputy init` writes a starter configuration that Deputy itself accepts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from deputy.cli import app
from deputy.config import load_settings


def test_init_writes_a_valid_commented_config(tmp_path: Path) -> None:
    target = tmp_path / "deputy.toml"
    result = CliRunner().invoke(app, ["init", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert text.count("#") > 10, "the starter file explains itself"
    settings = load_settings(target, environ={})
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.servers["demo"].resource == "http://127.0.0.1:8000/mcp/demo"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "deputy.toml"
    target.write_text("# mine\n")
    result = CliRunner().invoke(app, ["init", str(target)])
    assert result.exit_code == 1
    assert target.read_text() == "# mine\n"


def test_serve_names_the_bad_key_and_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "deputy.toml"
    target.write_text('public_url = "http://example.com"\n[servers.demo]\nurl = "http://127.0.0.1:1/mcp"\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(target)])
    assert result.exit_code == 2
    assert "public_url" in result.output
