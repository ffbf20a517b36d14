"""Software statements under the `allowlist` registration policy (RFC 7591 §2.3, §3.1.1, §3.2.2; RFC 7592 §2.2).

A statement from a trusted publisher admits a client whose redirect hosts the operator
did not list — but only for what the publisher signed. Its claims win over the plain
fields; a redirect URI the statement does not carry is the requester's word alone and is
judged as if no statement had been sent, at registration and at every update. Each
refusal is checked for its RFC 7591 §3.2.2 error code.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.security.helpers import oauth_error
from tests.support.deputy_process import RunningDeputy
from tests.support.registration import (
    ALLOWED_HOST,
    INITIAL_TOKEN,
    PUBLISHER,
    STRANGER_KEY,
    VOUCHED,
    allowlist_deputy,
    manage,
    register,
    registered,
    statement,
)

ATTACKER = "https://attacker.example/cb"


@pytest.fixture(scope="module")
def allowlist(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"software-statements-{backend}")
    with allowlist_deputy(backend, upstream_url, directory) as running:
        yield running


def assert_refused(response: httpx.Response, code: str, because: str = "") -> None:
    assert response.status_code == 400, response.text
    assert oauth_error(response) == code, response.text
    assert because in response.json().get("error_description", ""), response.text


# -- what a statement vouches for ------------------------------------------------------------------

async def test_software_statement_from_trusted_publisher_admits_and_overrides(allowlist: RunningDeputy) -> None:
    """RFC 7591 §2.3 / §3.1.1: its claims win over the plain fields; it is returned unmodified (§3.2.1)."""
    signed = statement({"client_name": "Vouched client", "redirect_uris": [VOUCHED],
                        "software_id": "vouched-1"})
    response = await register(allowlist, {"client_name": "Impostor", "redirect_uris": [ATTACKER],
                                          "software_statement": signed})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_name"] == "Vouched client"
    assert body["redirect_uris"] == [VOUCHED]
    assert body["software_id"] == "vouched-1"
    assert body["software_statement"] == signed


async def test_statement_without_redirect_uris_does_not_admit_unsigned_ones(allowlist: RunningDeputy) -> None:
    """The publisher signed a name, not where codes go: an unsigned redirect URI on a host the operator did not
    list is refused (invalid_redirect_uri), so no client under the vouched name sends codes to it. The same
    statement with a listed host, or with an initial access token, is admitted as those would be alone."""
    signed = statement({"client_name": "Vouched client", "software_id": "vouched-2"})
    refused = await register(allowlist, {"redirect_uris": [ATTACKER], "software_statement": signed})
    assert_refused(refused, "invalid_redirect_uri", "software statement")
    mixed = await register(allowlist, {"redirect_uris": [f"https://{ALLOWED_HOST}/cb", ATTACKER],
                                       "software_statement": signed})
    assert_refused(mixed, "invalid_redirect_uri", ATTACKER)

    listed = await register(allowlist, {"redirect_uris": [f"https://{ALLOWED_HOST}/cb"], "software_statement": signed})
    assert listed.status_code == 201, listed.text
    assert listed.json()["client_name"] == "Vouched client"
    with_token = await register(allowlist, {"redirect_uris": ["com.example.app:/cb"], "software_statement": signed},
                                token=INITIAL_TOKEN)
    assert with_token.status_code == 201, with_token.text


async def test_update_with_a_statement_without_redirect_uris_cannot_add_unsigned_ones(
        allowlist: RunningDeputy) -> None:
    """RFC 7592 §2.2: an update is judged like a registration — a statement naming no redirect URIs does not
    let a client add an unlisted one, and the client keeps what it had; one that carries them replaces them."""
    client = await registered(allowlist)
    url, token = client["registration_client_uri"], client["registration_access_token"]
    unsigned = {"client_id": client["client_id"], "token_endpoint_auth_method": "none",
                "software_statement": statement({"client_name": "Vouched client", "software_id": "vouched-3"}),
                "redirect_uris": [*client["redirect_uris"], ATTACKER]}
    assert_refused(await manage("PUT", url, token, unsigned), "invalid_redirect_uri", "software statement")
    read = await manage("GET", url, token)
    assert (read.json()["redirect_uris"], read.json()["client_name"]) == (client["redirect_uris"],
                                                                          client["client_name"])

    signed = {**unsigned, "software_statement": statement({"client_name": "Vouched client",
                                                            "redirect_uris": [VOUCHED]})}
    replaced = await manage("PUT", url, token, signed)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["redirect_uris"] == [VOUCHED]


# -- statements that do not verify -----------------------------------------------------------------

async def test_software_statement_signed_by_unknown_key_is_invalid(allowlist: RunningDeputy) -> None:
    signed = statement({"redirect_uris": [VOUCHED]}, key=STRANGER_KEY)
    response = await register(allowlist, {"redirect_uris": [VOUCHED], "software_statement": signed})
    assert_refused(response, "invalid_software_statement")


async def test_expired_software_statement_is_invalid(allowlist: RunningDeputy) -> None:
    signed = statement({"redirect_uris": [VOUCHED], "iat": int(time.time()) - 7200,
                        "exp": int(time.time()) - 3600})
    response = await register(allowlist, {"redirect_uris": [VOUCHED], "software_statement": signed})
    assert_refused(response, "invalid_software_statement")


async def test_software_statement_from_untrusted_issuer_is_unapproved(allowlist: RunningDeputy) -> None:
    signed = statement({"redirect_uris": [VOUCHED]}, key=STRANGER_KEY,
                       issuer="https://stranger.example")
    response = await register(allowlist, {"redirect_uris": [VOUCHED], "software_statement": signed})
    assert_refused(response, "unapproved_software_statement")


async def test_unsigned_software_statement_is_invalid(allowlist: RunningDeputy) -> None:
    """An ``alg: none`` statement naming a trusted issuer does not verify."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none'})}.{part({'iss': PUBLISHER, 'redirect_uris': ['https://x.example/cb']})}."
    response = await register(allowlist, {"redirect_uris": ["https://x.example/cb"], "software_statement": unsigned})
    assert_refused(response, "invalid_software_statement")
