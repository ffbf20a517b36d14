"""Issue 17, item 4 (one configuration vocabulary): a bad value in any section of ``deputy.toml`` stops start-up
with one error type, :class:`ConfigError`, whose key is the value's full path (tables joined by dots, array
entries by index), and the CLI prints that path. Values that were wrong but escaped as another exception
(``ValueError``, ``TypeError``) or with a partial path now carry the path too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from deputy.cli import app
from deputy.config import ConfigError, Settings
from deputy.limits import LimitSettings
from tests.support import config_files as support
from tests.support.config_files import config_file

PUBLIC_URL = 'public_url = "https://deputy.example.com"\n'
SERVER = '[servers.demo]\nurl = "http://127.0.0.1:9000/mcp"\n'
CLIENT = '[[clients]]\nclient_id = "a"\nredirect_uris = ["http://localhost/cb"]\n'
ISSUER = '[[trusted_issuers]]\nissuer = "https://idp.example.com"\njwks_uri = "https://idp.example.com/jwks"\n'


def write(tmp_path: Path, text: str) -> Path:
    """``text`` between the public URL and the one server: its top-level keys first, then its tables."""
    return config_file(tmp_path, PUBLIC_URL + text + SERVER)


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return support.load(tmp_path, PUBLIC_URL + text + SERVER, environ)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    return support.config_error(tmp_path, PUBLIC_URL + text + SERVER, environ)


@pytest.mark.parametrize(("text", "path"), [
    # [audit]
    ("[audit]\nappend_timeout_ms = 50\n", "audit.append_timeout_ms"),
    ('[audit]\nbatch_max = "10"\n', "audit.batch_max"),
    ('[audit]\narguments = "drop"\n', "audit.arguments"),
    ("[audit]\norign = 1\n", "audit.orign"),
    ('[[audit.witnesses]]\nurl = "ftp://w.example"\nvkey = "x"\n', "audit.witnesses[0].url"),
    ('[[audit.witnesses]]\nurl = "https://w.example"\nvkey = "nope"\n', "audit.witnesses[0].vkey"),
    ("audit = 3\n", "audit"),
    # [limits]
    ("[limits]\nmax_connections = 15\n", "limits.max_connections"),
    ("[limits]\nheader_timeout = true\n", "limits.header_timeout"),
    ("[limits]\nstdio_sessions_per_user = 9\nstdio_sessions_per_server = 8\n", "limits.stdio_sessions_per_user"),
    ("[limits]\nmax_conections = 100\n", "limits.max_conections"),
    ("limits = 3\n", "limits"),
    # [[clients]]
    (CLIENT + CLIENT + CLIENT.replace('"http://localhost/cb"', '"https://ok.example/cb", 7'),
     "clients[2].redirect_uris[1]"),
    (CLIENT + 'grant_types = ["authorization_code", "password"]\n', "clients[0].grant_types[1]"),
    (CLIENT + 'token_endpoint_auth_method = "private_key_jwt"\njwks = {keys = [{kty = "oct", k = "c2VjcmV0"}]}\n',
     "clients[0].jwks.keys[0]"),
    (CLIENT + "client_name = 5\n", "clients[0].client_name"),
    ("clients = 3\n", "clients"),
    # [delegation]
    ("[delegation]\nmax_depth = 17\n", "delegation.max_depth"),
    ('[[delegation.may_act]]\nclient = "a"\nactors = ["b", ""]\n', "delegation.may_act[0].actors[1]"),
    # [[trusted_issuers]]
    (ISSUER + 'accept = ["workload", "login"]\n', "trusted_issuers[0].accept[1]"),
    (ISSUER + 'accept = ["workload"]\njwks_refresh_seconds = 0\n', "trusted_issuers[0].jwks_refresh_seconds"),
    # [registration] and [client_documents]
    ('[registration]\nmode = "open"\n', "registration.mode"),
    ('[registration]\nallowed_redirect_hosts = ["a.example", ""]\n', "registration.allowed_redirect_hosts[1]"),
    ('[registration]\ninitial_access_tokens = ["t", ""]\n', "registration.initial_access_tokens[1]"),
    ("[registration]\n[[registration.trusted_publishers]]\nissuer = 5\n", "registration.trusted_publishers[0]"),
    ('[client_documents]\nenabled = "yes"\n', "client_documents.enabled"),
    ("[client_documents]\nmax_bytes = 100\n", "client_documents.max_bytes"),
    ("[client_documents]\ncache_min_seconds = 100\ncache_max_seconds = 10\n", "client_documents.cache_min_seconds"),
    # [servers.NAME]
    ('[servers.up]\nurl = "https://up.example/mcp"\nscopes = ["up:read", "up write"]\n', "servers.up.scopes[1]"),
    ('[servers.up]\nurl = "https://up.example/mcp"\ncredentials = "passthrough"\n', "servers.up.credentials"),
    ('[servers.up]\nurl = "https://up.example/mcp"\nheaders = {Host = "x"}\n', "servers.up.headers.Host"),
    ('[servers.up]\ncommand = ["up", 3]\n', "servers.up.command[1]"),
    # the rest: [tokens], [gateway], [approvals]
    ("[tokens]\ncode_ttl = 61\n", "tokens.code_ttl"),
    ('[gateway]\nallowed_origins = ["https://a.example", "b.example"]\n', "gateway.allowed_origins[1]"),
    ('[approvals]\napprovers = ["alice", 3]\n', "approvals.approvers[1]"),
    ("tokens = 3\n", "tokens"),
])
def test_a_bad_value_in_each_section_is_a_config_error_naming_its_full_path(tmp_path: Path, text: str,
                                                                            path: str) -> None:
    error = config_error(tmp_path, text)
    assert error.key == path
    assert str(error).startswith(f"configuration error: {path}: ")


@pytest.mark.parametrize(("text", "environ", "path"), [
    # dict("x") raised a bare ValueError
    ('[servers.up]\nurl = "https://up.example/mcp"\nheaders = "X-Api-Key"\n', {}, "servers.up.headers"),
    ('[servers.up]\ncommand = ["up"]\nenv = "TOKEN"\n', {}, "servers.up.env"),
    # urlsplit raised a bare ValueError on an unclosed IPv6 bracket
    ('[servers.up]\nurl = "http://[::1/mcp"\n', {}, "servers.up.url"),
    ('[[audit.witnesses]]\nurl = "https://[::1"\nvkey = "x"\n', {}, "audit.witnesses[0].url"),
    ('[gateway]\nallowed_origins = ["http://[::1"]\n', {}, "gateway.allowed_origins[0]"),
    # Path(5) raised TypeError
    ("[registration]\n[[registration.trusted_publishers]]\nissuer = \"https://p.example\"\njwks_file = 5\n", {},
     "registration.trusted_publishers[0].jwks_file"),
    # int("--5") raised a bare ValueError
    ("", {"DEPUTY_PORT": "--5"}, "port"),
    # LimitsError named the table "limits." (a trailing dot)
    ("limits = []\n", {}, "limits"),
])
def test_what_escaped_as_another_error_is_a_config_error_with_its_path(tmp_path: Path, text: str,
                                                                       environ: dict[str, str], path: str) -> None:
    """Issue 17: these were ValueError/TypeError with no path (or a wrong one), not ConfigError."""
    assert config_error(tmp_path, text, environ).key == path


def test_a_scope_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    """Issue 17: the scope-token pattern ended in ``$``, which also matches before a final newline, so
    ``"up:read\\n"`` was accepted as a scope (and would reach metadata and WWW-Authenticate headers)."""
    text = '[servers.up]\nurl = "https://up.example/mcp"\nscopes = ["up:read\\n"]\n'
    assert config_error(tmp_path, text).key == "servers.up.scopes[0]"


def test_a_boolean_is_not_a_number_of_seconds(tmp_path: Path) -> None:
    """Issue 17: ``revocation_max_staleness = true`` was read as 1 second (bool is an int in Python)."""
    assert config_error(tmp_path, "[gateway]\nrevocation_max_staleness = true\n").key \
        == "gateway.revocation_max_staleness"


def test_a_bad_key_in_a_jwks_file_names_the_file_key_and_the_key_index(tmp_path: Path) -> None:
    good = ECKey.generate_key("P-256", private=True)
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [good.as_dict(private=False), good.as_dict(private=True)]}))
    text = ISSUER.replace('jwks_uri = "https://idp.example.com/jwks"', 'jwks_file = "keys.json"') \
        + 'accept = ["workload"]\n'
    error = config_error(tmp_path, text)
    assert error.key == "trusted_issuers[0].jwks_file"
    assert error.problem.startswith("key 1: ") and "private key material" in error.problem


def test_good_values_in_each_section_are_read_as_written(tmp_path: Path) -> None:
    """The readers changed, not what they accept: the same values give the same settings."""
    settings = load(tmp_path, '''
port = "8080"
[audit]
append_timeout_ms = 250
[limits]
max_connections = 100
header_timeout = 2
[tokens]
code_ttl = "30"
[gateway]
revocation_max_staleness = 1
policy_watch_seconds = 0
allowed_origins = ["https://app.example.com"]
[approvals]
ttl = 60
approvers = ["alice"]
[registration]
mode = "off"
initial_access_tokens = [{env = "IAT"}]
[client_documents]
enabled = false
timeout_seconds = 1
[servers.up]
command = ["up", ""]
scopes = ["up:read", "up:write"]
''', environ={"IAT": "token-1"})
    assert settings.port == 8080 and settings.code_ttl == 30
    assert settings.audit.append_timeout_ms == 250
    assert settings.limits == LimitSettings(max_connections=100, header_timeout=2.0)
    assert (settings.revocation_max_staleness, settings.policy_watch_seconds) == (1.0, 0.0)
    assert settings.allowed_origins == ("https://app.example.com",)
    assert (settings.approvals.ttl, settings.approvals.approvers) == (60, ("alice",))
    assert settings.registration.mode == "off"
    assert settings.registration.initial_access_tokens == ("token-1",)
    assert (settings.client_documents.enabled, settings.client_documents.timeout_seconds) == (False, 1.0)
    assert settings.servers["up"].command == ("up", "")
    assert settings.servers["up"].required_scopes == ("up:read",)


def test_the_cli_prints_the_full_path_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[audit]\nappend_timeout_ms = 50\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    printed = " ".join(result.output.split())  # the console wraps long lines
    assert "configuration error: audit.append_timeout_ms: must be an integer from 100 to 600000, got 50" in printed
