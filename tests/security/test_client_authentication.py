"""Client authentication at the token endpoint (OAuth 2.1 §2.4, §3.2.4; RFC 6749 §5.2; MCP AS-1)."""

from __future__ import annotations

import httpx
import pytest

from tests.security.helpers import oauth_error
from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, PUBLIC_CLIENT, RunningDeputy
from tests.support.oauth_flow import OMIT, Authorization, authorize, exchange


def assert_invalid_client(response: httpx.Response) -> None:
    """RFC 6749 §5.2: invalid_client with HTTP 401 and a WWW-Authenticate challenge."""
    assert response.status_code == 401
    assert oauth_error(response) == "invalid_client"
    assert response.headers["www-authenticate"].split(" ")[0] == "Basic"
    assert response.headers["cache-control"] == "no-store"


@pytest.fixture
async def confidential_code(deputy: RunningDeputy, browser: httpx.AsyncClient) -> Authorization:
    return await authorize(deputy, browser=browser, client_id=CONFIDENTIAL_CLIENT)


@pytest.mark.parametrize("secret", ["wrong-secret", CONFIDENTIAL_SECRET + "x", CONFIDENTIAL_SECRET[:-1], ""])
async def test_confidential_client_with_wrong_secret_is_invalid_client(
        deputy: RunningDeputy, confidential_code: Authorization, secret: str) -> None:
    """MCP AS-1 / RFC 6749 §5.2: client_secret_basic with a wrong secret → 401 invalid_client; the code survives."""
    wrong = await exchange(deputy, confidential_code.code, verifier=confidential_code.verifier or "",
                           basic=(CONFIDENTIAL_CLIENT, secret))
    assert_invalid_client(wrong)
    right = await exchange(deputy, confidential_code.code, verifier=confidential_code.verifier or "",
                           basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert right.status_code == 200, right.text


async def test_confidential_client_without_authentication_is_invalid_client(
        deputy: RunningDeputy, confidential_code: Authorization) -> None:
    """MCP AS-1: a confidential client presenting only its client_id (as if public) → 401 invalid_client."""
    response = await exchange(deputy, confidential_code.code, verifier=confidential_code.verifier or "",
                              client_id=CONFIDENTIAL_CLIENT)
    assert_invalid_client(response)


async def test_confidential_client_with_wrong_method_is_invalid_client(
        deputy: RunningDeputy, confidential_code: Authorization) -> None:
    """OAuth 2.1 §2.4: the right secret by the unregistered method (client_secret_post) → 401 invalid_client."""
    response = await exchange(deputy, confidential_code.code, verifier=confidential_code.verifier or "",
                              client_id=CONFIDENTIAL_CLIENT, extra=[("client_secret", CONFIDENTIAL_SECRET)])
    assert_invalid_client(response)


@pytest.mark.parametrize("how", ["post", "basic"])
async def test_public_client_sending_a_secret_is_invalid_client(
        deputy: RunningDeputy, browser: httpx.AsyncClient, how: str) -> None:
    """OAuth 2.1 §2.4: a public client (auth method none) that sends a secret → 401 invalid_client."""
    auth = await authorize(deputy, browser=browser)
    if how == "post":
        response = await exchange(deputy, auth.code, verifier=auth.verifier or "",
                                  extra=[("client_secret", "anything")])
    else:
        response = await exchange(deputy, auth.code, verifier=auth.verifier or "", basic=(PUBLIC_CLIENT, "anything"))
    assert_invalid_client(response)


async def test_unknown_client_is_invalid_client(deputy: RunningDeputy) -> None:
    """RFC 6749 §5.2: an unknown client_id at /token → 401 invalid_client."""
    response = await exchange(deputy, "some-code", verifier="v" * 43, client_id="no-such-client")
    assert_invalid_client(response)


async def test_missing_client_id_is_invalid_client(deputy: RunningDeputy) -> None:
    """RFC 6749 §5.2: no client identification at all → 401 invalid_client."""
    response = await exchange(deputy, "some-code", verifier="v" * 43, client_id=OMIT)
    assert_invalid_client(response)
