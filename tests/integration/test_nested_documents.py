"""Deeply nested documents Deputy fetches, relays or reads at start-up are refused, never a RecursionError
(issue 12, second review): a client metadata document, an upstream's answer to a filtered request, an
assertion routed to a trusted issuer, the configuration file and the JWK Set files it names.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from deputy.config import ConfigError, load_settings
from deputy.gateway.response_rewrite import FAILED, rewrite_json_body, rewrite_sse
from deputy.oauth.document_fetcher import DocumentFetcher, NotJson
from deputy.oauth.trusted_issuers import TrustedIssuers
from tests.support.document_server import DocumentServer
from tests.support.tls import TlsFiles

DEEP = b"[" * 5000 + b"]" * 5000
BASE = '''
public_url = "https://deputy.example.com"

[servers.demo]
url = "http://127.0.0.1:9000/mcp"
'''


async def test_a_client_document_nested_too_deeply_is_not_json(docs: DocumentServer, tls: TlsFiles) -> None:
    """Issue 12: the fetched body went to json.loads unbounded (RecursionError through the resolver)."""
    docs.serve("/deep.json", b'{"client_id": ' + DEEP + b"}")
    fetcher = DocumentFetcher(max_bytes=64 * 1024, timeout_seconds=3.0, development_mode=True,
                              ca_file=str(tls.ca_file))
    with pytest.raises(NotJson):
        await fetcher.fetch(docs.url("/deep.json"))


async def keep(result: dict[str, Any]) -> dict[str, Any]:
    return result


async def test_an_upstream_answer_nested_too_deeply_is_replaced_by_an_error() -> None:
    """Issue 12: an upstream's JSON answer to a filtered request went to json.loads unbounded."""
    body = b'{"jsonrpc":"2.0","id":5,"result":{"tools":' + DEEP + b"}}"
    replaced = await rewrite_json_body(body, 5, keep)
    assert FAILED.encode() in replaced and b'"id":5' in replaced


async def test_an_upstream_event_nested_too_deeply_is_replaced_by_an_error() -> None:
    async def chunks() -> Any:
        yield b'event: message\ndata: {"jsonrpc":"2.0","id":5,"result":{"tools":' + DEEP + b"}}\n\n"

    replaced = b"".join([chunk async for chunk in rewrite_sse(chunks(), 5, keep)])
    assert FAILED.encode() in replaced and DEEP not in replaced


def test_an_assertion_with_a_deep_payload_names_no_trusted_issuer() -> None:
    """Issue 12: the unverified payload went to json.loads unbounded, and its header to joserfc."""
    header = base64.urlsafe_b64encode(b'{"alg":"ES256"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"iss":' + DEEP + b"}").decode().rstrip("=")
    deep_header = base64.urlsafe_b64encode(b'{"alg":' + DEEP + b"}").decode().rstrip("=")
    issuers = TrustedIssuers((), leeway=5)
    assert issuers.claims_issuer(f"{header}.{payload}.c2ln") is None
    assert issuers.claims_issuer(f"{deep_header}.{header}.c2ln") is None


def _config_error(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "deputy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(path, environ={})
    return refused.value


def test_a_configuration_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    """Issue 12: tomllib recursed on nested arrays (RecursionError at start-up, not a ConfigError)."""
    error = _config_error(tmp_path, BASE + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper than" in error.problem


@pytest.mark.parametrize(("table", "key"), [
    ('[[clients]]\nclient_id = "c"\nredirect_uris = ["http://localhost/cb"]\n'
     'token_endpoint_auth_method = "private_key_jwt"\njwks_file = "deep.json"\n', "clients[0].jwks_file"),
    ('[[trusted_issuers]]\nissuer = "https://idp.example.com"\njwks_file = "deep.json"\naccept = ["workload"]\n',
     "trusted_issuers[0].jwks_file"),
])
def test_a_jwks_file_nested_too_deeply_is_a_config_error(tmp_path: Path, table: str, key: str) -> None:
    """Issue 12: JWK Set files named by the configuration went to json.loads unbounded."""
    (tmp_path / "deep.json").write_bytes(b'{"keys": ' + DEEP + b"}")
    assert _config_error(tmp_path, BASE + table).key == key


def test_a_publisher_jwks_file_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_bytes(b'{"keys": ' + DEEP + b"}")
    table = (f'[registration]\n[[registration.trusted_publishers]]\nissuer = "https://pub.example"\n'
             f'jwks_file = "{tmp_path / "deep.json"}"\n')
    assert _config_error(tmp_path, BASE + table).key == "registration.trusted_publishers[0].jwks_file"
