"""The gateway in front of a ``credentials = "oauth"`` server when the user is connected: only her own token reaches
the upstream, and what the upstream refuses (401, its challenge, a retry refused again) or a failing connection
becomes. Set up by tests/support/gateway_connections.py. Abuse first.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError

from deputy.connections.errors import ConnectionFailed
from deputy.gateway.principal import Principal
from tests.support.gateway_connections import FakeAuthenticator, Setup, call, setup, upstream_server

__all__ = ["setup", "upstream_server"]  # the fixtures, used by name below


# -- abuse -----------------------------------------------------------------------------------------------------


async def test_the_clients_authorization_and_cookies_never_reach_the_upstream(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    response = await setup.post(call("whoami"), headers={"Cookie": "deputy_session=s3cret", "DPoP": "proof",
                                                         "Proxy-Authorization": "Basic eA=="})
    assert response.status_code == 200 and response.json()["result"]["token"] == "up-alice-1", response.text
    [seen] = setup.recorder.seen
    assert setup.upstream.authorizations == [[b"Bearer up-alice-1"]]  # hers at the upstream, and only hers
    assert not {"cookie", "dpop", "proxy-authorization"} & seen.headers.keys()


async def test_the_upstreams_challenge_is_never_relayed(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"  # the upstream refuses it; no refresh to be had
    response = await setup.post(call("whoami"))
    assert "www-authenticate" not in response.headers
    assert "resource_metadata" not in response.text
    assert response.json()["error"]["data"]["reason"] == "broken", response.text
    assert setup.connections.refusals == [("alice", 401, 'Bearer error="invalid_token", '
                                                         'resource_metadata="http://x/prm"')]


async def test_a_refused_retry_is_not_retried_again(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"
    setup.connections.refreshed["alice"] = "up-alice-also-refused"
    response = await setup.post(call("whoami"))
    assert response.json()["error"]["data"]["reason"] == "broken", response.text
    assert len(setup.recorder.seen) == 2  # the call and its one retry


async def test_the_connections_cannot_make_the_gateway_retry_twice(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"
    setup.connections.always_retry = True
    response = await setup.post(call("whoami"))
    assert response.status_code == 502 and response.json()["error"]["data"] == {"server": "ext"}, response.text
    assert len(setup.recorder.seen) == 2 and len(setup.connections.refusals) == 2


async def test_a_connection_failure_names_no_secret(setup: Setup) -> None:
    setup.connections.failure = ConnectionFailed("ext", "vault_key", "sealed with key abc123 (token tok-999)")
    response = await setup.post(call("whoami"))
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "abc123" not in response.text and "tok-999" not in response.text
    assert response.json()["error"]["data"] == {"server": "ext", "reason": "vault_key"}
    setup.connections.failure = ConnectionFailed("ext", "upstream_unavailable", "connect refused")
    response = await setup.post(call("whoami"))
    assert response.status_code == 502 and "retry-after" not in response.headers
    setup.connections.failure = OperationalError("SELECT sealed FROM upstream_connections", {}, OSError("down"))
    response = await setup.post(call("whoami"))  # her connection cannot be read: fail closed, plainly
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["data"] == {"server": "ext", "reason": "storage_unavailable"}
    assert "SELECT" not in response.text
    assert setup.recorder.seen == []
    setup.connections.failure = RuntimeError("a bug")
    with pytest.raises(RuntimeError):  # not the gateway's to answer as a connection problem
        await setup.post(call("whoami"))


# -- refresh, delegation, other servers -------------------------------------------------------------------------


async def test_a_401_is_retried_once_with_the_refreshed_token(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-stale"
    setup.connections.refreshed["alice"] = "up-alice-2"
    response = await setup.post(call("whoami", request_id=3))
    assert response.json() == {"jsonrpc": "2.0", "id": 3, "result": {
        "token": "up-alice-2", "params": {"name": "whoami", "arguments": {}}}}
    first, retry = setup.recorder.seen
    assert first.body == retry.body
    assert (first.headers["authorization"], retry.headers["authorization"]) == ("Bearer up-alice-stale",
                                                                                "Bearer up-alice-2")


async def test_an_agent_acting_for_alice_uses_her_connection(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    FakeAuthenticator.principals["agent-for-alice"] = Principal(
        "alice", "agent-b", frozenset({"t"}), "jti-b", "ext", actors=(cast(Any, object()),))
    try:
        response = await setup.post(call("whoami"), token="agent-for-alice")
    finally:
        del FakeAuthenticator.principals["agent-for-alice"]
    assert response.json()["result"]["token"] == "up-alice-1", response.text
    assert setup.connections.asked == ["alice"]


async def test_other_servers_never_ask_for_a_connection(setup: Setup) -> None:
    setup.upstream.valid.add("")  # the plain server's upstream takes calls without a token
    try:
        response = await setup.post(call("whoami"), server="plain")
    finally:
        setup.upstream.valid.discard("")
    assert response.json()["result"]["token"] == "", response.text
    assert setup.connections.asked == []
    assert "authorization" not in setup.recorder.seen[0].headers
