"""The vocabulary every configuration reader shares: :class:`ConfigError` naming the key, and readers of strings,
integers, scope lists (RFC 6749 §3.3) and secrets given literally, from the environment or from a file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"configuration error: {key}: {problem}")
        self.key = key
        self.problem = problem


def read_str(raw: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}{key}", "must be a non-empty string")
    return value


def read_int(raw: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{path}{key}", f"must be an integer from {lo} to {hi}, got {value!r}")
    return value


def read_scopes(raw: Mapping[str, Any], key: str, path: str, default: list[str]) -> tuple[str, ...]:
    value = raw.get(key, default)
    if not isinstance(value, list) or not all(isinstance(s, str) and SCOPE_TOKEN.match(s) for s in value):
        raise ConfigError(f"{path}{key}", "must be a list of scope tokens (RFC 6749 §3.3)")
    return tuple(value)


def secret_value(spec: Any, key: str, environ: Mapping[str, str], base_dir: Path) -> str:
    """A literal string, ``{env = "NAME"}`` from the environment or ``{file = "PATH"}`` (relative to the
    configuration file; trailing newline dropped), read at start."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and set(spec) == {"env"} and isinstance(spec["env"], str):
        if spec["env"] not in environ:
            raise ConfigError(key, f"environment variable {spec['env']} is not set")
        return environ[spec["env"]]
    if isinstance(spec, dict) and set(spec) == {"file"} and isinstance(spec["file"], str):
        try:
            value = (base_dir / Path(spec["file"]).expanduser()).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(key, f"cannot read secret file {spec['file']}: {exc}") from None
        if not value or "\n" in value:
            raise ConfigError(key, f"secret file {spec['file']} must hold one non-empty line")
        return value
    raise ConfigError(key, 'must be a string, {env = "VARIABLE"} or {file = "PATH"}')
