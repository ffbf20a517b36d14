"""Issue 15: ``credentials = "oauth"``, ``[servers.NAME.oauth]`` and ``[connections]``, checked at start.

Abuse first: an oauth server that could not carry a bearer token (stdio), an ``oauth`` table on a server that does
not use it, client authentication that is ambiguous or lacks its secret or key, a configured client without the
authorization server it is registered at, a key that is not a private one, trusted hosts that are not host names, a
pinned authorization server that is not a URL, out-of-range timings, typos (the strict configuration), a vault key
variable Deputy reads not reported as misspelt. Then what a good table reads as.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from deputy.config_values import UnknownKey
from tests.support.config_files import config_error, load

BASE = 'public_url = "https://deputy.example.com"\ndata_dir = "{data}"\n\n'


def server(table: str = "", *, credentials: str = '"oauth"', transport: str = 'url = "https://mcp.example.com/mcp"'
           ) -> str:
    return f"[servers.ext]\n{transport}\ncredentials = {credentials}\n{table}"


def text(tmp_path: Path, body: str) -> str:
    return BASE.format(data=tmp_path / "data") + body


def error_key(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> tuple[str, str]:
    error = config_error(tmp_path, text(tmp_path, body), environ)
    return error.key, error.problem


# --- abuse -------------------------------------------------------------------------------------------------------

def test_an_oauth_server_must_be_reached_over_http(tmp_path: Path) -> None:
    key, problem = error_key(tmp_path, server(transport='command = ["mcp-server"]'))
    assert key == "servers.ext.credentials"
    assert "HTTP" in problem


@pytest.mark.parametrize("credentials", ['"none"', '"exchange"'])
def test_an_oauth_table_on_a_server_that_does_not_use_it_is_refused(tmp_path: Path, credentials: str) -> None:
    key, problem = error_key(tmp_path, server('[servers.ext.oauth]\nclient_id = "deputy"\n', credentials=credentials))
    assert key == "servers.ext.oauth"
    assert "oauth" in problem


@pytest.mark.parametrize(("table", "bad_key"), [
    ('client_secret = "s"\n', "servers.ext.oauth.client_id"),  # a secret for no client
    ('client_id = "deputy"\nclient_auth = "client_secret_basic"\n', "servers.ext.oauth.client_secret"),
    ('client_id = "deputy"\nclient_auth = "client_secret_post"\n', "servers.ext.oauth.client_secret"),
    ('client_id = "deputy"\nclient_auth = "private_key_jwt"\n', "servers.ext.oauth.private_key"),
    ('client_id = "deputy"\nclient_secret = "s"\nclient_auth = "none"\n', "servers.ext.oauth.client_auth"),
    ('client_id = "deputy"\nclient_auth = "tls_client_auth"\n', "servers.ext.oauth.client_auth"),
    ('client_id = ""\n', "servers.ext.oauth.client_id"),
    ("client_id = 7\n", "servers.ext.oauth.client_id"),
])
def test_client_authentication_that_is_ambiguous_or_incomplete_is_refused(tmp_path: Path, table: str,
                                                                          bad_key: str) -> None:
    assert error_key(tmp_path, server("[servers.ext.oauth]\n" + table))[0] == bad_key


@pytest.mark.parametrize("jwk", ["not json", json.dumps({"kty": "oct", "k": "c2VjcmV0"}),
                                 json.dumps(ECKey.generate_key("P-256", private=False).as_dict())])
def test_a_private_key_that_is_not_a_private_asymmetric_jwk_is_refused(tmp_path: Path, jwk: str) -> None:
    (tmp_path / "key.json").write_text(jwk)
    table = f'[servers.ext.oauth]\nclient_id = "deputy"\nprivate_key = {{file = "{tmp_path / "key.json"}"}}\n'
    assert error_key(tmp_path, server(table))[0] == "servers.ext.oauth.private_key"


@pytest.mark.parametrize("host", ['"Upper.example.com"', '"https://as.example.com"', '"as.example.com/path"',
                                  '"a b"', '""', '"as.example.com:443"'])
def test_a_trusted_host_that_is_not_a_host_name_is_refused(tmp_path: Path, host: str) -> None:
    key = error_key(tmp_path, server(f"[servers.ext.oauth]\ntrusted_hosts = [{host}]\n"))[0]
    assert key == "servers.ext.oauth.trusted_hosts[0]"


@pytest.mark.parametrize("issuer", ['"as.example.com"', '"ftp://as.example.com"', "3"])
def test_a_pinned_authorization_server_must_be_an_http_url(tmp_path: Path, issuer: str) -> None:
    key = error_key(tmp_path, server(f"[servers.ext.oauth]\nauthorization_server = {issuer}\n"))[0]
    assert key == "servers.ext.oauth.authorization_server"


@pytest.mark.parametrize("client", [
    'client_id = "corp-client"\nclient_secret = "corp-secret"\n',
    'client_id = "corp-client"\nclient_secret = "corp-secret"\nclient_auth = "client_secret_post"\n',
    'client_id = "corp-client"\n',  # a public client: its id still says who Deputy is there
])
def test_a_configured_client_without_its_authorization_server_is_refused(tmp_path: Path, client: str) -> None:
    """Else the client (and its secret) would go to whichever authorization server the upstream names."""
    key, problem = error_key(tmp_path, server("[servers.ext.oauth]\n" + client))
    assert key == "servers.ext.oauth.authorization_server"
    assert "client_id" in problem and "authorization server" in problem


def test_a_configured_private_key_client_without_its_authorization_server_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text(json.dumps(ECKey.generate_key("P-256", private=True).as_dict(private=True)))
    table = f'[servers.ext.oauth]\nclient_id = "deputy"\nprivate_key = {{file = "{tmp_path / "key.json"}"}}\n'
    assert error_key(tmp_path, server(table))[0] == "servers.ext.oauth.authorization_server"


@pytest.mark.parametrize(("table", "bad_key"), [
    ("refresh_margin = -1\n", "connections.refresh_margin"),
    ("refresh_margin = 3601\n", "connections.refresh_margin"),
    ("flow_ttl = 59\n", "connections.flow_ttl"),
    ('flow_ttl = 600.5\n', "connections.flow_ttl"),
])
def test_connection_timings_out_of_range_are_refused(tmp_path: Path, table: str, bad_key: str) -> None:
    assert error_key(tmp_path, server() + "\n[connections]\n" + table)[0] == bad_key


def test_a_misspelt_oauth_key_names_the_one_meant(tmp_path: Path) -> None:
    error = config_error(tmp_path, text(tmp_path, server('[servers.ext.oauth]\ntrusted_host = ["as.example.com"]\n')))
    assert isinstance(error, UnknownKey)
    assert error.key == "servers.ext.oauth.trusted_host"
    assert error.suggestion == "trusted_hosts"


def test_a_misspelt_connections_key_names_the_one_meant(tmp_path: Path) -> None:
    error = config_error(tmp_path, text(tmp_path, server() + "\n[connections]\nrefresh_margn = 30\n"))
    assert isinstance(error, UnknownKey)
    assert error.suggestion == "refresh_margin"


def test_the_vault_key_variable_is_not_reported_as_misspelt(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    settings = load(tmp_path, text(tmp_path, server()), {"DEPUTY_VAULT_KEY": "k" * 43})
    assert settings.connections.vault_key == "k" * 43
    assert "DEPUTY_VAULT_KEY" not in caplog.text


# --- what a good table reads as -------------------------------------------------------------------------------------

def test_an_empty_oauth_table_discovers_and_registers_everything(tmp_path: Path) -> None:
    settings = load(tmp_path, text(tmp_path, server()))
    oauth = settings.servers["ext"].oauth
    assert oauth is not None
    assert (oauth.client_id, oauth.client_secret, oauth.client_auth, oauth.scopes) == (None, None, "none", None)
    assert oauth.trusted_hosts == frozenset()
    assert settings.connections.refresh_margin == 60
    assert settings.connections.flow_ttl == 600
    assert settings.connections.vault_key is None


def test_a_configured_client_with_a_secret_defaults_to_basic_authentication(tmp_path: Path) -> None:
    table = ('[servers.ext.oauth]\nclient_id = "deputy"\nclient_secret = {env = "EXT_SECRET"}\n'
             'scopes = ["repo", "read:org"]\nauthorization_server = "https://github.com/login/oauth"\n'
             'trusted_hosts = ["as.internal.example", "10.0.0.7"]\n')
    oauth = load(tmp_path, text(tmp_path, server(table)), {"EXT_SECRET": "s3cret"}).servers["ext"].oauth
    assert oauth is not None
    assert (oauth.client_id, oauth.client_secret, oauth.client_auth) == ("deputy", "s3cret", "client_secret_basic")
    assert oauth.scopes == ("repo", "read:org")
    assert oauth.authorization_server == "https://github.com/login/oauth"
    assert oauth.trusted_hosts == frozenset({"as.internal.example", "10.0.0.7"})


def test_a_private_key_defaults_to_private_key_jwt(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text(json.dumps(ECKey.generate_key("P-256", private=True).as_dict(private=True)))
    table = (f'[servers.ext.oauth]\nclient_id = "deputy"\nprivate_key = {{file = "{tmp_path / "key.json"}"}}\n'
             'authorization_server = "https://as.example.com"\n')
    oauth = load(tmp_path, text(tmp_path, server(table))).servers["ext"].oauth
    assert oauth is not None
    assert oauth.client_auth == "private_key_jwt"
    assert oauth.private_key is not None and oauth.private_key["kty"] == "EC"


def test_servers_without_oauth_credentials_carry_no_oauth_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, text(tmp_path, server(credentials='"none"')))
    assert settings.servers["ext"].oauth is None
