"""The vocabulary every configuration reader shares: one error, one way to name a key, one reader per kind of value.

:class:`ConfigError` names the offending key by its full path from the top of ``deputy.toml``: tables joined by
dots, entries of an array by index (``audit.append_timeout_ms``, ``clients[2].redirect_uris[0]``,
``servers.demo.url``). Each reader takes the table it reads, the key, and ``where``, the path of that table ("" at
the top level), and returns the value or raises :class:`ConfigError`; no other error leaves configuration parsing.

Every key is known: :func:`check_keys` walks the whole file against the :class:`Table` shapes each section's module
declares, before any value is read, and an unknown key stops start-up with its path and, when a known key is close
(``difflib``), the one probably meant. A key comes from the file and may be any TOML string, so a path shows each key
with every character outside printable ASCII escaped (a lookalike of a known key shows as what it is, a control
character cannot act on the terminal) and cut to a bounded length.

Kinds of value: tables and arrays of tables, strings, integers, numbers, booleans, choices, lists of strings, http(s)
URLs, scope lists (RFC 6749 §3.3), secrets given literally, from the environment or from a file, JSON files and
JWK Sets (RFC 7517 §5, judged by :mod:`deputy.jwks_rules`).
"""

from __future__ import annotations

import contextlib
import difflib
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from deputy import bounded_json
from deputy.display_text import escape_char
from deputy.jwks_rules import JwksError, check_client_jwks

# RFC 6749 §3.3 scope-token; matched whole (``fullmatch``), so a trailing newline is not part of a token.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

Choice = TypeVar("Choice", bound=str)
# Characters of one key a path shows; a longer key is cut there (the longest real key is under 30).
SHOWN_KEY_CHARS = 100


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``key`` is its full path, ``problem`` what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"configuration error: {key}: {problem}")
        self.key = key
        self.problem = problem


class UnknownKey(ConfigError):
    """A key no table of that kind holds; ``suggestion`` is the known key probably meant, if one is close."""

    def __init__(self, key: str, known: Collection[str], suggestion: str | None) -> None:
        super().__init__(key, f"unknown setting; did you mean {suggestion}?" if suggestion is not None
                         else f"unknown setting (known: {', '.join(sorted(known))})")
        self.suggestion = suggestion


def at(where: str, key: str | int) -> str:
    """The path of ``key`` in the table at ``where``, or of entry ``key`` when it is an index."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    shown = shown_key(key)
    return f"{where}.{shown}" if where else shown


def shown_key(key: str) -> str:
    """``key`` as a path shows it: printable ASCII as it is, anything else (and a backslash) as its escape, at most
    :data:`SHOWN_KEY_CHARS` characters of it. Known keys are ASCII, so ``p\\u043elicies`` (a Cyrillic o) reads
    as the other key it is, and no control or bidi character reaches the terminal (:mod:`deputy.display_text`)."""
    if not key:
        return '""'  # an empty key (TOML allows one) still shows as a key
    if len(key) <= SHOWN_KEY_CHARS and key.isascii() and key.isprintable() and "\\" not in key:
        return key
    shown = "".join(c if " " <= c <= "~" and c != "\\" else escape_char(c) for c in key[:SHOWN_KEY_CHARS])
    return shown if len(key) <= SHOWN_KEY_CHARS else f"{shown}… ({len(key)} characters)"


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
    """Every key of the table at ``where`` is one of ``known``; the first that is not raises :class:`UnknownKey`."""
    for key in raw:
        if key not in known:
            raise UnknownKey(at(where, str(key)), known, close_key(str(key), known))


def close_key(key: str, known: Collection[str]) -> str | None:
    """The known key ``key`` was probably meant to be: the same but for case or compatibility forms (``Policies``,
    ``url`` in full-width letters), else the closest ``difflib`` finds close enough; None when nothing is close."""
    folded = unicodedata.normalize("NFKC", key).casefold()
    for name in known:
        if name.casefold() == folded:
            return name
    if len(folded) > 2 * max(map(len, known), default=0):  # far longer than any known key: close to none of them
        return None
    matches = difflib.get_close_matches(folded, sorted(known), n=1)
    return matches[0] if matches else None


def misspelt_variables(environ: Mapping[str, str], prefix: str, known: Collection[str],
                       referenced: Collection[str]) -> list[tuple[str, str]]:
    """Variables of the environment named like one of ``known`` but not it (``DEPUTY_PROT``), with the one probably
    meant. Not errors: the environment holds many variables, and ``referenced`` (those the file reads, like
    ``{env = "DEPUTY_API_KEY"}``) are the operator's own; only a near miss is returned (case aside, difflib's 0.85)."""
    found = []
    for name in environ:
        if name in known or name in referenced or not name.upper().startswith(prefix):
            continue
        meant = [k for k in known if k == name.upper()] or difflib.get_close_matches(name.upper(), sorted(known), 1,
                                                                                      0.85)
        if meant:
            found.append((shown_key(name), meant[0]))
    return found


def secret_variables(value: Any) -> set[str]:
    """The environment variables secrets in ``value`` are read from (``{env = "NAME"}``), at any depth."""
    if isinstance(value, list):
        return set().union(*map(secret_variables, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    own = {value["env"]} if isinstance(value.get("env"), str) else set()
    return own.union(*map(secret_variables, value.values()))


@dataclass(frozen=True, slots=True)
class Table:
    """The keys a kind of table may hold, and the shapes of the values among them that are tables or arrays."""

    keys: frozenset[str]
    nested: Mapping[str, Shape] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entries:
    """An array whose entries are each of one shape (``[[clients]]``, ``witnesses = [{url, vkey}]``)."""

    shape: Shape


@dataclass(frozen=True, slots=True)
class Named:
    """A table whose keys are names the operator chooses, each value of one shape (``[servers.NAME]``,
    ``headers``); the names are checked by the section's reader."""

    shape: Shape


Shape = Table | Entries | Named
# A secret given as a table (:func:`secret_value`): from the environment or from a file; or only the environment.
SECRET = Table(frozenset({"env", "file"}))
ENV_SECRET = Table(frozenset({"env"}))


def check_keys(value: Any, where: str, shape: Shape) -> None:
    """Every key in ``value`` and in the tables within it is one its ``shape`` knows. A value of another type is
    passed over: the section's reader says what it must be."""
    if isinstance(shape, Table) and isinstance(value, dict):
        check_known(value, where, shape.keys)
        for key, inner in shape.nested.items():
            if key in value:
                check_keys(value[key], at(where, key), inner)
    elif isinstance(shape, Entries) and isinstance(value, list):
        for index, entry in enumerate(value):
            check_keys(entry, at(where, index), shape.shape)
    elif isinstance(shape, Named) and isinstance(value, dict):
        for name, entry in value.items():
            check_keys(entry, at(where, str(name)), shape.shape)


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
    if isinstance(spec, dict):
        check_known(spec, where, (SECRET if base_dir is not None else ENV_SECRET).keys)
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
