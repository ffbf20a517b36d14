"""No token, secret, password or argument value in Deputy's log, whatever path it took (issue 13; attack
classes, "Secrets at rest and in logs").

A real ``deputy serve`` logging JSON at debug (on PostgreSQL) and at info (on SQLite): known markers go in as a
user's password (right and wrong), a static client's secret (right and wrong), client-credentials and
token-exchange agents' secrets, a forged bearer token, and argument values of calls allowed, denied and held by
policy, over HTTP and stdio. Every value Deputy issues on the way (codes, PKCE verifiers, access and refresh
tokens, session ids) joins the markers. Then every line Deputy wrote on standard error must be a JSON object
and none may hold any of them; standard output neither.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.delegation import AGENT_A, SECRETS, agent_own_token, delegation_config, exchange_token
from tests.support.demo_policies import DEMO_POLICIES
from tests.support.deputy_process import PASSWORD, REDIRECT_URI, RunningDeputy
from tests.support.logging_deputy import logging_deputy, stopped_log
from tests.support.oauth_flow import Pkce, authorize, exchange, mcp_post, post_token, refresh


def _marker(kind: str) -> str:
    return f"MARK{kind}{secrets.token_hex(8)}"


USER = "marker-user"
USER_PASSWORD = _marker("password")
WRONG_PASSWORD = _marker("wrongpassword")
CLIENT = "marker-client"
CLIENT_SECRET = _marker("clientsecret")
WRONG_SECRET = _marker("wrongsecret")
FORGED_BEARER = _marker("bearer")
ARGUMENT = _marker("argument")
MARKERS = [USER_PASSWORD, WRONG_PASSWORD, CLIENT_SECRET, WRONG_SECRET, FORGED_BEARER, ARGUMENT, PASSWORD,
           *SECRETS.values()]

EXTRA = delegation_config(extra=f'''
[[clients]]
client_id = "{CLIENT}"
client_name = "Confidential client with a marker secret"
redirect_uris = ["{REDIRECT_URI}"]
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{CLIENT_SECRET}"
grant_types = ["authorization_code", "refresh_token", "client_credentials"]

[servers.guarded]
url = "{{upstream_url}}"
scopes = ["demo:tools", "demo:admin"]
policies = "{DEMO_POLICIES}"
''')


def _call(call_id: int, tool: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


async def _session(deputy: RunningDeputy, token: str, server: str, issued: list[str]) -> dict[str, str]:
    opened = await mcp_post(deputy, token, server=server)
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    issued.append(session["Mcp-Session-Id"])
    notified = await mcp_post(deputy, token, server=server, headers=session,
                              body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert notified.status_code == 202
    return session


async def _every_path(deputy: RunningDeputy) -> list[str]:
    """Each path a secret or an argument can take; the values Deputy issued on the way."""
    issued: list[str] = []
    basic = (CLIENT, CLIENT_SECRET)
    refused = await authorize(deputy, client_id=CLIENT, username=USER, password=WRONG_PASSWORD,
                              resource=deputy.resource("guarded"))
    assert refused.redirect is None, "a wrong password signs nobody in"
    pkce = Pkce.new()
    auth = await authorize(deputy, client_id=CLIENT, username=USER, password=USER_PASSWORD, pkce=pkce,
                           resource=deputy.resource("guarded"))
    assert auth.redirect is not None and auth.redirect.error is None
    issued += [auth.code, pkce.verifier]
    wrong = await exchange(deputy, auth.code, verifier=pkce.verifier, client_id=CLIENT, basic=(CLIENT, WRONG_SECRET),
                           resource=deputy.resource("guarded"))
    assert wrong.status_code == 401
    granted = await exchange(deputy, auth.code, verifier=pkce.verifier, client_id=CLIENT, basic=basic,
                             resource=deputy.resource("guarded"))
    assert granted.status_code == 200, granted.text
    token, refresh_token = granted.json()["access_token"], granted.json()["refresh_token"]
    refreshed = await refresh(deputy, refresh_token, client_id=CLIENT, basic=basic)
    assert refreshed.status_code == 200, refreshed.text
    issued += [token, refresh_token, refreshed.json()["access_token"], refreshed.json()["refresh_token"]]
    token = refreshed.json()["access_token"]
    credentials = await post_token(deputy, [("grant_type", "client_credentials"),
                                            ("resource", deputy.resource("demo"))], basic=basic)
    assert credentials.status_code == 200, credentials.text
    issued.append(credentials.json()["access_token"])

    # Alice's token for the demo server, exchanged by agent A (RFC 8693) and used by it.
    alice = await authorize(deputy, username="alice", password=PASSWORD)
    assert alice.redirect is not None and alice.redirect.error is None
    alice_tokens = await exchange(deputy, alice.code, verifier=alice.verifier or "")
    assert alice_tokens.status_code == 200, alice_tokens.text
    alice_token = alice_tokens.json()["access_token"]
    actor = await agent_own_token(deputy, AGENT_A)
    exchanged = await exchange_token(deputy, AGENT_A, alice_token, actor)
    assert exchanged.status_code == 200, exchanged.text
    issued += [alice.code, alice.verifier or "", alice_token, alice_tokens.json()["refresh_token"], actor,
               exchanged.json()["access_token"]]

    forged = await mcp_post(deputy, FORGED_BEARER, server="guarded")
    assert forged.status_code == 401
    session = await _session(deputy, token, "guarded", issued)
    allowed = await mcp_post(deputy, token, server="guarded", headers=session,
                             body=_call(2, "echo", {"text": ARGUMENT}))
    assert allowed.status_code == 200 and ARGUMENT in allowed.text
    denied = await mcp_post(deputy, token, server="guarded", headers=session,
                            body=_call(3, "delete_user", {"id": 5, "reason": ARGUMENT}))
    assert denied.status_code == 200 and ARGUMENT not in denied.text and "error" in denied.text
    held = await mcp_post(deputy, token, server="guarded", headers=session,
                          body=_call(4, "delete_user", {"id": 500, "reason": ARGUMENT}))
    assert held.status_code == 200 and "error" in held.text
    unknown = await mcp_post(deputy, token, server="guarded", headers=session,
                             body=_call(5, "no_such_tool", {"secret": ARGUMENT}))
    assert unknown.status_code == 200

    exchanged_token = exchanged.json()["access_token"]
    over_http = await _session(deputy, exchanged_token, "demo", issued)
    echoed = await mcp_post(deputy, exchanged_token, server="demo", headers=over_http,
                            body=_call(2, "echo", {"text": ARGUMENT}))
    assert echoed.status_code == 200 and ARGUMENT in echoed.text

    local_token = await _local_token(deputy, issued)
    over_stdio = await _session(deputy, local_token, "local", issued)
    echoed = await mcp_post(deputy, local_token, server="local", headers=over_stdio,
                            body=_call(2, "echo", {"text": ARGUMENT}))
    assert echoed.status_code == 200 and ARGUMENT in echoed.text

    reused = await refresh(deputy, refresh_token, client_id=CLIENT, basic=basic)
    assert reused.status_code == 400, "a used refresh token is refused (and its family revoked)"
    async with httpx.AsyncClient(timeout=30) as http:
        revoked = await http.post(f"{deputy.url}/revoke", data={"token": token}, auth=basic)
        assert revoked.status_code == 200
    return issued


async def _local_token(deputy: RunningDeputy, issued: list[str]) -> str:
    auth = await authorize(deputy, username="alice", password=PASSWORD, resource=deputy.resource("local"))
    assert auth.redirect is not None and auth.redirect.error is None
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "", resource=deputy.resource("local"))
    assert response.status_code == 200, response.text
    issued += [auth.code, auth.verifier or "", response.json()["access_token"], response.json()["refresh_token"]]
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(params=[("debug", "postgresql"), ("info", "sqlite")], ids=["debug", "info"])
def json_deputy(request: pytest.FixtureRequest, upstream_url: str, tmp_path: Path) -> Iterator[RunningDeputy]:
    level, backend = request.param
    with logging_deputy(tmp_path, upstream_url, EXTRA.replace("{upstream_url}", upstream_url), level=level,
                        log_format="json", backend=backend, users=((USER, USER_PASSWORD),)) as deputy:
        yield deputy


async def test_no_secret_token_or_argument_reaches_the_log(json_deputy: RunningDeputy) -> None:
    deputy = json_deputy
    issued = await _every_path(deputy)
    stderr = stopped_log(deputy)
    stdout = (deputy.config.parent / "stdout.log").read_text(errors="replace")
    assert all(len(value) >= 16 for value in issued), "each issued value is long enough to be found"
    assert stderr, "Deputy logged nothing"
    records = []
    for line in stderr:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line[:300]!r}")
    for value in MARKERS + issued:
        for line, record in zip(stderr, records, strict=True):
            # The raw line and the decoded values both: a JSON escape could hide a value from the raw text.
            assert value not in line and value not in json.dumps(record, ensure_ascii=False), (value, line[:500])
        assert value not in stdout, value
    if deputy.env["DEPUTY_LOG_LEVEL"] == "info":
        assert not [record for record in records if record["level"] == "debug"]
    # One line per request (logger deputy.requests), with what it was and how it ended, never what it carried.
    calls = {(r["server"], r["tool"], r["outcome"]): r for r in records
             if r["logger"] == "deputy.requests" and r.get("method") == "tools/call"}
    assert {("guarded", "echo", "forwarded"), ("guarded", "delete_user", "denied"), ("guarded", "delete_user", "held"),
            ("demo", "echo", "forwarded"), ("local", "echo", "forwarded")} <= set(calls)
    echo = calls["guarded", "echo", "forwarded"]
    assert echo["status"] == 200
    assert isinstance(echo["duration_ms"], float)  # present and a number; its value is the clock's, not asserted
    assert len(echo["decision_id"]) == 32 and int(echo["decision_id"], 16) >= 0
