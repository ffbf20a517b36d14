"""Agents that act for Alice: a Deputy configured for token exchange (RFC 8693), and the requests.

`delegation_config` adds two confidential agents, A and B, registered for client credentials
and token exchange, and `[delegation]` rules: Alice's tokens from the public test client may
be used by A; tokens A holds may be used by B; nothing else. `exchange_token` posts exactly
what it is told; `agent_own_token` is an agent's client credentials token (its actor token).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx

from tests.support.databases import database_url
from tests.support.deputy_process import PUBLIC_CLIENT, RunningDeputy, running_deputy
from tests.support.oauth_flow import post_token

TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"

AGENT_A: Final = "agent-a"
AGENT_B: Final = "agent-b"
AGENT_C: Final = "agent-c"  # may exchange, but no rule lets it act for anyone
SECRETS: Final = {
    AGENT_A: "agent-a-s3cret-for-tests-0123456789",
    AGENT_B: "agent-b-s3cret-for-tests-0123456789",
    AGENT_C: "agent-c-s3cret-for-tests-0123456789",
}


def delegation_config(max_depth: int = 4, extra: str = "") -> str:
    clients = "".join(f'''
[[clients]]
client_id = "{agent}"
client_name = "Agent {agent[-1].upper()}"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{secret}"
grant_types = ["client_credentials", "{TOKEN_EXCHANGE}"]
''' for agent, secret in SECRETS.items())
    return f'''{clients}
[delegation]
max_depth = {max_depth}

[[delegation.may_act]]
client = "{PUBLIC_CLIENT}"
actors = ["{AGENT_A}"]

[[delegation.may_act]]
client = "{AGENT_A}"
actors = ["{AGENT_B}"]
{extra}'''


@contextmanager
def delegation_deputy(backend: str, upstream_url: str, directory: Path, *, max_depth: int = 4,
                      extra: str = "") -> Iterator[RunningDeputy]:
    """A running Deputy on a fresh database of `backend`, configured as above."""
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, delegation_config(max_depth, extra)) as running):
        yield running


def basic(agent: str) -> tuple[str, str]:
    return agent, SECRETS[agent]


async def agent_own_token(deputy: RunningDeputy, agent: str, resource: str | None = None,
                          scope: str | None = None) -> str:
    data = [("grant_type", "client_credentials"), ("resource", resource or deputy.resource("demo"))]
    if scope is not None:
        data.append(("scope", scope))
    response = await post_token(deputy, data, basic=basic(agent))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def exchange_token(
    deputy: RunningDeputy,
    agent: str | None,
    subject_token: str | None,
    actor_token: str | None = None,
    *,
    subject_token_type: str | None = ACCESS_TOKEN_TYPE,
    actor_token_type: str | None = ACCESS_TOKEN_TYPE,
    extra: Sequence[tuple[str, str]] = (),
) -> httpx.Response:
    """POST a token exchange as `agent` (Basic credentials; None: unauthenticated)."""
    data: list[tuple[str, str]] = [("grant_type", TOKEN_EXCHANGE)]
    if subject_token is not None:
        data.append(("subject_token", subject_token))
    if subject_token_type is not None and subject_token is not None:
        data.append(("subject_token_type", subject_token_type))
    if actor_token is not None:
        data.append(("actor_token", actor_token))
        if actor_token_type is not None:
            data.append(("actor_token_type", actor_token_type))
    data.extend(extra)
    return await post_token(deputy, data, basic=basic(agent) if agent is not None else None)


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the tests read what Deputy wrote)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded
