"""`private_key_jwt` client authentication (RFC 7523 §2.2, §3) and the client credentials grant
(OAuth 2.1 §4.2; MCP `io.modelcontextprotocol/oauth-client-credentials`) at the token endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.security.helpers import oauth_error
from tests.support.agents import (
    ASSERTION_TYPE,
    EC_KEY,
    ED_KEY,
    JWT_AGENT,
    NO_GRANT_AGENT,
    OTHER_JWT_AGENT,
    OTHER_KEY,
    POST_AGENT,
    POST_AGENT_SECRET,
    RSA_KEY,
    SECRET_AGENT,
    SECRET_AGENT_SECRET,
    agents_deputy,
    assertion,
    assertion_fields,
    client_credentials,
    unsigned_assertion,
)
from tests.support.deputy_process import PUBLIC_CLIENT, RunningDeputy


@pytest.fixture(scope="module")
def agents(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-assertions-{backend}")
    with agents_deputy(backend, upstream_url, directory) as running:
        yield running


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def assert_invalid_client(response: httpx.Response, because: str = "") -> None:
    """RFC 6749 §5.2 / RFC 7521 §4.2: a bad assertion is invalid_client, HTTP 401, never cached.

    `because` is a word the description must contain, so a test fails if the refusal had another cause.
    """
    assert response.status_code == 401, response.text
    assert oauth_error(response) == "invalid_client"
    assert response.headers["cache-control"] == "no-store"
    assert because in response.json()["error_description"], response.text


async def with_assertion(agents: RunningDeputy, signed: str, **kwargs: Any) -> httpx.Response:
    return await client_credentials(agents, auth=assertion_fields(signed), **kwargs)


# --- private_key_jwt: accepted ------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "key"), [
    ("ES256", None), ("RS256", RSA_KEY), ("PS256", RSA_KEY), ("Ed25519", ED_KEY),
    # Deprecated by RFC 9864 but still sent by older clients: accepted (the test's own signing warns).
    pytest.param("EdDSA", ED_KEY, marks=pytest.mark.filterwarnings("ignore:EdDSA is deprecated")),
])
async def test_private_key_jwt_with_each_allowed_algorithm(agents: RunningDeputy, alg: str, key: Any) -> None:
    """RFC 7523 §2.2: a client assertion signed by a registered key → a token whose sub is the client."""
    signed = assertion(agents, alg=alg, **({"key": key} if key is not None else {}))
    response = await with_assertion(agents, signed)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert "refresh_token" not in body  # OAuth 2.1 §4.2.3: no refresh token for client credentials
    claims = claims_of(body["access_token"])
    assert claims["sub"] == JWT_AGENT and claims["client_id"] == JWT_AGENT
    assert claims["aud"] == agents.resource("demo")
    assert claims["scope"] == "demo:tools" == body["scope"]  # default: the server's required scopes
    assert "auth_time" not in claims  # no user signed in
    assert claims["sid"]


@pytest.mark.parametrize("audience", ["issuer", "token_endpoint", "list"])
async def test_audience_may_be_issuer_or_token_endpoint(agents: RunningDeputy, audience: str) -> None:
    """RFC 7523 §3 item 3: aud names the AS — its issuer or its token endpoint, alone or in a list."""
    aud: Any = {"issuer": agents.url, "token_endpoint": f"{agents.url}/token",
                "list": ["https://elsewhere.example", f"{agents.url}/token"]}[audience]
    response = await with_assertion(agents, assertion(agents, aud=aud))
    assert response.status_code == 200, response.text


async def test_client_id_in_body_must_match_the_assertion(agents: RunningDeputy) -> None:
    """The optional client_id parameter names the same client as the assertion, or the request is refused."""
    same = await client_credentials(agents, auth=[*assertion_fields(assertion(agents)), ("client_id", JWT_AGENT)])
    assert same.status_code == 200, same.text
    other = await client_credentials(agents, auth=[*assertion_fields(assertion(agents)),
                                                   ("client_id", OTHER_JWT_AGENT)])
    assert other.status_code == 400 and oauth_error(other) == "invalid_request"


# --- private_key_jwt: refused -------------------------------------------------------------------


async def test_replayed_jti_is_refused(agents: RunningDeputy) -> None:
    """RFC 7523 §3 item 7: the same assertion (same jti) twice → the second is invalid_client."""
    signed = assertion(agents)
    first = await with_assertion(agents, signed)
    assert first.status_code == 200, first.text
    assert_invalid_client(await with_assertion(agents, signed), "replay")
    # A new assertion reusing the jti is a replay too.
    jti = claims_of(signed)["jti"]
    assert_invalid_client(await with_assertion(agents, assertion(agents, jti=jti)), "replay")


@pytest.mark.parametrize("aud", ["https://elsewhere.example", "RESOURCE", "SLASH", "UPPER", ["https://x.example"]])
async def test_wrong_audience_is_refused(agents: RunningDeputy, aud: Any) -> None:
    """RFC 7523 §3 item 3: aud compared as a plain string; another AS, the MCP server, or a variant → refused."""
    value = {"RESOURCE": agents.resource("demo"), "SLASH": f"{agents.url}/",
             "UPPER": agents.url.upper()}.get(aud, aud) if isinstance(aud, str) else aud
    assert_invalid_client(await with_assertion(agents, assertion(agents, aud=value)), "aud")


async def test_expired_assertion_is_refused(agents: RunningDeputy) -> None:
    """RFC 7523 §3 item 4: exp in the past (beyond the 5 s leeway) → refused."""
    assert_invalid_client(await with_assertion(agents, assertion(agents, lifetime=-60, iat=None,
                                                                 omit=["iat"])), "expired")


async def test_long_lived_assertion_is_refused(agents: RunningDeputy) -> None:
    """An assertion valid for an hour could be replayed for an hour elsewhere; Deputy caps it at 5 minutes."""
    assert_invalid_client(await with_assertion(agents, assertion(agents, lifetime=3600)), "at most")


@pytest.mark.parametrize("claim", ["jti", "exp", "iss", "sub", "aud"])
async def test_missing_claim_is_refused(agents: RunningDeputy, claim: str) -> None:
    """RFC 7523 §3: iss, sub, aud, exp required; Deputy requires jti as well (replay cache)."""
    reason = {"sub": "no sub", "iss": "iss and sub"}.get(claim, claim)
    assert_invalid_client(await with_assertion(agents, assertion(agents, omit=[claim])), reason)


async def test_issued_in_the_future_is_refused(agents: RunningDeputy) -> None:
    """RFC 7523 §3 items 5-6: iat (and nbf) not in the future beyond the leeway."""
    assert_invalid_client(await with_assertion(agents, assertion(agents, iat=int(time.time()) + 120)), "future")


@pytest.mark.parametrize("times", [{"lifetime": float("nan")}, {"lifetime": float("inf")}, {"lifetime": 10**20},
                                   {"iat": float("nan")}])
async def test_times_that_are_not_plausible_numbers_are_refused(agents: RunningDeputy, times: dict[str, Any]) -> None:
    """JSON parsers yield NaN and Infinity: they compare false against every bound, so they must be refused
    as times (RFC 7519 §2 NumericDate), never reach int() or a database column."""
    response = await with_assertion(agents, assertion(agents, **times))
    assert_invalid_client(response, "exp" if "lifetime" in times else "iat")


@pytest.mark.parametrize("resource", ["http://[", "RESOURCE#fragment", "/mcp/demo"])
async def test_client_credentials_for_a_malformed_resource_is_invalid_target(
        agents: RunningDeputy, resource: str) -> None:
    """RFC 8707 §2: an absolute URI without a fragment; anything else is invalid_target (never a 500)."""
    value = resource.replace("RESOURCE", agents.resource("demo"))
    response = await client_credentials(agents, auth=assertion_fields(assertion(agents)), resource=value)
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_target"


async def test_hs256_is_refused(agents: RunningDeputy) -> None:
    """Algorithm allow-list: HMAC keyed with the client's public key (algorithm confusion) → refused."""
    public_pem = ECKey.import_key(EC_KEY.as_dict(private=False)).as_pem()
    for secret in (public_pem, b"a shared secret that nobody registered"):
        assert_invalid_client(await with_assertion(agents, hmac_assertion(agents, secret)), "alg")


def hmac_assertion(agents: RunningDeputy, secret: bytes) -> str:
    """HS256 by hand (joserfc rightly refuses to use a public key as an HMAC secret)."""
    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    now = int(time.time())
    header = part(json.dumps({"alg": "HS256", "kid": "ec-1"}).encode())
    claims = part(json.dumps({"iss": JWT_AGENT, "sub": JWT_AGENT, "aud": agents.url, "exp": now + 60,
                              "iat": now, "jti": f"hs-{now}-{len(secret)}"}).encode())
    signature = hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{part(signature)}"


async def test_alg_none_is_refused(agents: RunningDeputy) -> None:
    """RFC 7519 §6: an unsecured JWT never authenticates a client."""
    assert_invalid_client(await with_assertion(agents, unsigned_assertion(agents)), "alg")


@pytest.mark.parametrize("kid", ["other-1", "ec-1", None])
async def test_signed_by_another_key_is_refused(agents: RunningDeputy, kid: str | None) -> None:
    """A key the client did not register — even under a registered kid, or with none — never verifies."""
    if kid is None:
        key = ECKey.import_key({k: v for k, v in OTHER_KEY.as_dict(private=True).items() if k != "kid"})
        signed = assertion(agents, key=key)
    else:
        signed = assertion(agents, key=OTHER_KEY, header={"kid": kid})
    assert_invalid_client(await with_assertion(agents, signed), "not signed by a key")


async def test_assertion_of_another_client_is_refused(agents: RunningDeputy) -> None:
    """A client's own valid assertion cannot authenticate it as another client (the key decides)."""
    signed = assertion(agents, OTHER_JWT_AGENT, key=OTHER_KEY, iss=OTHER_JWT_AGENT, sub=JWT_AGENT)
    assert_invalid_client(await with_assertion(agents, signed), "not signed by a key")


@pytest.mark.parametrize(("iss", "sub"), [(OTHER_JWT_AGENT, JWT_AGENT), (JWT_AGENT, OTHER_JWT_AGENT)])
async def test_sub_and_iss_must_both_be_the_client(agents: RunningDeputy, iss: str, sub: str) -> None:
    """RFC 7523 §3 items 1-2: iss and sub are both the client_id."""
    key = OTHER_KEY if sub == OTHER_JWT_AGENT else EC_KEY
    assert_invalid_client(await with_assertion(agents, assertion(agents, sub, key=key, iss=iss, sub=sub)),
                          "iss and sub")


async def test_wrong_assertion_type_is_refused(agents: RunningDeputy) -> None:
    """RFC 7521 §4.2: client_assertion_type must be the JWT bearer type."""
    fields = [("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
              ("client_assertion", assertion(agents))]
    assert_invalid_client(await client_credentials(agents, auth=fields), "client_assertion_type")
    lone = await client_credentials(agents, auth=[("client_assertion_type", ASSERTION_TYPE)])
    assert lone.status_code == 400 and oauth_error(lone) == "invalid_request"


async def test_more_than_one_method_is_refused(agents: RunningDeputy) -> None:
    """OAuth 2.1 §2.4: exactly one client authentication method per request."""
    both = await client_credentials(agents, auth=[*assertion_fields(assertion(agents)),
                                                  ("client_secret", "anything")])
    assert both.status_code == 400 and oauth_error(both) == "invalid_request"
    basic = await client_credentials(agents, auth=assertion_fields(assertion(agents)),
                                     basic=(JWT_AGENT, "anything"))
    assert basic.status_code == 400 and oauth_error(basic) == "invalid_request"


async def test_registered_method_is_the_only_method(agents: RunningDeputy) -> None:
    """A secret client presenting an assertion, or a key client presenting a secret → invalid_client."""
    assert_invalid_client(await client_credentials(agents, auth=assertion_fields(assertion(agents, SECRET_AGENT))),
                          "must authenticate with client_secret_basic")
    assert_invalid_client(await client_credentials(agents, basic=(JWT_AGENT, SECRET_AGENT_SECRET)),
                          "must authenticate with private_key_jwt")


# --- the client credentials grant ---------------------------------------------------------------


async def test_client_credentials_with_secret_basic_and_post(agents: RunningDeputy) -> None:
    """The extension allows a client secret: client_secret_basic and client_secret_post both work."""
    basic = await client_credentials(agents, basic=(SECRET_AGENT, SECRET_AGENT_SECRET))
    assert basic.status_code == 200, basic.text
    assert claims_of(basic.json()["access_token"])["sub"] == SECRET_AGENT
    post = await client_credentials(agents, auth=[("client_id", POST_AGENT), ("client_secret", POST_AGENT_SECRET)],
                                    scope="demo:tools demo:admin")
    assert post.status_code == 200, post.text
    assert set(post.json()["scope"].split()) == {"demo:tools", "demo:admin"}
    wrong = await client_credentials(agents, basic=(SECRET_AGENT, "wrong"))
    assert_invalid_client(wrong)


async def test_client_credentials_requires_a_resource(agents: RunningDeputy) -> None:
    """MCP: resource is required (RFC 8707); an unknown one is invalid_target."""
    missing = await client_credentials(agents, basic=(SECRET_AGENT, SECRET_AGENT_SECRET), resource=None)
    assert missing.status_code == 400 and oauth_error(missing) == "invalid_request"
    for resource in ("https://elsewhere.example/mcp", f"{agents.url}/mcp/nope", "not a uri"):
        response = await client_credentials(agents, basic=(SECRET_AGENT, SECRET_AGENT_SECRET), resource=resource)
        assert response.status_code == 400 and oauth_error(response) == "invalid_target", resource


async def test_client_credentials_scope_stays_within_the_server(agents: RunningDeputy) -> None:
    """Scopes of another server, or unknown ones → invalid_scope."""
    for scope in ("other:tools", "demo:tools root"):
        response = await client_credentials(agents, basic=(SECRET_AGENT, SECRET_AGENT_SECRET), scope=scope)
        assert response.status_code == 400 and oauth_error(response) == "invalid_scope", scope


async def test_client_credentials_only_for_registered_confidential_clients(agents: RunningDeputy) -> None:
    """A public client, or one not registered for the grant → unauthorized_client."""
    public = await client_credentials(agents, auth=[("client_id", PUBLIC_CLIENT)])
    assert public.status_code == 400 and oauth_error(public) == "unauthorized_client"
    signed = assertion(agents, NO_GRANT_AGENT, key=OTHER_KEY)
    unregistered = await with_assertion(agents, signed)
    assert unregistered.status_code == 400 and oauth_error(unregistered) == "unauthorized_client"


async def test_metadata_advertises_the_new_endpoints(agents: RunningDeputy) -> None:
    """RFC 8414 §2: revocation and introspection endpoints, auth methods and assertion algorithms."""
    async with httpx.AsyncClient() as http:
        document = (await http.get(f"{agents.url}/.well-known/oauth-authorization-server")).json()
    assert document["revocation_endpoint"] == f"{agents.url}/revoke"
    assert document["introspection_endpoint"] == f"{agents.url}/introspect"
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    assert "client_credentials" in document["grant_types_supported"]
    algs = set(document["token_endpoint_auth_signing_alg_values_supported"])
    # RFC 9864: Ed25519 by its fully specified name; the deprecated polymorphic EdDSA is not advertised.
    assert {"ES256", "RS256", "PS256", "Ed25519"} <= algs
    assert "EdDSA" not in algs
    assert not {a for a in algs if a == "none" or a.startswith("HS")}
    assert "none" not in document["introspection_endpoint_auth_methods_supported"]
