"""The gateway in front of a ``credentials = "oauth"`` server when the user must connect: the answer each client
gets (input_required, the 2025-11-25 URL elicitation error, a plain error, 403), and what a client cannot forge
about it. Set up by tests/support/gateway_connections.py. Abuse first.
"""

from __future__ import annotations

import json

from deputy.gateway.connection_answers import CONNECTION_REQUIRED, URL_ELICITATION_REQUIRED
from deputy.gateway.principal import Principal
from deputy.policy import POLICY_DENIED
from tests.support.gateway_connections import (
    ACCEPT,
    CONNECT_URL,
    FakeAuthenticator,
    Setup,
    call,
    initialize,
    setup,
    upstream_server,
    with_url_elicitation,
)

__all__ = ["setup", "upstream_server"]  # the fixtures, used by name below


# -- abuse -----------------------------------------------------------------------------------------------------
async def test_a_denied_call_gets_its_denial_not_a_connect_prompt(setup: Setup) -> None:
    response = await setup.post(with_url_elicitation(call("secret")))  # she has no connection either
    error = response.json()["error"]
    assert error["code"] == POLICY_DENIED and "connect_url" not in json.dumps(error), response.text
    assert setup.connections.asked == [] and setup.recorder.seen == []


async def test_a_forged_request_state_is_not_trusted(setup: Setup) -> None:
    """The retry's requestState says nothing: her connection is looked up again, and nothing is forwarded."""
    forged = with_url_elicitation(call("whoami", requestState="deputy-connect:ext",
                                       inputResponses={"deputy_connect": {"action": "accept"}}))
    response = await setup.post(forged)
    assert response.json()["result"]["resultType"] == "input_required", response.text
    assert setup.connections.asked == ["alice"] and setup.recorder.seen == []


async def test_deputys_own_input_is_stripped_and_the_upstreams_kept(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    retry = with_url_elicitation(call("whoami", requestState="deputy-connect:ext", inputResponses={
        "deputy_connect": {"action": "accept"}, "theirs": {"action": "accept", "content": {"x": 1}}}))
    response = await setup.post(retry)
    assert response.json()["result"]["token"] == "up-alice-1", response.text
    [forwarded] = setup.forwarded()
    assert "requestState" not in forwarded["params"]
    assert forwarded["params"]["inputResponses"] == {"theirs": {"action": "accept", "content": {"x": 1}}}


async def test_a_session_cannot_claim_url_elicitation_it_did_not_declare(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    opened = await setup.post(initialize(url_elicitation=False))
    session = opened.headers["mcp-session-id"]
    upstream_id, _, tag = session.rpartition(".")
    setup.connections.broken.add("alice")
    forged = await setup.post(call("whoami"), headers={"Mcp-Session-Id": f"{upstream_id}.u{tag}"})
    assert forged.status_code == 404  # an id Deputy did not issue: unknown session
    plain = await setup.post(call("whoami"), headers={"Mcp-Session-Id": session})
    assert plain.json()["error"]["code"] == CONNECTION_REQUIRED, plain.text


async def test_deputys_own_session_for_a_stateless_upstream_is_bound_and_unforgeable(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    setup.upstream.stateless = True
    assert "mcp-session-id" not in (await setup.post(initialize(url_elicitation=False))).headers  # nothing to keep
    session = (await setup.post(initialize(url_elicitation=True))).headers["mcp-session-id"]
    own_id, _, tag = session.rpartition(".")
    FakeAuthenticator.principals["mallory"] = Principal("mallory", "client-1", frozenset({"t"}), "jti-m", "ext")
    try:
        stolen = await setup.post(call("whoami"), token="mallory", headers={"Mcp-Session-Id": session})
    finally:
        del FakeAuthenticator.principals["mallory"]
    assert stolen.status_code == 404  # another user's session is no session
    for forged in (f"{own_id}.u{tag[1:]}", f"{own_id}.{tag[1:]}", f"x{own_id}.{tag}"):
        assert (await setup.post(call("whoami"), headers={"Mcp-Session-Id": forged})).status_code == 404, forged
    assert (await setup.post(call("whoami"), headers={"Mcp-Session-Id": session})).status_code == 200
    assert all("mcp-session-id" not in request.headers for request in setup.recorder.seen)  # none upstream


async def test_a_token_without_a_user_is_not_sent_to_connect(setup: Setup) -> None:
    response = await setup.post(with_url_elicitation(call("whoami")), token="robot")
    error = response.json()["error"]
    assert error["code"] == CONNECTION_REQUIRED and error["data"] == {"server": "ext", "reason": "no_user"}
    assert setup.connections.asked == [] and setup.recorder.seen == []


# -- the answers ------------------------------------------------------------------------------------------------


async def test_a_client_with_url_elicitation_gets_input_required(setup: Setup) -> None:
    response = await setup.post(with_url_elicitation(call("whoami", request_id=7)))
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == 7
    result = answer["result"]
    assert result["resultType"] == "input_required" and result["requestState"] == "deputy-connect:ext"
    assert result["inputRequests"] == {"deputy_connect": {"method": "elicitation/create", "params": {
        "mode": "url", "url": CONNECT_URL, "message": f"Connect your account (not_connected): {CONNECT_URL}"}}}


async def test_a_declined_connection_gets_the_plain_error(setup: Setup) -> None:
    declined = with_url_elicitation(call("whoami", requestState="deputy-connect:ext",
                                         inputResponses={"deputy_connect": {"action": "decline"}}))
    error = (await setup.post(declined)).json()["error"]
    assert error["code"] == CONNECTION_REQUIRED
    assert error["data"] == {"server": "ext", "reason": "not_connected", "connect_url": CONNECT_URL}


async def test_an_initialize_declaring_url_elicitation_gets_the_2025_11_25_error(setup: Setup) -> None:
    response = await setup.post(initialize(url_elicitation=True))
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED == -32042
    [elicitation] = error["data"]["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["url"] == CONNECT_URL and elicitation["elicitationId"]
    assert elicitation["message"].startswith("Connect your account")
    assert error["data"]["connect_url"] == CONNECT_URL and error["data"]["reason"] == "not_connected"


async def test_a_session_that_declared_url_elicitation_gets_the_2025_11_25_error(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-1"
    opened = await setup.post(initialize(url_elicitation=True))
    assert opened.json()["result"]["token"] == "up-alice-1", opened.text
    session = opened.headers["mcp-session-id"]
    response = await setup.post(call("admin_op"), headers={"Mcp-Session-Id": session})  # 403 insufficient_scope
    error = response.json()["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED and error["data"]["reason"] == "insufficient_scope"
    first = error["data"]["elicitations"][0]["elicitationId"]
    again = (await setup.post(call("admin_op"), headers={"Mcp-Session-Id": session})).json()["error"]
    assert again["data"]["elicitations"][0]["elicitationId"] != first  # each elicitation its own id
    assert setup.connections.refusals[0][1:] == (403, 'Bearer error="insufficient_scope", scope="tools:admin"')


async def test_a_stateless_upstreams_client_that_declared_url_elicitation_gets_the_2025_11_25_error(
        setup: Setup) -> None:
    """No upstream session to remember the declaration in: Deputy's own session remembers it."""
    setup.connections.tokens["alice"] = "up-alice-1"
    setup.upstream.stateless = True
    session = (await setup.post(initialize(url_elicitation=True))).headers["mcp-session-id"]
    error = (await setup.post(call("admin_op"), headers={"Mcp-Session-Id": session})).json()["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED and error["data"]["reason"] == "insufficient_scope", error
    assert error["data"]["elicitations"][0]["url"] == CONNECT_URL


async def test_any_other_client_gets_an_error_with_the_connect_url(setup: Setup) -> None:
    response = await setup.post(call("whoami", request_id="r1"))
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "id": "r1", "error": {
        "code": CONNECTION_REQUIRED, "message": f"Connect your account (not_connected): {CONNECT_URL}",
        "data": {"server": "ext", "reason": "not_connected", "connect_url": CONNECT_URL}}}


async def test_a_notification_or_a_stream_gets_403_with_the_connect_url(setup: Setup) -> None:
    notification = await setup.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    stream = await setup.client.get("/mcp/ext", headers={**ACCEPT, "Authorization": "Bearer alice"})
    for response in (notification, stream):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["data"]["connect_url"] == CONNECT_URL
    assert setup.recorder.seen == []


async def test_the_outcome_record_says_the_call_was_not_forwarded(setup: Setup) -> None:
    await setup.post(call("whoami"))
    setup.connections.tokens["alice"] = "up-alice-1"
    await setup.post(call("whoami"))
    needed, forwarded = await setup.outcomes()
    assert (needed["not_forwarded"], needed["not_forwarded_reason"]) == ("connection_needed", "not_connected")
    assert "not_forwarded" not in forwarded and "not_forwarded_reason" not in forwarded
    counted = {sample.labels["outcome"]: sample.value for metric in setup.metrics.requests.collect()
               for sample in metric.samples if sample.name == "deputy_requests_total"}
    assert counted == {"connection_needed": 1.0, "forwarded": 1.0}
