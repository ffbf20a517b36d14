"""Settings: deputy.toml plus DEPUTY_* overrides, and every bad value naming its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deputy.config import (
    ConfigError,
    canonical_resource,
    is_loopback_http,
    load_settings,
)
from tests.support.config_files import config_error, config_file, load

MINIMAL = """
[servers.demo]
url = "http://127.0.0.1:9000/mcp"
"""


# --- defaults and overrides ---------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL)
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.data_dir == Path(".deputy")
    assert settings.database_url == f"sqlite+aiosqlite:///{(Path('.deputy') / 'deputy.db').resolve()}"
    assert settings.access_token_ttl == 600
    assert settings.refresh_token_ttl == 14 * 24 * 3600
    assert settings.code_ttl == 60
    assert settings.clock_leeway == 30
    assert settings.registration.mode == "loopback"
    assert settings.revocation_max_staleness == 5.0
    assert settings.allowed_origins == ()
    assert settings.clients == ()
    assert settings.secure_cookies is False
    demo = settings.servers["demo"]
    assert demo.resource == "http://127.0.0.1:8000/mcp/demo"
    assert demo.url == "http://127.0.0.1:9000/mcp"
    assert demo.command is None
    assert demo.scopes == ("demo:tools",)
    assert demo.required_scopes == ("demo:tools",)
    assert demo.title == "demo"
    assert settings.all_scopes == ("demo:tools",)


def test_file_values(tmp_path: Path) -> None:
    settings = load(tmp_path, """
public_url = "https://deputy.example.com"
port = 9443
[tokens]
access_token_ttl = 300
[registration]
mode = "off"
[servers.files]
command = ["python", "-m", "files"]
scopes = ["files:read", "files:write"]
required_scopes = ["files:read"]
env = { TOKEN = { env = "FILES_TOKEN" }, LITERAL = "x" }
[servers.web]
url = "https://upstream.example.com/mcp/"
headers = { X-Api-Key = { env = "WEB_KEY" } }
[[clients]]
client_id = "cli"
redirect_uris = ["http://localhost/cb"]
token_endpoint_auth_method = "client_secret_basic"
client_secret = "s3cret"
""", {"FILES_TOKEN": "ft", "WEB_KEY": "wk", "PATH": "/bin", "UNRELATED": "no"})
    assert settings.public_url == "https://deputy.example.com"
    assert settings.secure_cookies is True
    assert settings.port == 9443
    assert settings.access_token_ttl == 300
    assert settings.registration.mode == "off"
    files = settings.servers["files"]
    assert files.command == ("python", "-m", "files")
    assert files.resource == "https://deputy.example.com/mcp/files"
    assert dict(files.env) == {"PATH": "/bin", "TOKEN": "ft", "LITERAL": "x"}
    assert files.required_scopes == ("files:read",)
    web = settings.servers["web"]
    assert web.url == "https://upstream.example.com/mcp"
    assert dict(web.headers) == {"X-Api-Key": "wk"}
    assert dict(web.env) == {}
    assert settings.all_scopes == ("files:read", "files:write", "web:tools")
    (client,) = settings.clients
    assert client.client_id == "cli"
    assert client.client_name == "cli"
    assert client.client_secret == "s3cret"


def test_env_overrides(tmp_path: Path) -> None:
    text = 'public_url = "https://file.example.com"\nport = 1234\n' + MINIMAL
    data_dir = tmp_path / "data"
    settings = load(tmp_path, text, {
        "DEPUTY_PUBLIC_URL": "https://env.example.com",
        "DEPUTY_PORT": "8443",
        "DEPUTY_DATA_DIR": str(data_dir),
    })
    assert settings.public_url == "https://env.example.com"
    assert settings.servers["demo"].resource == "https://env.example.com/mcp/demo"
    assert settings.port == 8443
    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite+aiosqlite:///{(data_dir / 'deputy.db').resolve()}"


def test_default_public_url_follows_listen_address(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL, {"DEPUTY_PORT": "8123"})
    assert settings.port == 8123
    assert settings.public_url == "http://127.0.0.1:8123"
    assert settings.servers["demo"].resource == "http://127.0.0.1:8123/mcp/demo"


@pytest.mark.parametrize(("host", "public_url"), [
    ("0.0.0.0", "http://127.0.0.1:8000"),
    ("::", "http://127.0.0.1:8000"),
    ("::1", "http://[::1]:8000"),
    ("localhost", "http://localhost:8000"),
])
def test_default_public_url_for_listen_host(tmp_path: Path, host: str, public_url: str) -> None:
    settings = load(tmp_path, MINIMAL, {"DEPUTY_HOST": host})
    assert settings.host == host
    assert settings.public_url == public_url


def test_non_loopback_listen_host_needs_public_url(tmp_path: Path) -> None:
    assert config_error(tmp_path, MINIMAL, {"DEPUTY_HOST": "10.0.0.1"}).key == "public_url"


def test_env_database_url(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://deputy@db.internal/deputy"
    settings = load(tmp_path, MINIMAL, {"DEPUTY_DATABASE_URL": url, "DEPUTY_DATA_DIR": str(tmp_path)})
    assert settings.database_url == url
    assert settings.data_dir == tmp_path


def test_empty_env_value_does_not_override(tmp_path: Path) -> None:
    settings = load(tmp_path, "port = 1234\n" + MINIMAL, {"DEPUTY_PORT": ""})
    assert settings.port == 1234


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = config_file(tmp_path, "port = 4321\n" + MINIMAL)
    assert load_settings(None, environ={"DEPUTY_CONFIG": str(path)}).port == 4321


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "absent.toml", environ={})
    assert info.value.key == "DEPUTY_CONFIG"


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize("public_url", [
    "http://127.0.0.1:8000/",
    "https://deputy.example.com/",
    "https://deputy.example.com/deputy",
    "https://deputy.example.com?x=1",
    "https://deputy.example.com#frag",
    "http://deputy.example.com",
    "http://10.0.0.1:8000",
    "not a url",
    "deputy.example.com",
    "ftp://deputy.example.com",
    "",
])
def test_bad_public_url(tmp_path: Path, public_url: str) -> None:
    assert config_error(tmp_path, f'public_url = "{public_url}"\n' + MINIMAL).key == "public_url"


def test_bad_public_url_from_environment(tmp_path: Path) -> None:
    error = config_error(tmp_path, MINIMAL, {"DEPUTY_PUBLIC_URL": "http://deputy.example.com"})
    assert error.key == "public_url"


@pytest.mark.parametrize("port", ["-1", "65536", "100000", '"http"', "true", "80.5"])
def test_port_out_of_range_or_not_integer(tmp_path: Path, port: str) -> None:
    assert config_error(tmp_path, f"port = {port}\n" + MINIMAL).key == "port"


@pytest.mark.parametrize("port", ["65536", "-5", "eighty"])
def test_bad_port_from_environment(tmp_path: Path, port: str) -> None:
    assert config_error(tmp_path, MINIMAL, {"DEPUTY_PORT": port}).key == "port"


@pytest.mark.parametrize("port", ["0", "65535"])
def test_port_bounds_accepted(tmp_path: Path, port: str) -> None:
    assert load(tmp_path, MINIMAL, {"DEPUTY_PORT": port}).port == int(port)


def test_servers_missing(tmp_path: Path) -> None:
    assert config_error(tmp_path, 'public_url = "https://deputy.example.com"\n').key == "servers"


def test_servers_empty_table(tmp_path: Path) -> None:
    assert config_error(tmp_path, "[servers]\n").key == "servers"


def test_server_with_url_and_command(tmp_path: Path) -> None:
    error = config_error(tmp_path, '[servers.demo]\nurl = "http://127.0.0.1:9000"\ncommand = ["x"]\n')
    assert error.key == "servers.demo"


def test_server_with_neither_url_nor_command(tmp_path: Path) -> None:
    assert config_error(tmp_path, '[servers.demo]\ntitle = "Demo"\n').key == "servers.demo"


@pytest.mark.parametrize("name", ["Demo", "-demo", "de mo", "de.mo", "x" * 64])
def test_bad_server_name(tmp_path: Path, name: str) -> None:
    error = config_error(tmp_path, f'[servers."{name}"]\nurl = "http://127.0.0.1:9000"\n')
    assert error.key == f"servers.{name}"


def test_bad_server_url(tmp_path: Path) -> None:
    assert config_error(tmp_path, '[servers.demo]\nurl = "file:///etc/passwd"\n').key == "servers.demo.url"


@pytest.mark.parametrize(("command", "key"), [
    ("[]", "servers.demo.command"),
    ('"python server.py"', "servers.demo.command"),
    ("[1, 2]", "servers.demo.command[0]"),
    ('["python", 2]', "servers.demo.command[1]"),
])
def test_bad_server_command(tmp_path: Path, command: str, key: str) -> None:
    assert config_error(tmp_path, f"[servers.demo]\ncommand = {command}\n").key == key


def test_required_scopes_not_a_subset(tmp_path: Path) -> None:
    error = config_error(tmp_path, MINIMAL + 'scopes = ["a"]\nrequired_scopes = ["a", "b"]\n')
    assert error.key == "servers.demo.required_scopes"


def test_scope_with_illegal_character(tmp_path: Path) -> None:
    assert config_error(tmp_path, MINIMAL + 'scopes = ["a b"]\n').key == "servers.demo.scopes[0]"
    assert config_error(tmp_path, MINIMAL + 'scopes = "a"\n').key == "servers.demo.scopes"


@pytest.mark.parametrize("header", ["Authorization", "authorization", "Host", "Cookie", "Content-Length"])
def test_forbidden_upstream_header(tmp_path: Path, header: str) -> None:
    error = config_error(tmp_path, MINIMAL + f'headers = {{ {header} = "x" }}\n')
    assert error.key == f"servers.demo.headers.{header}"


def test_header_from_missing_env_var(tmp_path: Path) -> None:
    error = config_error(tmp_path, MINIMAL + 'headers = { X-Api-Key = { env = "NOT_SET_ANYWHERE" } }\n')
    assert error.key == "servers.demo.headers.X-Api-Key"


def test_env_from_missing_env_var(tmp_path: Path) -> None:
    text = '[servers.demo]\ncommand = ["x"]\nenv = { TOKEN = { env = "NOT_SET_ANYWHERE" } }\n'
    assert config_error(tmp_path, text).key == "servers.demo.env.TOKEN"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert config_error(tmp_path, "pubic_url = 1\n" + MINIMAL).key == "pubic_url"


def test_registration_mode_unknown(tmp_path: Path) -> None:
    assert config_error(tmp_path, MINIMAL + '[registration]\nmode = "open"\n').key == "registration.mode"


def test_bad_database_url(tmp_path: Path) -> None:
    assert config_error(tmp_path, MINIMAL, {"DEPUTY_DATABASE_URL": "mysql://x/y"}).key == "database_url"


@pytest.mark.parametrize(("key", "value"), [
    ("access_token_ttl", 29), ("access_token_ttl", 3601), ("code_ttl", 61), ("clock_leeway", -1),
])
def test_token_lifetimes_out_of_range(tmp_path: Path, key: str, value: int) -> None:
    assert config_error(tmp_path, MINIMAL + f"[tokens]\n{key} = {value}\n").key == f"tokens.{key}"


@pytest.mark.parametrize(("key", "value", "path"), [
    ("revocation_max_staleness", "0.1", "gateway.revocation_max_staleness"),
    ("revocation_max_staleness", "301", "gateway.revocation_max_staleness"),
    ("allowed_origins", '["app.example.com"]', "gateway.allowed_origins[0]"),
    ("allowed_origins", '["https://a.example", "http://[::1"]', "gateway.allowed_origins[1]"),
    ("allowed_origins", '"https://app.example.com"', "gateway.allowed_origins"),
])
def test_bad_gateway_settings(tmp_path: Path, key: str, value: str, path: str) -> None:
    assert config_error(tmp_path, MINIMAL + f"[gateway]\n{key} = {value}\n").key == path


def test_client_with_secret_but_method_none(tmp_path: Path) -> None:
    text = MINIMAL + '[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\nclient_secret = "s"\n'
    assert config_error(tmp_path, text).key == "clients[0].client_secret"


def test_confidential_client_without_secret(tmp_path: Path) -> None:
    text = MINIMAL + ('[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\n'
                      'token_endpoint_auth_method = "client_secret_post"\n')
    assert config_error(tmp_path, text).key == "clients[0].client_secret"


def test_client_with_unknown_auth_method(tmp_path: Path) -> None:
    text = MINIMAL + ('[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\n'
                      'token_endpoint_auth_method = "tls_client_auth"\n')
    assert config_error(tmp_path, text).key == "clients[0].token_endpoint_auth_method"


def _public_jwk() -> str:
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    return json.dumps({"keys": [key.as_dict(private=False)]})


def test_private_key_jwt_client_with_jwks_file_and_client_credentials(tmp_path: Path) -> None:
    """An agent registered for client_credentials with private_key_jwt: keys from a file beside the config."""
    (tmp_path / "agent.jwks.json").write_text(_public_jwk())
    text = MINIMAL + ('[[clients]]\nclient_id = "agent"\ntoken_endpoint_auth_method = "private_key_jwt"\n'
                      'jwks_file = "agent.jwks.json"\ngrant_types = ["client_credentials"]\n')
    client = load(tmp_path, text).clients[0]
    assert client.grant_types == ("client_credentials",)
    assert client.redirect_uris == ()
    assert client.jwks is not None and client.jwks["keys"][0]["kid"] == "k1"


@pytest.mark.parametrize(("extra", "key"), [
    ("", "clients[0].jwks"),  # neither jwks nor jwks_file
    ('jwks_file = "missing.json"\n', "clients[0].jwks_file"),
    ('jwks = {keys = []}\n', "clients[0].jwks"),
    ('jwks = {keys = [{kty = "oct", k = "c2VjcmV0"}]}\n', "clients[0].jwks.keys[0]"),
    ('client_secret = "s"\njwks = {keys = [{kty = "oct", k = "c2VjcmV0"}]}\n', "clients[0].client_secret"),
])
def test_private_key_jwt_client_errors(tmp_path: Path, extra: str, key: str) -> None:
    text = MINIMAL + ('[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\n'
                      'token_endpoint_auth_method = "private_key_jwt"\n' + extra)
    assert config_error(tmp_path, text).key == key


def test_private_key_jwt_refuses_private_key_material(tmp_path: Path) -> None:
    from joserfc.jwk import ECKey

    private = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    (tmp_path / "k.json").write_text(json.dumps({"keys": [private]}))
    text = MINIMAL + ('[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\n'
                      'token_endpoint_auth_method = "private_key_jwt"\njwks_file = "k.json"\n')
    error = config_error(tmp_path, text)
    assert error.key == "clients[0].jwks_file" and "private" in error.problem


@pytest.mark.parametrize(("extra", "key"), [
    ('grant_types = ["client_credentials"]\n', "clients[0].grant_types"),  # a public client
    ('grant_types = ["password"]\n', "clients[0].grant_types[0]"),
    ('grant_types = []\n', "clients[0].grant_types"),
])
def test_client_grant_types_errors(tmp_path: Path, extra: str, key: str) -> None:
    text = MINIMAL + '[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\n' + extra
    assert config_error(tmp_path, text).key == key


def test_client_without_redirect_uris(tmp_path: Path) -> None:
    text = MINIMAL + '[[clients]]\nclient_id = "a"\nredirect_uris = ["http://localhost/cb"]\n' \
        '[[clients]]\nclient_id = "b"\nredirect_uris = []\n'
    assert config_error(tmp_path, text).key == "clients[1].redirect_uris"


def test_malformed_toml(tmp_path: Path) -> None:
    path = config_file(tmp_path, "[servers.demo\nurl = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == str(path)


# --- resources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "expected"), [
    ("HTTPS://Deputy.Example.COM/mcp/demo", "https://deputy.example.com/mcp/demo"),
    ("https://deputy.example.com/mcp/demo/", "https://deputy.example.com/mcp/demo"),
    ("HTTP://LOCALHOST:8000/mcp/demo//", "http://localhost:8000/mcp/demo"),
    ("https://deputy.example.com/", "https://deputy.example.com"),
    ("https://deputy.example.com/mcp/Demo", "https://deputy.example.com/mcp/Demo"),
    ("https://deputy.example.com/mcp?x=1", "https://deputy.example.com/mcp?x=1"),
])
def test_canonical_resource(uri: str, expected: str) -> None:
    assert canonical_resource(uri) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8000", True),
    ("http://127.5.6.7", True),
    ("http://localhost:8000", True),
    ("http://LOCALHOST:8000", True),
    ("http://[::1]:8000", True),
    ("https://127.0.0.1:8000", False),
    ("http://example.com", False),
    ("http://localhost.example.com", False),
    ("http://10.0.0.1", False),
    ("not a url", False),
])
def test_is_loopback_http(url: str, expected: bool) -> None:
    assert is_loopback_http(url) is expected


def test_server_for_resource(tmp_path: Path) -> None:
    settings = load(tmp_path, 'public_url = "https://deputy.example.com"\n' + MINIMAL)
    demo = settings.servers["demo"]
    assert settings.resource_of("demo") == "https://deputy.example.com/mcp/demo"
    assert settings.server_for_resource("https://deputy.example.com/mcp/demo") is demo
    assert settings.server_for_resource("HTTPS://DEPUTY.EXAMPLE.COM/mcp/demo") is demo
    assert settings.server_for_resource("https://deputy.example.com/mcp/demo/") is demo
    assert settings.server_for_resource("https://deputy.example.com/mcp/other") is None
    assert settings.server_for_resource("https://deputy.example.com/mcp/DEMO") is None
    assert settings.server_for_resource("https://evil.example.com/mcp/demo") is None
    assert settings.server_for_resource("https://deputy.example.com:8443/mcp/demo") is None


def test_server_for_resource_with_uppercase_public_url(tmp_path: Path) -> None:
    """An upper-case public_url host must still match its own canonical resource identifier."""
    settings = load(tmp_path, 'public_url = "https://Deputy.Example.com"\n' + MINIMAL)
    demo = settings.servers["demo"]
    assert settings.server_for_resource("https://deputy.example.com/mcp/demo") is demo
    assert settings.server_for_resource(settings.resource_of("demo")) is demo
