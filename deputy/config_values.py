"""The vocabulary every configuration reader shares: one error, one way to name a key, one reader per kind of value.

:class:`ConfigError` names the offending key by its full path from the top of ``deputy.toml``: tables joined by
dots, entries of an array by index (``audit.append_timeout_ms``, ``clients[2].redirect_uris[0]``,
``servers.demo.url``). Each reader takes the table it reads, the key, and ``where``, the path of that table ("" at
the top level), and returns the value or raises :class:`ConfigError`; no other error leaves configuration parsing.

Kinds of value: tables and arrays of tables, strings, integers, numbers, booleans, choices, lists of strings, http(s)
URLs, scope lists (RFC 6749 §3.3), secrets given literally, from the environment or from a file, JSON files and
JWK Sets (RFC 7517 §5, judged by :mod:`deputy.jwks_rules`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from deputy import bounded_json
from deputy.jwks_rules import JwksError, check_client_jwks

# RFC 6749 §3.3 scope-token; matched whole (``fullmatch``), so a trailing newline is not part of a token.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

Choice = TypeVar("Choice", bound=str)


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``key`` is its full path, ``problem`` what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"configuration error: {key}: {problem}")
        self.key = key
        self.problem = problem


def at(where: str, key: str | int) -> str:
    """The path of ``key`` in the table at ``where``, or of entry ``key`` when it is an index."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def as_table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, "must be a table")
    return value


def read_table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``[where.key]``; absent, an empty table."""
    return as_table(raw.get(key, {}), at(where, key))


def as_tables(value: Any, where: str) -> list[Any]:
    """An array of tables (``[[where]]``); each entry is its reader's to check."""
    if not isinstance(value, list):
        raise ConfigError(where, f"must be an array of tables ([[{where}]])")
    return value


def read_tables(raw: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """``[[where.key]]``; absent, empty."""
    return as_tables(raw.get(key, []), at(where, key))


def check_known(raw: Mapping[str, Any], where: str, known: Collection[str]) -> None:
    for key in raw:
        if key not in known:
            raise ConfigError(at(where, str(key)), f"unknown setting (known: {', '.join(sorted(known))})")


def read_str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(at(where, key), "must be a non-empty string")
    return value


def read_int(raw: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int, *,
             digits: bool = False) -> int:
    """An integer from ``lo`` to ``hi``; with ``digits``, a string of digits too (the environment's values are
    strings)."""
    value = raw.get(key, default)
    if digits and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        with contextlib.suppress(ValueError):  # "--5": digits after the signs, but not a number
            value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(at(where, key), f"must be an integer from {lo} to {hi}, got {value!r}")
    return value


def read_number(raw: Mapping[str, Any], key: str, where: str, default: float, lo: float, hi: float, *,
                unit: str = "") -> float:
    """An integer or float from ``lo`` to ``hi`` (``unit``: what it counts, for the message); never a boolean."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        counted = f" of {unit}" if unit else ""
        raise ConfigError(at(where, key), f"must be a number{counted} from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def read_bool(raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(at(where, key), "must be true or false")
    return value


def read_choice(raw: Mapping[str, Any], key: str, where: str, default: Choice, choices: Sequence[Choice]) -> Choice:
    value = raw.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(at(where, key), f"must be one of {', '.join(choices)}")
    return cast(Choice, value)


def read_strings(raw: Mapping[str, Any], key: str, where: str, default: Sequence[str] = (), *,
                 choices: Sequence[str] | None = None, non_empty: bool = False,
                 what: str = "strings") -> tuple[str, ...]:
    """A list of non-empty strings, each one of ``choices`` when given; a bad entry is named by its index."""
    path = at(where, key)
    value = raw.get(key, list(default))
    if not isinstance(value, list) or (non_empty and not value):
        raise ConfigError(path, f"must be a {'non-empty ' if non_empty else ''}list of {what}")
    for index, item in enumerate(value):
        if choices is not None and item not in choices:
            raise ConfigError(at(path, index), f"must be one of {', '.join(choices)}")
        if not isinstance(item, str) or not item:
            raise ConfigError(at(path, index), "must be a non-empty string")
    return tuple(value)


def read_scopes(raw: Mapping[str, Any], key: str, where: str, default: Sequence[str]) -> tuple[str, ...]:
    path = at(where, key)
    value = raw.get(key, list(default))
    if not isinstance(value, list):
        raise ConfigError(path, "must be a list of scope tokens (RFC 6749 §3.3)")
    for index, scope in enumerate(value):
        if not isinstance(scope, str) or not SCOPE_TOKEN.fullmatch(scope):
            raise ConfigError(at(path, index), "must be a scope token (RFC 6749 §3.3)")
    return tuple(value)


def check_http_url(value: Any, where: str) -> str:
    """An absolute http(s) URL: scheme http or https, and a host."""
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # an unclosed IPv6 bracket, say
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, f"must be an absolute http(s) URL, got {value!r}")
    return cast(str, value)


def secret_value(spec: Any, where: str, environ: Mapping[str, str], base_dir: Path | None, *,
                 non_empty: bool = False) -> str:
    """A literal string, ``{env = "NAME"}`` from the environment or ``{file = "PATH"}`` (relative to the
    configuration file; trailing newline dropped), read at start. ``base_dir`` None: no file form here;
    ``non_empty``: an empty string or variable is refused."""
    if isinstance(spec, str) and (spec or not non_empty):
        return spec
    if isinstance(spec, dict) and set(spec) == {"env"} and isinstance(spec["env"], str):
        value = environ.get(spec["env"])
        if value is None or (non_empty and not value):
            raise ConfigError(where, f"environment variable {spec['env']} is not set")
        return value
    if base_dir is not None and isinstance(spec, dict) and set(spec) == {"file"} and isinstance(spec["file"], str):
        return _secret_file(spec["file"], where, base_dir)
    string = "a non-empty string" if non_empty else "a string"
    forms = (f'{string}, {{env = "VARIABLE"}} or {{file = "PATH"}}' if base_dir is not None
             else f'{string} or {{env = "VARIABLE"}}')
    raise ConfigError(where, f"must be {forms}")


def _secret_file(name: str, where: str, base_dir: Path) -> str:
    try:
        value = (base_dir / Path(name).expanduser()).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, f"cannot read secret file {name}: {exc}") from None
    if not value or "\n" in value:
        raise ConfigError(where, f"secret file {name} must hold one non-empty line")
    return value


def read_json_file(location: Path, where: str) -> Any:
    """The JSON document in a file the configuration names, its nesting bounded (:mod:`deputy.bounded_json`)."""
    try:
        return bounded_json.loads(location.read_text())
    except OSError as exc:
        raise ConfigError(where, f"cannot read {location}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(where, f"{location} is not JSON ({exc})") from None


def check_jwks(value: Any, where: str, *, inline: bool) -> dict[str, Any]:
    """A JWK Set of public signing keys (:func:`deputy.jwks_rules.check_client_jwks`). Written ``inline`` in the
    configuration, a bad key is named by its path (``clients[0].jwks.keys[1]``); read from a file, by its index."""
    try:
        return check_client_jwks(value)
    except JwksError as exc:
        if inline and exc.index is not None:
            raise ConfigError(at(at(where, "keys"), exc.index), exc.problem) from None
        raise ConfigError(where, str(exc)) from None
