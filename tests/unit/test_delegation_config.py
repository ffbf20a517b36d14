"""``[delegation]``, ``[[trusted_issuers]]`` and the upstream settings token exchange brought:
every bad value names its key (``ConfigError.key``), good values are read as written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, OctKey

from deputy.config import ConfigError, Settings, load_settings
from deputy.delegation_rules import DelegationRules, MayActRule

PUBLIC_URL = "https://deputy.example.com"
BASE = f'''
public_url = "{PUBLIC_URL}"

[servers.demo]
url = "http://127.0.0.1:9000/mcp"
'''
ISSUER_KEY = ECKey.generate_key("P-256", parameters={"kid": "idp-1"}, private=True)


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "deputy.toml"
    path.write_text(BASE + text)
    return load_settings(path, environ=environ or {})


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


def issuer_jwks(tmp_path: Path, name: str = "idp.jwks.json") -> str:
    (tmp_path / name).write_text(json.dumps({"keys": [ISSUER_KEY.as_dict(private=False)]}))
    return name


# --- [delegation] ---------------------------------------------------------------------------------


def test_delegation_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.delegation == DelegationRules(max_depth=4, token_ttl=300, may_act=())
    assert settings.delegation.actors_for("anyone") == ()
    assert settings.trusted_issuers == ()


def test_delegation_values(tmp_path: Path) -> None:
    settings = load(tmp_path, '''
[delegation]
max_depth = 2
token_ttl = 120

[[delegation.may_act]]
client = "test-public"
actors = ["agent-a", "agent-b"]

[[delegation.may_act]]
client = "*"
actors = ["auditor", "agent-a"]

[[delegation.may_act]]
client = "agent-a"
actors = ["agent-b"]
''')
    policy = settings.delegation
    assert (policy.max_depth, policy.token_ttl) == (2, 120)
    assert policy.may_act == (MayActRule("test-public", ("agent-a", "agent-b")),
                              MayActRule("*", ("auditor", "agent-a")), MayActRule("agent-a", ("agent-b",)))
    assert policy.actors_for("test-public") == ("agent-a", "agent-b", "auditor")  # in rule order, once each
    assert policy.actors_for("agent-a") == ("auditor", "agent-a", "agent-b")
    assert policy.actors_for("someone-else") == ("auditor", "agent-a")


@pytest.mark.parametrize(("setting", "key"), [
    ("max_depth = 0", "delegation.max_depth"),
    ("max_depth = 17", "delegation.max_depth"),
    ('max_depth = "4"', "delegation.max_depth"),
    ("max_depth = true", "delegation.max_depth"),
    ("max_depth = 2.0", "delegation.max_depth"),
    ("token_ttl = 9", "delegation.token_ttl"),
    ("token_ttl = 3601", "delegation.token_ttl"),
    ("token_ttl = -300", "delegation.token_ttl"),
    ('token_ttl = "5m"', "delegation.token_ttl"),
    ("max_deph = 3", "delegation.max_deph"),
    ("may_act = 3", "delegation.may_act"),
    ('may_act = {client = "a", actors = ["b"]}', "delegation.may_act"),
])
def test_bad_delegation_value_names_its_key(tmp_path: Path, setting: str, key: str) -> None:
    error = config_error(tmp_path, f"[delegation]\n{setting}\n")
    assert error.key == key
    assert key in str(error)


def test_delegation_that_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "deputy.toml"
    path.write_text("delegation = 4\n" + BASE)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == "delegation"


@pytest.mark.parametrize(("rule", "key"), [
    ('client = "a"', "delegation.may_act[0]"),
    ('actors = ["b"]', "delegation.may_act[0]"),
    ('client = "a"\nactors = ["b"]\nscope = "demo:tools"', "delegation.may_act[0].scope"),  # unknown key
    ('client = ""\nactors = ["b"]', "delegation.may_act[0].client"),
    ('client = 7\nactors = ["b"]', "delegation.may_act[0].client"),
    ('client = "a"\nactors = []', "delegation.may_act[0].actors"),
    ('client = "a"\nactors = "b"', "delegation.may_act[0].actors"),
    ('client = "a"\nactors = ["b", ""]', "delegation.may_act[0].actors[1]"),
    ('client = "a"\nactors = ["b", 3]', "delegation.may_act[0].actors[1]"),
])
def test_bad_may_act_rule_names_its_key(tmp_path: Path, rule: str, key: str) -> None:
    assert config_error(tmp_path, f"[[delegation.may_act]]\n{rule}\n").key == key


def test_bad_second_may_act_rule_names_its_index(tmp_path: Path) -> None:
    error = config_error(tmp_path, '''
[[delegation.may_act]]
client = "a"
actors = ["b"]

[[delegation.may_act]]
client = "b"
actors = []
''')
    assert error.key == "delegation.may_act[1].actors"


# --- [[trusted_issuers]] --------------------------------------------------------------------------


def test_trusted_issuer_with_a_key_file(tmp_path: Path) -> None:
    """``jwks_file`` is relative to the configuration file; audience and algorithms have defaults."""
    settings = load(tmp_path, f'''
[[trusted_issuers]]
issuer = "https://idp.example.com"
jwks_file = "{issuer_jwks(tmp_path)}"
accept = ["subject_token", "workload"]
''')
    (issuer,) = settings.trusted_issuers
    assert issuer.issuer == "https://idp.example.com"
    assert issuer.audience == PUBLIC_URL
    assert issuer.algorithms == ("ES256", "RS256")
    assert issuer.purposes == frozenset({"subject_token", "workload"})
    assert issuer.jwks == {"keys": [ISSUER_KEY.as_dict(private=False)]}
    assert issuer.jwks_uri is None


def test_trusted_issuer_with_a_jwks_uri(tmp_path: Path) -> None:
    settings = load(tmp_path, '''
[[trusted_issuers]]
issuer = "https://idp.example.com"
jwks_uri = "https://idp.example.com/jwks"
audience = "deputy"
algorithms = ["EdDSA", "PS256"]
accept = ["id_jag"]
''')
    (issuer,) = settings.trusted_issuers
    assert (issuer.jwks_uri, issuer.jwks, issuer.audience) == ("https://idp.example.com/jwks", None, "deputy")
    assert issuer.algorithms == ("EdDSA", "PS256")
    assert issuer.purposes == frozenset({"id_jag"})


def _issuer(keys: str, extra: str = 'accept = ["subject_token"]', issuer: str = "https://idp.example.com") -> str:
    return f'[[trusted_issuers]]\nissuer = "{issuer}"\n{keys}\n{extra}\n'


@pytest.mark.parametrize(("extra", "key"), [
    ("", "trusted_issuers[0].accept"),
    ("accept = []", "trusted_issuers[0].accept"),
    ('accept = "subject_token"', "trusted_issuers[0].accept"),
    ('accept = ["login"]', "trusted_issuers[0].accept[0]"),
    ('accept = ["subject_token", "SUBJECT_TOKEN"]', "trusted_issuers[0].accept[1]"),
    ('accept = ["workload"]\nalgorithms = ["HS256"]', "trusted_issuers[0].algorithms[0]"),
    ('accept = ["workload"]\nalgorithms = ["ES256", "HS512"]', "trusted_issuers[0].algorithms[1]"),
    ('accept = ["workload"]\nalgorithms = ["none"]', "trusted_issuers[0].algorithms[0]"),
    ('accept = ["workload"]\nalgorithms = []', "trusted_issuers[0].algorithms"),
    ('accept = ["workload"]\naudience = ""', "trusted_issuers[0].audience"),
    ('accept = ["workload"]\naudience = ["a", "b"]', "trusted_issuers[0].audience"),
    ('accept = ["workload"]\nkeys = "x"', "trusted_issuers[0].keys"),
])
def test_bad_trusted_issuer_value_names_its_key(tmp_path: Path, extra: str, key: str) -> None:
    error = config_error(tmp_path, _issuer('jwks_uri = "https://idp.example.com/jwks"', extra))
    assert error.key == key


def test_trusted_issuer_keys_exactly_one_source(tmp_path: Path) -> None:
    both = _issuer(f'jwks_uri = "https://idp.example.com/jwks"\njwks_file = "{issuer_jwks(tmp_path)}"')
    assert config_error(tmp_path, both).key == "trusted_issuers[0]"
    assert config_error(tmp_path, _issuer("")).key == "trusted_issuers[0]"


@pytest.mark.parametrize("uri", ["ftp://idp.example.com/jwks", "/jwks.json", "https://", "idp.example.com/jwks"])
def test_trusted_issuer_jwks_uri_must_be_http(tmp_path: Path, uri: str) -> None:
    assert config_error(tmp_path, _issuer(f'jwks_uri = "{uri}"')).key == "trusted_issuers[0].jwks_uri"


@pytest.mark.parametrize("content", [
    None,  # no such file
    "not json",
    json.dumps({"keys": []}),
    json.dumps({"keys": [OctKey.generate_key(256).as_dict()]}),
    json.dumps({"keys": [ECKey.generate_key("P-256", private=True).as_dict(private=True)]}),
], ids=["missing", "not json", "no keys", "symmetric key", "private key"])
def test_trusted_issuer_bad_jwks_file(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "idp.jwks.json").write_text(content)
    error = config_error(tmp_path, _issuer('jwks_file = "idp.jwks.json"'))
    assert error.key == "trusted_issuers[0].jwks_file"


def test_trusted_issuer_needs_an_issuer(tmp_path: Path) -> None:
    text = '[[trusted_issuers]]\njwks_uri = "https://idp.example.com/jwks"\naccept = ["workload"]\n'
    assert config_error(tmp_path, text).key == "trusted_issuers[0].issuer"


def test_trusted_issuer_appears_once(tmp_path: Path) -> None:
    text = _issuer('jwks_uri = "https://idp.example.com/jwks"') * 2
    assert config_error(tmp_path, text).key == "trusted_issuers"


def test_deputy_is_not_its_own_trusted_issuer(tmp_path: Path) -> None:
    text = _issuer('jwks_uri = "https://idp.example.com/jwks"', issuer=PUBLIC_URL)
    assert config_error(tmp_path, text).key == "trusted_issuers"


def test_bad_second_trusted_issuer_names_its_index(tmp_path: Path) -> None:
    text = (_issuer('jwks_uri = "https://idp.example.com/jwks"')
            + _issuer('jwks_uri = "https://other.example.com/jwks"', 'accept = ["everything"]',
                      issuer="https://other.example.com"))
    assert config_error(tmp_path, text).key == "trusted_issuers[1].accept[0]"


def test_trusted_issuers_must_be_an_array_of_tables(tmp_path: Path) -> None:
    text = '[trusted_issuers]\nissuer = "https://idp.example.com"\n'
    assert config_error(tmp_path, text).key == "trusted_issuers"


# --- upstream credentials -------------------------------------------------------------------------


def test_exchange_credentials_on_a_stdio_server_are_refused(tmp_path: Path) -> None:
    error = config_error(tmp_path, f'''
[servers.local]
command = {json.dumps([sys.executable, "-m", "deputy.demo", "--stdio"])}
credentials = "exchange"
''')
    assert error.key == "servers.local.credentials"


def test_exchange_credentials_on_an_http_server(tmp_path: Path) -> None:
    settings = load(tmp_path, '''
[servers.minted]
url = "https://upstream.example.com/mcp/"
credentials = "exchange"

[servers.named]
url = "https://upstream.example.com/mcp"
credentials = "exchange"
upstream_audience = "urn:upstream"
''')
    assert settings.servers["minted"].credentials == "exchange"
    assert settings.servers["minted"].upstream_audience == "https://upstream.example.com/mcp"
    assert settings.servers["named"].upstream_audience == "urn:upstream"
    assert settings.servers["demo"].upstream_audience is None


@pytest.mark.parametrize(("server", "key"), [
    ('credentials = "passthrough"', "servers.up.credentials"),
    ('credentials = "static"', "servers.up.credentials"),  # static without headers
    ('upstream_audience = "urn:upstream"', "servers.up.upstream_audience"),  # without exchange
    ('credentials = "exchange"\nupstream_audience = ""', "servers.up.upstream_audience"),
    ('credentials = "exchange"\nheaders = {X-Api-Key = "k"}', "servers.up.credentials"),
])
def test_bad_upstream_credentials_name_their_key(tmp_path: Path, server: str, key: str) -> None:
    error = config_error(tmp_path, f'[servers.up]\nurl = "https://upstream.example.com/mcp"\n{server}\n')
    assert error.key == key


def test_secret_header_from_a_file(tmp_path: Path) -> None:
    """``{file = ...}``: the file's one line (its newline dropped) is the header value; credentials are static."""
    secret = tmp_path / "api-key"
    secret.write_text("s3cret-value\n")
    settings = load(tmp_path, f'''
[servers.up]
url = "https://upstream.example.com/mcp"
headers = {{X-Api-Key = {{file = "{secret}"}}, X-Tenant = "acme"}}
''')
    server = settings.servers["up"]
    assert dict(server.headers) == {"X-Api-Key": "s3cret-value", "X-Tenant": "acme"}
    assert server.credentials == "static"


def test_secret_header_file_is_found_next_to_the_configuration(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative ``{file = ...}`` is relative to deputy.toml, as ``jwks_file`` is, not to the working directory."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api-key").write_text("beside-the-config\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load(tmp_path, '''
[servers.up]
url = "https://upstream.example.com/mcp"
headers = {X-Api-Key = {file = "secrets/api-key"}}
''')
    assert dict(settings.servers["up"].headers) == {"X-Api-Key": "beside-the-config"}


def test_secret_header_from_the_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, '''
[servers.up]
url = "https://upstream.example.com/mcp"
headers = {X-Api-Key = {env = "UP_KEY"}}
''', environ={"UP_KEY": "from-env"})
    assert dict(settings.servers["up"].headers) == {"X-Api-Key": "from-env"}


@pytest.mark.parametrize("content", [None, "", "\n", "line one\nline two\n", b"\xff\xfe"],
                         ids=["missing", "empty", "newline only", "two lines", "not text"])
def test_bad_secret_header_file_names_the_header(tmp_path: Path, content: str | bytes | None) -> None:
    secret = tmp_path / "api-key"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    error = config_error(tmp_path, f'''
[servers.up]
url = "https://upstream.example.com/mcp"
headers = {{X-Api-Key = {{file = "{secret}"}}}}
''')
    assert error.key == "servers.up.headers.X-Api-Key"


@pytest.mark.parametrize("spec", ['{file = 7}', '{file = "/x", env = "Y"}', "7"])  # {path}: test_config_strict
def test_secret_header_of_another_shape_names_the_header(tmp_path: Path, spec: str) -> None:
    error = config_error(tmp_path, f'''
[servers.up]
url = "https://upstream.example.com/mcp"
headers = {{X-Api-Key = {spec}}}
''')
    assert error.key == "servers.up.headers.X-Api-Key"


@pytest.mark.parametrize("header", ["Authorization", "Host", "Cookie", "X Bad"])
def test_headers_deputy_may_not_set_upstream(tmp_path: Path, header: str) -> None:
    error = config_error(tmp_path, f'''
[servers.up]
url = "https://upstream.example.com/mcp"
headers = {{"{header}" = "v"}}
''')
    assert error.key == f"servers.up.headers.{header}"


# --- clients that exchange ------------------------------------------------------------------------


def test_public_client_cannot_be_registered_for_token_exchange(tmp_path: Path) -> None:
    error = config_error(tmp_path, '''
[[clients]]
client_id = "public-agent"
redirect_uris = ["http://127.0.0.1:9/cb"]
grant_types = ["authorization_code", "urn:ietf:params:oauth:grant-type:token-exchange"]
''')
    assert error.key == "clients[0].grant_types"
