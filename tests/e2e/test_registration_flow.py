"""The official SDK client registering dynamically under each registration policy (RFC 7591; MCP AS-4).

- ``loopback`` (the default): the SDK registers and is served at once.
- ``allowlist``: the SDK's loopback redirect host is listed, so it registers and is served;
  the SDK cannot send an initial access token, so that path is driven over raw HTTP.
- ``approval``: the SDK registers, its first authorization ends on the awaits-approval
  page, an admin runs ``deputy clients approve``, and the same SDK client then gets through.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mcp.client.auth.exceptions import OAuthRegistrationError

from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.oauth_flow import authorize, exchange, mcp_post
from tests.support.sdk_client import FormDriverError, InMemoryTokenStorage, sdk_oauth_client

INITIAL_TOKEN = "e2e-initial-access-token-0123456789abcdef"


def policy_deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory,
                  table: str) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"registration-e2e-{backend}")
    extra = f"\n[registration]\n{table}\nrate_limit_per_minute = 10000\n"
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as running:
        yield running


@pytest.fixture(scope="module")
def allowlist(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    yield from policy_deputy(backend, upstream_url, tmp_path_factory, f'''mode = "allowlist"
allowed_redirect_hosts = ["localhost"]
initial_access_tokens = ["{INITIAL_TOKEN}"]''')


@pytest.fixture(scope="module")
def approval(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    yield from policy_deputy(backend, upstream_url, tmp_path_factory, 'mode = "approval"')


async def test_loopback_policy_serves_the_sdk_client_at_once(deputy: RunningDeputy) -> None:
    async with sdk_oauth_client(deputy.resource("demo"), "alice", PASSWORD) as (client, run):
        assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content == {"result": 2}
    assert run.storage.client_info is not None and run.storage.client_info.client_id
    shown = deputy.cli("clients", "show", run.storage.client_info.client_id)
    assert shown.returncode == 0 and "active" in shown.stdout and "registration" in shown.stdout


async def test_allowlist_admits_the_sdk_client_by_its_redirect_host(allowlist: RunningDeputy) -> None:
    async with sdk_oauth_client(allowlist.resource("demo"), "alice", PASSWORD) as (client, run):
        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert result.structured_content == {"result": 42}
    assert len(run.authorization_urls) == 1


async def test_allowlist_refuses_the_sdk_client_with_an_unlisted_redirect_host(allowlist: RunningDeputy) -> None:
    """`[::1]` is not `localhost`: the host is not listed, registration is refused and the SDK stops."""
    with pytest.raises(BaseException) as caught:  # the SDK wraps it in task groups
        async with sdk_oauth_client(allowlist.resource("demo"), "alice", PASSWORD,
                                    redirect_uri="http://[::1]:9/callback") as (client, _run):
            await client.call_tool("add", {"a": 1, "b": 1})
    refusals = [e for e in _causes(caught.value) if isinstance(e, OAuthRegistrationError)]
    assert refusals and "invalid_redirect_uri" in str(refusals[0])


def _causes(exc: BaseException) -> list[BaseException]:
    """Every exception in `exc`'s groups and cause/context chains."""
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return found


async def test_allowlist_initial_access_token_path_over_http(allowlist: RunningDeputy) -> None:
    """RFC 7591 §3: with the operator's initial access token an unlisted host registers, and the client is served."""
    redirect = "http://[::1]:9/token-admitted"
    body = {"client_name": "Admitted by token", "redirect_uris": [redirect], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"]}
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(f"{allowlist.url}/register", json=body)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_redirect_uri"
        registered = await http.post(f"{allowlist.url}/register", json=body,
                                     headers={"Authorization": f"Bearer {INITIAL_TOKEN}"})
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    auth = await authorize(allowlist, client_id=client_id, redirect_uri=redirect)
    tokens = await exchange(allowlist, auth.code, verifier=auth.verifier or "", client_id=client_id,
                            redirect_uri=redirect)
    assert tokens.status_code == 200, tokens.text
    assert (await mcp_post(allowlist, tokens.json()["access_token"])).status_code == 200


async def test_approval_holds_the_sdk_client_until_an_admin_approves(approval: RunningDeputy) -> None:
    storage = InMemoryTokenStorage()
    with pytest.raises(FormDriverError, match="Waiting for approval"):
        async with sdk_oauth_client(approval.resource("demo"), "alice", PASSWORD, storage=storage) as (client, _run):
            await client.call_tool("add", {"a": 1, "b": 1})
    assert storage.client_info is not None and storage.client_info.client_id
    client_id = storage.client_info.client_id
    assert storage.tokens is None

    approved = approval.cli("clients", "approve", client_id)
    assert approved.returncode == 0, approved.stderr
    assert f"approved {client_id}" in approved.stdout

    async with sdk_oauth_client(approval.resource("demo"), "alice", PASSWORD, storage=storage) as (client, run):
        result = await client.call_tool("add", {"a": 20, "b": 22})
        assert result.structured_content == {"result": 42}
    assert run.storage.client_info is not None and run.storage.client_info.client_id == client_id  # not re-registered
