"""Identities Deputy did not sign in itself: the JWT bearer grant (RFC 7523 §2.1, §3) and subject
tokens from outside issuers (RFC 8693), against a real Deputy with `[[trusted_issuers]]`.

- ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant; MCP enterprise-managed
  authorization): an enterprise IdP (`jwks_file`, accepted for `id_jag`) asserts a user
  for one registered confidential client and one MCP server;
- workload identity: a workload issuer (`jwks_uri` served by a test server, accepted for
  `workload`) vouches for a workload that has no client registration;
- subject tokens: an STS (accepted for `subject_token` only) issues the token an agent
  exchanges to act for its subject.

Each refusal names its OAuth error code, so a test fails if the request was refused for
another reason than the one it is about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deputy.delegation_rules import TrustedIssuer
from deputy.oauth.trusted_issuers import JWKS_REFRESH_INTERVAL, JWKS_TTL, AssertionRefused, TrustedIssuers
from tests.security.helpers import oauth_error
from tests.support.databases import database_url
from tests.support.delegation import (
    AGENT_A,
    AGENT_B,
    JWT_TOKEN_TYPE,
    agent_own_token,
    claims_of,
    delegation_config,
    exchange_token,
)
from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, RunningDeputy, running_deputy
from tests.support.idp import (
    ID_JAG_TYPE,
    JWT_BEARER,
    OMIT,
    Issuer,
    JwksServer,
    jwks_server,
    unknown_key,
)
from tests.support.oauth_flow import mcp_post, post_token

ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"

CLIENT = "enterprise-client"
CLIENT_SECRET = "enterprise-s3cret-for-tests-0123456789"
OTHER_CLIENT = "enterprise-client-2"
OTHER_SECRET = "enterprise-2-s3cret-for-tests-0123456"

IDP_ISSUER = "https://idp.enterprise.example"
WORKLOAD_ISSUER = "https://workloads.example"
ROTATING_ISSUER = "https://rotating-workloads.example"
ROTATING_REFRESH = 2  # seconds: this issuer's jwks_refresh_seconds, so the rotation test waits little
FLAKY_ISSUER = "https://flaky-workloads.example"
STS_ISSUER = "https://sts.example"
STRANGER_ISSUER = "https://stranger.example"

IN_PROCESS_AUDIENCE = "https://deputy.in-process.example"


@dataclass
class Env:
    deputy: RunningDeputy
    issuer: str  # Deputy's issuer, the audience of every assertion
    server: JwksServer
    idp: Issuer
    workloads: Issuer
    rotating: Issuer
    flaky: Issuer
    sts: Issuer
    stranger: Issuer
    rotating_warmed_at: float  # time.monotonic() when Deputy first fetched the rotating issuer's keys

    @property
    def resource(self) -> str:
        return self.deputy.resource("demo")


def _config(env_dir: Path, idp: Issuer, sts: Issuer, server: JwksServer) -> str:
    idp.write_jwks(env_dir / "idp.jwks.json")
    sts.write_jwks(env_dir / "sts.jwks.json")
    issuers = f'''
[[trusted_issuers]]
issuer = "{IDP_ISSUER}"
jwks_file = "idp.jwks.json"
accept = ["id_jag"]

[[trusted_issuers]]
issuer = "{WORKLOAD_ISSUER}"
jwks_uri = "{server.url('/workloads/jwks.json')}"
accept = ["workload"]

[[trusted_issuers]]
issuer = "{ROTATING_ISSUER}"
jwks_uri = "{server.url('/rotating/jwks.json')}"
accept = ["workload"]
jwks_refresh_seconds = {ROTATING_REFRESH}

[[trusted_issuers]]
issuer = "{FLAKY_ISSUER}"
jwks_uri = "{server.url('/flaky/jwks.json')}"
accept = ["workload"]

[[trusted_issuers]]
issuer = "{STS_ISSUER}"
jwks_file = "sts.jwks.json"
accept = ["subject_token"]
'''
    clients = "".join(f'''
[[clients]]
client_id = "{client_id}"
client_name = "Enterprise client {client_id}"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{secret}"
grant_types = ["{JWT_BEARER}"]
''' for client_id, secret in ((CLIENT, CLIENT_SECRET), (OTHER_CLIENT, OTHER_SECRET)))
    return clients + delegation_config(extra=issuers)


@pytest.fixture(scope="module")
def env(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-jwt-bearer-{backend}")
    idp, sts = Issuer(IDP_ISSUER, "idp"), Issuer(STS_ISSUER, "sts")
    workloads, rotating = Issuer(WORKLOAD_ISSUER, "wl"), Issuer(ROTATING_ISSUER, "rot")
    flaky, stranger = Issuer(FLAKY_ISSUER, "flaky"), Issuer(STRANGER_ISSUER, "stranger")
    with jwks_server() as server:
        server.publish("/workloads/jwks.json", workloads)
        server.publish("/rotating/jwks.json", rotating)
        server.answer("/flaky/jwks.json", {"error": "unavailable"}, status=503)
        with (database_url(backend, directory) as url,
              running_deputy(directory, url, upstream_url, _config(directory, idp, sts, server)) as deputy):
            issuer = httpx.get(f"{deputy.url}/.well-known/oauth-authorization-server", timeout=30).json()["issuer"]
            # Deputy caches the rotating issuer's keys now, so that the rotation test (last in this
            # module) finds a cached set without the new kid.
            warm = httpx.post(f"{deputy.url}/token", timeout=30, data={
                "grant_type": JWT_BEARER, "assertion": rotating.workload(aud=issuer),
                "resource": deputy.resource("demo")})
            assert warm.status_code == 200, warm.text
            yield Env(deputy, issuer, server, idp, workloads, rotating, flaky, sts, stranger, time.monotonic())


# --- helpers ------------------------------------------------------------------------------------


def id_jag(env: Env, **overrides: Any) -> str:
    """A valid ID-JAG from the trusted IdP for CLIENT and /mcp/demo; any claim or header overridden."""
    fields: dict[str, Any] = {"aud": env.issuer, "client_id": CLIENT, "resource": env.resource, **overrides}
    return env.idp.id_jag(**fields)


def workload(env: Env, issuer: Issuer | None = None, **overrides: Any) -> str:
    fields: dict[str, Any] = {"aud": env.issuer, **overrides}
    return (issuer or env.workloads).workload(**fields)


async def redeem(
    env: Env,
    assertion: str,
    *,
    client: tuple[str, str] | None = (CLIENT, CLIENT_SECRET),
    resource: str | None = None,
    scope: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> httpx.Response:
    """POST the jwt-bearer grant, as `client` (Basic; None: no client authentication at all)."""
    data: list[tuple[str, str]] = [("grant_type", JWT_BEARER), ("assertion", assertion)]
    if resource is not None:
        data.append(("resource", resource))
    if scope is not None:
        data.append(("scope", scope))
    data.extend(extra)
    return await post_token(env.deputy, data, basic=client)


def assert_refused(response: httpx.Response, code: str, because: str = "", status: int = 400) -> None:
    """An OAuth error response with `code` whose description contains `because`; never cached."""
    assert response.status_code == status, response.text
    assert oauth_error(response) == code, response.text
    assert response.headers["cache-control"] == "no-store"
    assert because in response.json().get("error_description", ""), response.text


def access_token(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body, "the client asks its IdP again; no refresh token (ID-JAG §5)"
    token: str = body["access_token"]
    return token, body


# --- ID-JAG: accepted ---------------------------------------------------------------------------


async def test_id_jag_is_redeemed_for_a_token_for_its_user_client_and_server(env: Env) -> None:
    """A valid ID-JAG → a token for its sub, for the client it names, for its resource only; the
    scope is the ID-JAG's ∩ the server's; it opens the MCP server."""
    assertion = id_jag(env, sub="alice@enterprise.example", scope="demo:admin demo:tools calendar.read")
    token, body = access_token(await redeem(env, assertion))
    assert body["scope"] == "demo:admin demo:tools"
    claims = claims_of(token)
    assert claims["sub"] == "alice@enterprise.example"
    assert claims["aud"] == env.resource
    assert claims["client_id"] == CLIENT
    assert claims["iss"] == env.issuer
    assert claims["scope"] == "demo:admin demo:tools"
    assert "act" not in claims
    response = await mcp_post(env.deputy, token)
    assert response.status_code == 200, response.text
    listed = await mcp_post(env.deputy, token, body={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                            headers={"Mcp-Session-Id": response.headers.get("mcp-session-id", "")})
    assert listed.status_code == 200, listed.text
    other = await mcp_post(env.deputy, token, server="other")
    assert other.status_code == 401, "the token is for /mcp/demo only"


async def test_id_jag_request_scope_and_resource_narrow(env: Env) -> None:
    """A form `resource` equal to the ID-JAG's is accepted; a requested scope narrows the grant."""
    assertion = id_jag(env, scope="demo:admin demo:tools")
    token, body = access_token(await redeem(env, assertion, resource=env.resource, scope="demo:tools"))
    assert body["scope"] == "demo:tools"
    assert claims_of(token)["scope"] == "demo:tools"


async def test_id_jag_signed_with_the_idps_rsa_key(env: Env) -> None:
    """RS256 is on the issuer's default algorithm list, and the IdP's JWK Set carries an RSA key."""
    token, _ = access_token(await redeem(env, id_jag(env, alg="RS256", sub="bob@enterprise.example")))
    assert claims_of(token)["sub"] == "bob@enterprise.example"


async def test_id_jag_without_scope_claim_gets_the_servers_required_scopes(env: Env) -> None:
    """No scope in the ID-JAG nor in the request: only the server's required scopes."""
    _, body = access_token(await redeem(env, id_jag(env, scope=OMIT)))
    assert body["scope"] == "demo:tools"


async def test_id_jag_without_scope_claim_cannot_be_widened_by_the_request(env: Env) -> None:
    """An ID-JAG that grants nothing in particular grants the least, not everything the server has."""
    assert_refused(await redeem(env, id_jag(env, scope=OMIT), scope="demo:tools demo:admin"), "invalid_scope",
                   "demo:admin")


async def test_metadata_advertises_the_id_jag_profile(env: Env) -> None:
    """MCP enterprise-managed authorization: an AS that accepts ID-JAGs says so (RFC 8414 metadata)."""
    async with httpx.AsyncClient(timeout=30) as http:
        document = (await http.get(f"{env.deputy.url}/.well-known/oauth-authorization-server")).json()
    assert document["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE]
    assert JWT_BEARER in document["grant_types_supported"]


async def test_metadata_without_an_id_jag_issuer_does_not_advertise_the_profile(deputy: RunningDeputy) -> None:
    """The default Deputy trusts no IdP: no ID-JAG profile in its metadata."""
    async with httpx.AsyncClient(timeout=30) as http:
        document = (await http.get(f"{deputy.url}/.well-known/oauth-authorization-server")).json()
    assert "authorization_grant_profiles_supported" not in document


# --- ID-JAG: refused ----------------------------------------------------------------------------


async def test_id_jag_replay_is_refused(env: Env) -> None:
    """The jti is accepted once (draft §5.1): the same ID-JAG a second time is invalid_grant."""
    assertion = id_jag(env)
    access_token(await redeem(env, assertion))
    assert_refused(await redeem(env, assertion), "invalid_grant", "replay")


async def test_id_jag_replay_of_a_jti_with_a_new_signature_is_refused(env: Env) -> None:
    """Replay is by (issuer, jti): a re-signed ID-JAG with a used jti is refused too."""
    access_token(await redeem(env, id_jag(env, jti="jti-reused-once")))
    assert_refused(await redeem(env, id_jag(env, jti="jti-reused-once", alg="RS256")), "invalid_grant", "replay")


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", OMIT])
async def test_id_jag_with_another_typ_is_a_workload_jwt_and_the_idp_is_not_trusted_for_that(
        env: Env, typ: Any) -> None:
    """Explicit typing (RFC 8725 §3.11): without ``typ oauth-id-jag+jwt`` the JWT is taken as a
    workload JWT, and the IdP is trusted for ID-JAGs only."""
    assert_refused(await redeem(env, id_jag(env, typ=typ)), "invalid_grant", "not trusted for a workload")


async def test_id_jag_typ_with_application_prefix_is_accepted(env: Env) -> None:
    """RFC 8725 §3.11 / RFC 7515 §4.1.9: ``application/oauth-id-jag+jwt`` is the same media type."""
    access_token(await redeem(env, id_jag(env, typ=f"application/{ID_JAG_TYPE}")))


@pytest.mark.parametrize("aud", ["RESOURCE", "https://other-as.example", ["https://other-as.example"], OMIT])
async def test_id_jag_for_another_audience_is_refused(env: Env, aud: Any) -> None:
    """aud must be Deputy's issuer — not the MCP server, not another AS, not absent."""
    assertion = id_jag(env, aud=env.resource if aud == "RESOURCE" else aud)
    assert_refused(await redeem(env, assertion), "invalid_grant", "aud")


async def test_id_jag_with_alg_none_is_refused(env: Env) -> None:
    """RFC 8725 §3.2: an unsigned JWT is never believed."""
    assert_refused(await redeem(env, id_jag(env, alg="none")), "invalid_grant", "alg")


async def test_id_jag_hmac_signed_with_the_idps_public_key_is_refused(env: Env) -> None:
    """RFC 8725 §3.1: HS256 "verified" with the public key would be forgeable by anyone who has it."""
    public_pem = env.idp.rsa_key.as_pem(private=False)
    for secret in (public_pem, b"some-shared-secret-0123456789abcdef"):
        forged = id_jag(env, alg="HS256", key=secret, kid=env.idp.rsa_key.kid)
        assert_refused(await redeem(env, forged), "invalid_grant", "alg")


async def test_id_jag_with_an_algorithm_the_issuer_does_not_allow_is_refused(env: Env) -> None:
    """PS256 with the IdP's real RSA key: the issuer's algorithms (ES256, RS256 by default) decide."""
    assert_refused(await redeem(env, id_jag(env, alg="PS256")), "invalid_grant", "alg")


async def test_id_jag_signed_by_an_unknown_key_is_refused(env: Env) -> None:
    """A key the IdP does not publish — with an unknown kid, or posing under the IdP's kid."""
    stranger = unknown_key("idp-ec-999")
    impostor = unknown_key(env.idp.ec_key.kid or "")
    for key in (stranger, impostor):
        assert_refused(await redeem(env, id_jag(env, key=key)), "invalid_grant", "signature")


async def test_id_jag_with_a_critical_header_is_refused(env: Env) -> None:
    """RFC 7515 §4.1.11: a crit parameter Deputy does not understand makes the JWS invalid."""
    forged = id_jag(env, header={"crit": ["exp-policy"], "exp-policy": "lenient"})
    assert_refused(await redeem(env, forged), "invalid_grant", "critical")


@pytest.mark.parametrize(("claims", "because"), [
    ({"exp": "PAST"}, "expired"),
    ({"exp": OMIT}, "exp"),
    ({"exp": "soon"}, "exp"),
    ({"nbf": "FUTURE"}, "nbf"),
    ({"iat": "FUTURE"}, "iat"),
    ({"sub": OMIT}, "sub"),
    ({"sub": ""}, "sub"),
])
async def test_id_jag_with_bad_times_or_subject_is_refused(env: Env, claims: dict[str, Any], because: str) -> None:
    """exp required and not past, nbf/iat not in the future (5 s leeway configured), sub required."""
    now = int(time.time())
    values = {"PAST": now - 120, "FUTURE": now + 600}
    assertion = id_jag(env, **{k: values.get(v, v) if isinstance(v, str) else v for k, v in claims.items()})
    assert_refused(await redeem(env, assertion), "invalid_grant", because)


@pytest.mark.parametrize("client_id", [OTHER_CLIENT, "someone-else", OMIT])
async def test_id_jag_for_another_client_is_refused(env: Env, client_id: Any) -> None:
    """The client that redeems must be the client_id the ID-JAG names (draft §5.1)."""
    assert_refused(await redeem(env, id_jag(env, client_id=client_id)), "invalid_grant", "another client")


async def test_id_jag_named_client_redeems_its_own(env: Env) -> None:
    """The other registered client redeems the ID-JAG that names it (the check is per client, not global)."""
    response = await redeem(env, id_jag(env, client_id=OTHER_CLIENT), client=(OTHER_CLIENT, OTHER_SECRET))
    token, _ = access_token(response)
    assert claims_of(token)["client_id"] == OTHER_CLIENT


async def test_id_jag_for_a_resource_deputy_does_not_protect_is_invalid_target(env: Env) -> None:
    """RFC 8707 §2: the ID-JAG's resource must be a configured server."""
    for resource in ("https://elsewhere.example/mcp", f"{env.deputy.url}/mcp/nope"):
        assert_refused(await redeem(env, id_jag(env, resource=resource)), "invalid_target", "resource")


async def test_id_jag_without_resource_is_refused(env: Env) -> None:
    assert_refused(await redeem(env, id_jag(env, resource=OMIT)), "invalid_grant", "resource")


async def test_id_jag_with_a_differing_form_resource_is_invalid_target(env: Env) -> None:
    """The form may only repeat the ID-JAG's resource, never name another server."""
    assertion = id_jag(env)
    for resource in (env.deputy.resource("other"), "https://elsewhere.example/mcp"):
        assert_refused(await redeem(env, assertion, resource=resource), "invalid_target", "resource")


async def test_id_jag_request_scope_wider_than_granted_is_invalid_scope(env: Env) -> None:
    """The request may narrow the ID-JAG's scope, never widen it; a refused request does not use up the ID-JAG."""
    assertion = id_jag(env, scope="demo:tools")
    assert_refused(await redeem(env, assertion, scope="demo:tools demo:admin"), "invalid_scope", "demo:admin")
    assert_refused(await redeem(env, assertion, scope="other:tools"), "invalid_scope", "other:tools")
    _, body = access_token(await redeem(env, assertion, scope="demo:tools"))
    assert body["scope"] == "demo:tools"


async def test_id_jag_without_jti_is_refused(env: Env) -> None:
    assert_refused(await redeem(env, id_jag(env, jti=OMIT)), "invalid_grant", "jti")


async def test_id_jag_without_client_authentication_is_refused(env: Env) -> None:
    """An ID-JAG is redeemed by the client it names, which must authenticate (RFC 6749 §5.2: invalid_client)."""
    response = await redeem(env, id_jag(env), client=None)
    assert_refused(response, "invalid_client", "authenticate", status=401)


async def test_id_jag_with_a_wrong_client_secret_is_refused(env: Env) -> None:
    response = await redeem(env, id_jag(env), client=(CLIENT, "not-the-secret-0123456789abcdef"))
    assert_refused(response, "invalid_client", status=401)


async def test_id_jag_from_a_client_not_registered_for_the_grant_is_unauthorized_client(env: Env) -> None:
    """A confidential client registered for the authorization code grant only."""
    response = await redeem(env, id_jag(env, client_id=CONFIDENTIAL_CLIENT),
                            client=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert_refused(response, "unauthorized_client", "jwt-bearer")


async def test_id_jag_from_a_public_client_is_refused(env: Env) -> None:
    """A public client (client_id in the form, no secret) is not registered for the grant either."""
    response = await redeem(env, id_jag(env, client_id="test-public"), client=None,
                            extra=[("client_id", "test-public")])
    assert_refused(response, "unauthorized_client")


async def test_id_jag_from_an_issuer_not_configured_is_refused(env: Env) -> None:
    """A well-formed ID-JAG whose iss is no [[trusted_issuers]] entry — or claims the IdP's iss with other keys."""
    assertion = env.stranger.id_jag(aud=env.issuer, client_id=CLIENT, resource=env.resource)
    assert_refused(await redeem(env, assertion), "invalid_grant", "not trusted for a id jag")
    posing = env.stranger.id_jag(aud=env.issuer, client_id=CLIENT, resource=env.resource, iss=IDP_ISSUER)
    assert_refused(await redeem(env, posing), "invalid_grant", "signature")


async def test_id_jag_from_the_subject_token_issuer_is_refused(env: Env) -> None:
    """An issuer trusted for subject tokens only does not issue ID-JAGs."""
    assertion = env.sts.id_jag(aud=env.issuer, client_id=CLIENT, resource=env.resource)
    assert_refused(await redeem(env, assertion), "invalid_grant", "not trusted for a id jag")


async def test_id_jag_with_an_overlong_subject_is_refused_not_a_server_error(env: Env) -> None:
    """A sub longer than Deputy stores (255 characters) is refused as invalid_grant on every backend."""
    assert_refused(await redeem(env, id_jag(env, sub="u" * 300)), "invalid_grant", "sub")


@pytest.mark.parametrize("exp", [10**20, 1e300, float("inf"), float("nan")])
async def test_id_jag_with_an_absurd_exp_is_refused_not_a_server_error(env: Env, exp: Any) -> None:
    """An exp no database column holds, or no number at all (JSON ``Infinity``/``NaN``, which Python's
    parser accepts), is refused as invalid_grant."""
    assert_refused(await redeem(env, id_jag(env, exp=exp)), "invalid_grant", "exp")


async def test_id_jag_auth_time_is_carried_into_the_token(env: Env) -> None:
    """When the user signed in at the IdP (auth_time) is when the token says she did."""
    signed_in = int(time.time()) - 300
    token, _ = access_token(await redeem(env, id_jag(env, auth_time=signed_in)))
    assert claims_of(token)["auth_time"] == signed_in


@pytest.mark.parametrize("auth_time", ["FUTURE", 10**20, -(10**20), "yesterday", float("nan")])
async def test_id_jag_with_an_impossible_auth_time_is_refused(env: Env, auth_time: Any) -> None:
    """An auth_time in the future, beyond any column, or not a time is refused (not stored, not a 500)."""
    value = int(time.time()) + 600 if auth_time == "FUTURE" else auth_time
    assert_refused(await redeem(env, id_jag(env, auth_time=value)), "invalid_grant", "auth_time")


async def test_assertion_that_is_not_a_jws_is_refused(env: Env) -> None:
    for assertion in ("not-a-jwt", "a.b.c", "ü.ü.ü"):
        assert_refused(await redeem(env, assertion), "invalid_grant")
    assert_refused(await post_token(env.deputy, [("grant_type", JWT_BEARER)], basic=(CLIENT, CLIENT_SECRET)),
                   "invalid_request", "assertion")


# --- workload identity --------------------------------------------------------------------------


async def test_workload_jwt_without_client_authentication_gets_a_token_for_the_workload(env: Env) -> None:
    """MCP workload identity federation: no registration; the token is the workload's, for the
    resource it names, never outliving its JWT, and opens the MCP server."""
    sub = "spiffe://workloads.example/ns/prod/sa/nightly-report"
    assertion = workload(env, sub=sub, lifetime=90)
    workload_exp = claims_of(assertion)["exp"]
    token, body = access_token(await redeem(env, assertion, client=None, resource=env.resource))
    assert body["scope"] == "demo:tools"
    claims = claims_of(token)
    assert claims["sub"] == sub
    assert claims["client_id"] == sub
    assert claims["aud"] == env.resource
    assert "auth_time" not in claims, "no user signed in"
    assert claims["exp"] <= workload_exp, "the token outlived the workload's JWT"
    response = await mcp_post(env.deputy, token)
    assert response.status_code == 200, response.text


async def test_workload_jwt_with_client_authentication_is_issued_to_the_client(env: Env) -> None:
    """A registered client presenting a workload JWT: sub is the workload, client_id the client."""
    assertion = workload(env, sub="spiffe://workloads.example/ns/prod/sa/batch", alg="RS256")
    token, _ = access_token(await redeem(env, assertion, resource=env.resource, scope="demo:admin"))
    claims = claims_of(token)
    assert claims["sub"] == "spiffe://workloads.example/ns/prod/sa/batch"
    assert claims["client_id"] == CLIENT
    assert claims["scope"] == "demo:admin"


async def test_id_jag_for_a_local_identity_is_refused(env: Env) -> None:
    """The IdP speaks for its own users, never for Deputy's clients (or users, whose ids are UUIDs)."""
    assert_refused(await redeem(env, id_jag(env, sub=AGENT_A)), "invalid_grant", "cannot speak for")


async def test_workload_posing_as_a_registered_client_is_refused(env: Env) -> None:
    """Without client authentication the workload's sub would become the token's client_id: a sub equal to
    a registered client's id (here an agent that may act for users) must not yield that client's token."""
    posing = workload(env, sub=AGENT_A)
    assert_refused(await redeem(env, posing, client=None, resource=env.resource), "invalid_grant",
                   "registered client")


async def test_workload_issuers_access_token_is_not_a_workload_assertion(env: Env) -> None:
    """RFC 8725 §3.11: a JWT typed as an access token is not accepted where an assertion is expected."""
    for typ in ("at+jwt", "application/at+jwt"):
        assert_refused(await redeem(env, workload(env, typ=typ), client=None, resource=env.resource),
                       "invalid_grant", "at+jwt")


async def test_workload_jwt_without_resource_is_invalid_request(env: Env) -> None:
    """RFC 8707: a workload must name the MCP server; nothing is assumed."""
    assert_refused(await redeem(env, workload(env), client=None), "invalid_request", "resource")


@pytest.mark.parametrize("resource", ["https://elsewhere.example/mcp", "/mcp/demo", "RESOURCE#fragment"])
async def test_workload_jwt_for_an_unknown_or_malformed_resource_is_invalid_target(env: Env, resource: str) -> None:
    resource = resource.replace("RESOURCE", env.resource)
    assert_refused(await redeem(env, workload(env), client=None, resource=resource), "invalid_target", "resource")


async def test_workload_jwt_asking_for_a_scope_of_another_server_is_invalid_scope(env: Env) -> None:
    response = await redeem(env, workload(env), client=None, resource=env.resource, scope="other:tools")
    assert_refused(response, "invalid_scope", "other:tools")


async def test_workload_jwt_from_an_untrusted_issuer_is_refused(env: Env) -> None:
    assertion = workload(env, env.stranger)
    assert_refused(await redeem(env, assertion, client=None, resource=env.resource), "invalid_grant",
                   "not trusted for a workload")


@pytest.mark.parametrize("name", ["idp", "sts"])
async def test_workload_jwt_from_an_issuer_not_trusted_for_workloads_is_refused(env: Env, name: str) -> None:
    """The IdP is trusted for ID-JAGs and the STS for subject tokens; neither vouches for workloads."""
    issuer = env.idp if name == "idp" else env.sts
    assertion = workload(env, issuer)
    assert_refused(await redeem(env, assertion, client=None, resource=env.resource), "invalid_grant",
                   "not trusted for a workload")


@pytest.mark.parametrize(("overrides", "because"), [
    ({"aud": "RESOURCE"}, "aud"),
    ({"aud": OMIT}, "aud"),
    ({"exp": "PAST"}, "expired"),
    ({"exp": OMIT}, "exp"),
    ({"sub": OMIT}, "sub"),
    ({"alg": "none"}, "alg"),
    ({"alg": "HS256", "key": b"workload-shared-secret-0123456789abcdef"}, "alg"),
    ({"key": "UNKNOWN"}, "signature"),
])
async def test_workload_jwt_refusals(env: Env, overrides: dict[str, Any], because: str) -> None:
    values: dict[str, Any] = {"RESOURCE": env.resource, "PAST": int(time.time()) - 120, "UNKNOWN": unknown_key()}
    fields = {k: values.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
    response = await redeem(env, workload(env, **fields), client=None, resource=env.resource)
    assert_refused(response, "invalid_grant", because)


async def test_workload_issuer_whose_jwks_uri_fails_is_refused_then_recovers(env: Env) -> None:
    """An unreachable JWK Set refuses the assertion (invalid_grant, not a server error) and is
    not remembered: once the issuer serves its keys, the next assertion is accepted."""
    before = env.server.fetched("/flaky/jwks.json")
    response = await redeem(env, workload(env, env.flaky), client=None, resource=env.resource)
    assert_refused(response, "invalid_grant", "JWK Set")
    assert env.server.fetched("/flaky/jwks.json") > before
    env.server.publish("/flaky/jwks.json", env.flaky)
    access_token(await redeem(env, workload(env, env.flaky), client=None, resource=env.resource))


# --- subject tokens from a trusted issuer (RFC 8693) ----------------------------------------------


def sts_token(env: Env, issuer: Issuer | None = None, **overrides: Any) -> str:
    fields: dict[str, Any] = {"aud": env.issuer, "sub": "carol@sts.example",
                              "extra": {"may_act": {"client_id": AGENT_A}}, **overrides}
    return (issuer or env.sts).workload(**fields)


async def test_subject_token_from_a_trusted_issuer_is_exchanged_with_act(env: Env) -> None:
    """Agent A, named by the subject token's may_act, acts for its subject on /mcp/demo."""
    actor = await agent_own_token(env.deputy, AGENT_A)
    response = await exchange_token(env.deputy, AGENT_A, sts_token(env), actor,
                                    subject_token_type=JWT_TOKEN_TYPE, extra=[("resource", env.resource)])
    token, body = access_token(response)
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    claims = claims_of(token)
    assert claims["sub"] == "carol@sts.example"
    assert claims["client_id"] == AGENT_A
    assert claims["aud"] == env.resource
    assert claims["act"]["sub"] == AGENT_A
    assert "act" not in claims["act"], "the outside subject token carried no chain"
    gateway = await mcp_post(env.deputy, token)
    assert gateway.status_code == 200, gateway.text


async def test_subject_token_exchange_without_resource_or_audience_is_invalid_request(env: Env) -> None:
    """An outside subject token names no Deputy server; the request must."""
    actor = await agent_own_token(env.deputy, AGENT_A)
    response = await exchange_token(env.deputy, AGENT_A, sts_token(env), actor, subject_token_type=JWT_TOKEN_TYPE)
    assert_refused(response, "invalid_request", "resource or audience")


async def test_subject_token_from_a_workload_only_issuer_is_refused(env: Env) -> None:
    actor = await agent_own_token(env.deputy, AGENT_A)
    response = await exchange_token(env.deputy, AGENT_A, sts_token(env, env.workloads), actor,
                                    subject_token_type=JWT_TOKEN_TYPE, extra=[("resource", env.resource)])
    assert_refused(response, "invalid_grant", "not trusted for a subject token")


async def test_subject_token_whose_may_act_names_another_agent_is_refused(env: Env) -> None:
    actor = await agent_own_token(env.deputy, AGENT_A)
    subject = sts_token(env, extra={"may_act": {"client_id": AGENT_B}})
    response = await exchange_token(env.deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE,
                                    extra=[("resource", env.resource)])
    assert_refused(response, "invalid_grant", "may_act")


async def test_subject_token_signed_by_an_unknown_key_is_refused(env: Env) -> None:
    actor = await agent_own_token(env.deputy, AGENT_A)
    response = await exchange_token(env.deputy, AGENT_A, sts_token(env, key=unknown_key()), actor,
                                    subject_token_type=JWT_TOKEN_TYPE, extra=[("resource", env.resource)])
    assert_refused(response, "invalid_grant", "signature")


async def test_subject_token_issuer_jwt_is_not_a_jwt_bearer_grant(env: Env) -> None:
    """The STS's JWT at the jwt-bearer grant (as an ID-JAG by typ, or as a workload JWT): refused."""
    as_jag = env.sts.id_jag(aud=env.issuer, client_id=CLIENT, resource=env.resource)
    assert_refused(await redeem(env, as_jag), "invalid_grant", "not trusted for a id jag")
    assert_refused(await redeem(env, sts_token(env), client=None, resource=env.resource), "invalid_grant",
                   "not trusted for a workload")


# --- the issuer key cache, in process with a clock the test moves ------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def in_process(issuer: Issuer, jwks_uri: str, clock: Clock) -> TrustedIssuers:
    trusted = TrustedIssuer(issuer=issuer.issuer, audience=IN_PROCESS_AUDIENCE, algorithms=("ES256", "RS256"),
                            purposes=frozenset({"workload"}), jwks_uri=jwks_uri)
    return TrustedIssuers((trusted,), leeway=5, clock=clock)


async def test_cached_issuer_keys_outlive_a_failing_jwks_uri() -> None:
    """When the cached set is due for a refresh and the issuer answers 503, the keys Deputy has
    keep verifying (an outage at the issuer is not an outage of Deputy)."""
    issuer = Issuer("https://in-process.example", "inproc")
    with jwks_server() as server:
        clock = Clock()
        trusted = in_process(issuer, server.publish("/jwks.json", issuer), clock)
        token = issuer.workload(aud=IN_PROCESS_AUDIENCE, sub="steady", lifetime=3600)
        assert (await trusted.verify(token, "workload")).subject == "steady"
        server.answer("/jwks.json", {"error": "unavailable"}, status=503)
        clock.now += JWKS_TTL + 1
        assert (await trusted.verify(token, "workload")).subject == "steady"
        assert server.fetched("/jwks.json") == 2, "the due refresh was attempted"


async def test_unknown_kid_refetches_the_jwks_at_most_every_refresh_interval() -> None:
    """A kid the cached set lacks makes Deputy fetch again, but not more often than every 30 s
    after the last fetch, so a stream of bogus kids is not a stream of fetches."""
    issuer = Issuer("https://in-process.example", "inproc")
    with jwks_server() as server:
        clock = Clock()
        trusted = in_process(issuer, server.publish("/jwks.json", issuer), clock)
        await trusted.verify(issuer.workload(aud=IN_PROCESS_AUDIENCE), "workload")
        issuer.rotate()
        rotated = issuer.workload(aud=IN_PROCESS_AUDIENCE, sub="rotated", lifetime=3600)
        for _ in range(3):
            with pytest.raises(AssertionRefused, match="signature"):
                await trusted.verify(rotated, "workload")
        assert server.fetched("/jwks.json") == 1
        clock.now += JWKS_REFRESH_INTERVAL
        assert (await trusted.verify(rotated, "workload")).subject == "rotated"
        assert server.fetched("/jwks.json") == 2


# --- key rotation (last: it waits out the issuer's refetch interval) ------------------------------


async def test_workload_issuer_key_rotation_is_picked_up_from_the_jwks_uri(env: Env) -> None:
    """The issuer rotates its keys; a JWT under the new kid makes Deputy fetch the JWK Set again
    (it had the old set cached) and is accepted; the retired key is refused from then on."""
    path = "/rotating/jwks.json"
    before = env.server.fetched(path)
    assert before >= 1, "Deputy should have cached the rotating issuer's keys when the module started"
    old_ec, _ = env.rotating.rotate()
    # Deputy refetches for an unknown kid at most every jwks_refresh_seconds after its last fetch
    # (see the in-process test above): wait that out since the module's warm-up fetch.
    remaining = env.rotating_warmed_at + ROTATING_REFRESH + 0.5 - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)
    token, _ = access_token(await redeem(env, workload(env, env.rotating, sub="rotated"), client=None,
                                         resource=env.resource))
    assert claims_of(token)["sub"] == "rotated"
    assert env.server.fetched(path) > before
    retired = workload(env, env.rotating, key=old_ec)
    assert_refused(await redeem(env, retired, client=None, resource=env.resource), "invalid_grant", "signature")

