"""The smallest deputy.toml a test can load: one server that nothing connects to, a data directory of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from deputy.config import ConfigError, Settings, load_settings


def offline_config(directory: Path, extra: str = "", *, public_url: str = "https://deputy.example.com",
                   scopes: tuple[str, ...] = ("demo:tools",)) -> Path:
    """Write ``directory/deputy.toml`` with server ``demo`` on a closed port and ``extra`` (tables) after it."""
    path = directory / "deputy.toml"
    listed = ", ".join(f'"{scope}"' for scope in scopes)
    path.write_text(f'public_url = "{public_url}"\ndata_dir = "{directory / "data"}"\n\n'
                    f'[servers.demo]\nurl = "http://127.0.0.1:9/mcp"\nscopes = [{listed}]\n{extra}\n')
    return path


def config_file(directory: Path, text: str) -> Path:
    """Write ``text`` as ``directory/deputy.toml``."""
    path = directory / "deputy.toml"
    path.write_text(text)
    return path


def load(directory: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(config_file(directory, text), environ=environ or {})


def config_error(directory: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    """The error loading ``text`` raises (the test fails if it loads)."""
    with pytest.raises(ConfigError) as info:
        load(directory, text, environ)
    return info.value
