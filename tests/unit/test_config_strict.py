"""Issue 13, item 4: an unknown key anywhere in deputy.toml stops start-up, naming its full path and the key
probably meant.

Abuse first: keys are any TOML string, so the path an error shows must be safe on a terminal and bounded. Then
every table: those of the commented starter configuration (its examples uncommented), so a new section written
there without a check fails here, and every key each section's module declares.
"""

from __future__ import annotations

import copy
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deputy.config import CONFIG, load_settings
from deputy.config_values import SHOWN_KEY_CHARS, Entries, Named, Shape, Table, UnknownKey, close_key
from deputy.display_text import acts
from deputy.starter import STARTER_CONFIG
from tests.support.config_files import config_error, load

SERVER = '[servers.demo]\nurl = "http://127.0.0.1:9/mcp"\n'


def unknown(tmp_path: Path, text: str) -> UnknownKey:
    error = config_error(tmp_path, text)
    assert isinstance(error, UnknownKey), error
    return error


def shows_safely(error: UnknownKey) -> None:
    assert not any(acts(c) for c in str(error)), repr(str(error))
    assert str(error).isascii() or "…" in str(error)


# --- abuse -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "shown"), [
    ("pol\\u001b[2Jicies", "pol\\x1b[2Jicies"),  # ESC [ 2 J clears a terminal
    ("a\\nb", "a\\nb"),  # a line feed would forge a second line of output
    ("evil\\u202egnp", "evil\\u202egnp"),  # right-to-left override reorders what follows
    ("x\\u0000y", "x\\x00y"),
    ("tab\\there", "tab\\there"),
    ("back\\\\slash", "back\\x5cslash"),  # a literal backslash cannot pass for an escape
    ("zero\\u200bwidth", "zero\\u200bwidth"),
])
def test_a_key_with_acting_characters_is_shown_escaped(tmp_path: Path, key: str, shown: str) -> None:
    error = unknown(tmp_path, f'{SERVER}"{key}" = 1\n')
    assert error.key == f"servers.demo.{shown}"
    shows_safely(error)


def test_a_huge_key_is_cut_in_the_message(tmp_path: Path) -> None:
    error = unknown(tmp_path, f'{SERVER}{"k" * 10_240} = 1\n')
    assert error.key == f"servers.demo.{'k' * SHOWN_KEY_CHARS}… (10240 characters)"
    assert len(str(error)) < 400
    assert error.suggestion is None


def test_a_huge_key_of_escapes_is_cut_too(tmp_path: Path) -> None:
    error = unknown(tmp_path, f'"{chr(0x1b) * 10_000}" = 1\n'.replace(chr(0x1b), "\\u001b") + SERVER)
    assert len(error.key) < 4 * SHOWN_KEY_CHARS + 30
    shows_safely(error)


def test_a_unicode_lookalike_of_a_known_key_is_shown_as_what_it_is(tmp_path: Path) -> None:
    error = unknown(tmp_path, f'{SERVER}"p\u043elicies" = "p"\n')  # a Cyrillic o
    assert error.key == "servers.demo.p\\u043elicies"
    assert error.suggestion == "policies"
    shows_safely(error)


def test_a_full_width_key_suggests_its_ascii_form(tmp_path: Path) -> None:
    error = unknown(tmp_path, '"\uff55\uff52\uff4c" = "http://127.0.0.1:9/mcp"\n' + SERVER)
    assert (error.key, error.suggestion) == ("\\uff55\\uff52\\uff4c", None)  # at the top level: no "url" there
    assert unknown(tmp_path, f'{SERVER}"\uff55\uff52\uff4c" = 1\n').suggestion == "url"


@pytest.mark.parametrize(("text", "key", "meant"), [
    (f"{SERVER}Policies = 'p'\n", "servers.demo.Policies", "policies"),
    (f"PUBLIC_URL = 'https://deputy.example.com'\n{SERVER}", "PUBLIC_URL", "public_url"),
    (f"{SERVER}[Tokens]\ncode_ttl = 30\n", "Tokens", "tokens"),
])
def test_a_key_that_differs_by_case_is_refused_and_named(tmp_path: Path, text: str, key: str, meant: str) -> None:
    error = unknown(tmp_path, text)
    assert (error.key, error.suggestion) == (key, meant)


@pytest.mark.parametrize(("text", "key", "meant"), [
    (f'{SERVER}[audit]\nwitnesses = [{{url = "https://w.example/", vkye = "w+1+AA"}}]\n', "audit.witnesses[0].vkye",
     "vkey"),
    (f'{SERVER}[registration]\ninitial_access_tokens = ["t", {{enw = "X"}}]\n',
     "registration.initial_access_tokens[1].enw", "env"),
    (f'{SERVER}headers = {{X-Api-Key = {{enw = "X"}}}}\n', "servers.demo.headers.X-Api-Key.enw", "env"),
    (f'{SERVER}headers = {{X-Api-Key = {{fiel = "/run/key"}}}}\n', "servers.demo.headers.X-Api-Key.fiel", "file"),
    ('[servers.demo]\ncommand = ["x"]\nenv = {TOKEN = {env = "T", file = "f", path = "p"}}\n',
     "servers.demo.env.TOKEN.path", None),
    (f'{SERVER}[registration]\ntrusted_publishers = [{{issuer = "https://p.example", jwks_fiel = "p.json"}}]\n',
     "registration.trusted_publishers[0].jwks_fiel", "jwks_file"),
    (f'{SERVER}[[delegation.may_act]]\nclient = "a"\nactors = ["b"]\n[[delegation.may_act]]\nclient = "a"\n'
     'actor = ["b"]\n', "delegation.may_act[1].actor", "actors"),
])
def test_a_typo_in_an_inline_table_in_an_array_is_named(tmp_path: Path, text: str, key: str,
                                                          meant: str | None) -> None:
    error = unknown(tmp_path, text)
    assert (error.key, error.suggestion) == (key, meant)


def test_an_initial_access_token_has_no_file_form(tmp_path: Path) -> None:
    error = unknown(tmp_path, f'{SERVER}[registration]\ninitial_access_tokens = [{{file = "t"}}]\n')
    assert error.key == "registration.initial_access_tokens[0].file"


def test_the_typo_is_reported_before_the_error_its_absence_causes(tmp_path: Path) -> None:
    """Without ``url`` the server has no transport: the typo, not that, is what the operator must read."""
    error = unknown(tmp_path, '[servers.demo]\nulr = "http://127.0.0.1:9/mcp"\n[limits]\nmax_connections = 1\n')
    assert (error.key, error.suggestion) == ("servers.demo.ulr", "url")


def test_an_empty_key_is_shown_as_one(tmp_path: Path) -> None:
    assert unknown(tmp_path, f'{SERVER}"" = 1\n').key == 'servers.demo.""'


@pytest.mark.parametrize("name", ["demo\\n", "demo\\u0000"])
def test_a_server_name_with_a_trailing_control_character_is_refused(tmp_path: Path, name: str) -> None:
    """``$`` in the old pattern matched before a final newline: ``demo\\n`` was a server name."""
    error = config_error(tmp_path, f'[servers."{name}"]\nurl = "http://127.0.0.1:9/mcp"\n')
    assert error.key == "servers.demo" + ("\\n" if name.endswith("n") else "\\x00")


def test_a_header_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    error = config_error(tmp_path, f'{SERVER}headers = {{"X-Key\\n" = "v"}}\n')
    assert error.key == "servers.demo.headers.X-Key\\n"


@pytest.mark.parametrize(("name", "shown"), [("A=B", "A=B"), ("A\\u0000B", "A\\x00B"), ("", '""')])
def test_an_environment_variable_name_a_process_cannot_take_is_refused(tmp_path: Path, name: str,
                                                                       shown: str) -> None:
    error = config_error(tmp_path, f'[servers.demo]\ncommand = ["x"]\nenv = {{"{name}" = "v"}}\n')
    assert error.key == f"servers.demo.env.{shown}"


def test_close_key_suggests_nothing_for_what_is_far_from_every_key() -> None:
    assert close_key("zzzz", ("url", "command")) is None
    assert close_key("x" * 100_000, ("url", "command")) is None
    assert close_key("anything", ()) is None


# --- the environment ---------------------------------------------------------------------------------------------

def warnings_for(tmp_path: Path, environ: dict[str, str], caplog: pytest.LogCaptureFixture,
                 text: str = SERVER) -> list[str]:
    with caplog.at_level(logging.WARNING, logger="deputy.config"):
        load(tmp_path, text, environ)  # a warning, never an error: Deputy starts
    return [record.getMessage() for record in caplog.records if record.name == "deputy.config"]


@pytest.mark.parametrize(("name", "meant"), [("DEPUTY_PROT", "DEPUTY_PORT"), ("deputy_port", "DEPUTY_PORT"),
                                             ("DEPUTY_PUBLIC_ULR", "DEPUTY_PUBLIC_URL"),
                                             ("DEPUTY_LOG_LEVELS", "DEPUTY_LOG_LEVEL")])
def test_a_near_miss_of_a_deputy_variable_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          name: str, meant: str) -> None:
    assert warnings_for(tmp_path, {name: "1"}, caplog) == [
        f"environment variable {name} is not one Deputy reads; did you mean {meant}?"]


def test_other_variables_are_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    environ = {"DEPUTY_PORT": "8001", "DEPUTY_UPSTREAM_TOKEN": "t", "PORT": "1", "DEPUTY_PORTS": "x"}
    text = f'{SERVER}headers = {{X-Key = {{env = "DEPUTY_PORTS"}}}}\n'  # read by the file: the operator's own
    assert warnings_for(tmp_path, environ, caplog, text) == []


def test_a_variable_name_is_shown_escaped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    [message] = warnings_for(tmp_path, {"DEPUTY_PORT\x1b": "1"}, caplog)
    assert "DEPUTY_PORT\\x1b is not" in message
    assert not any(acts(c) for c in message)


# --- every table -------------------------------------------------------------------------------------------------

# Tables whose keys are names the operator chooses (a server, a header, a variable, an identity provider), not
# settings.
NAMED_TABLES = {("servers",), ("servers", "*", "headers"), ("servers", "*", "env"), ("approvals", "approver_groups"),
                ("approvals", "approver_subjects")}


def starter_uncommented() -> dict[str, Any]:
    """The starter configuration with each commented-out example that is TOML on its own line made live."""
    lines = []
    for line in STARTER_CONFIG.splitlines():
        if line.startswith("# "):
            try:
                tomllib.loads(line[2:])
            except tomllib.TOMLDecodeError:
                pass  # prose
            else:
                line = line[2:]
        lines.append(line)
    return tomllib.loads("\n".join(lines))


def tables(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every table in ``value`` with its path: tables, entries of arrays, inline tables, entries of named tables."""
    if isinstance(value, dict):
        pattern = ("servers", "*", *path[2:]) if path[:1] == ("servers",) and len(path) > 1 else path
        if pattern not in NAMED_TABLES:
            yield path, value
        for key, inner in value.items():
            yield from tables(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from tables(inner, (*path, index))


def dotted(path: tuple[str | int, ...]) -> str:
    shown = ""
    for part in path:
        shown = f"{shown}[{part}]" if isinstance(part, int) else f"{shown}.{part}" if shown else part
    return shown


def placed(document: dict[str, Any], path: tuple[str | int, ...], key: str) -> dict[str, Any]:
    """A copy of ``document`` with ``key = 1`` added to the table at ``path``."""
    changed = copy.deepcopy(document)
    table: Any = changed
    for part in path:
        table = table[part]
    table[key] = 1
    return changed


def refused(document: dict[str, Any]) -> UnknownKey:
    with pytest.raises(UnknownKey) as info:
        load_settings(None, environ={}, defaults=document)
    return info.value


STARTER = starter_uncommented()
STARTER_TABLES = list(tables(STARTER))


def test_the_starter_has_the_tables_this_test_walks() -> None:
    found = {dotted(path) for path, _ in STARTER_TABLES}
    assert {"", "tokens", "servers.demo", "servers.demo.headers.X-Api-Key", "clients[0]", "audit.witnesses[0]",
            "registration.trusted_publishers[0]", "registration.initial_access_tokens[0]", "delegation.may_act[0]",
            "trusted_issuers[0]", "gateway", "limits", "approvals", "client_documents"} <= found


@pytest.mark.parametrize(("path", "key"), [(path, key) for path, table in STARTER_TABLES for key in table],
                         ids=lambda value: dotted(value) if isinstance(value, tuple) else str(value))
def test_a_typo_of_every_starter_key_is_refused_with_the_key_meant(path: tuple[str | int, ...], key: str) -> None:
    typo = key + key[-1]
    error = refused(placed(STARTER, path, typo))
    assert (error.key, error.suggestion) == (dotted((*path, typo)), key)


@pytest.mark.parametrize("path", [path for path, _ in STARTER_TABLES], ids=lambda path: dotted(path) or "top")
def test_a_key_close_to_nothing_lists_the_known_ones(path: tuple[str | int, ...]) -> None:
    table = dict(STARTER_TABLES)[path]
    error = refused(placed(STARTER, path, "qqqq_zzzz"))
    assert (error.key, error.suggestion) == (dotted((*path, "qqqq_zzzz")), None)
    assert all(known in error.problem for known in table), error.problem


def shaped(shape: Shape) -> Iterator[tuple[tuple[str | int, ...], Table]]:
    """Every table kind in ``shape`` with the path of one place it can stand."""
    if isinstance(shape, Table):
        yield (), shape
        for key, inner in shape.nested.items():
            yield from (((key, *path), table) for path, table in shaped(inner))
    else:
        step: str | int = 0 if isinstance(shape, Entries) else "some-name"
        assert isinstance(shape, Entries | Named)
        yield from (((step, *path), table) for path, table in shaped(shape.shape))


def document_at(path: tuple[str | int, ...], key: str) -> dict[str, Any]:
    """The least document with a table at ``path`` holding ``key``."""
    inner: Any = {key: 1}
    for part in reversed(path):
        inner = [inner] if isinstance(part, int) else {part: inner}
    return dict(inner)


@pytest.mark.parametrize(("path", "key"), [(path, key) for path, table in shaped(CONFIG) for key in sorted(table.keys)],
                         ids=lambda value: dotted(value) if isinstance(value, tuple) else str(value))
def test_a_typo_of_every_declared_key_is_refused_with_the_key_meant(path: tuple[str | int, ...], key: str) -> None:
    typo = key + key[-1]
    error = refused(document_at(path, typo))
    assert (error.key, error.suggestion) == (dotted((*path, typo)), key)


def test_every_section_of_the_file_has_a_shape() -> None:
    """A top-level key whose value is a table must declare its keys (CONFIG.nested), or a typo in it goes by."""
    for key, value in STARTER.items():
        tables = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))
        if tables:  # a list of strings (trusted_proxies) is a value, not a section
            assert key in CONFIG.nested, key
