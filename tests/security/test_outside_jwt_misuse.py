"""Outside JWTs used for what they are not: a real Deputy trusting an enterprise IdP and a workload issuer.

The IdP is trusted for both ID-JAGs and RFC 8693 subject tokens, and a
``[[delegation.may_act]] client = "*"`` rule lets agent B act for the subject of any
token — the configuration in which a JWT of one kind, passed off as another, would
gain the most:

- an ID-JAG (``typ: oauth-id-jag+jwt``) is redeemed by the jwt-bearer grant alone, by the
  client it names, once, for the server it names; as a token-exchange subject token it is
  refused, whatever ``resource`` the request names (RFC 8725 §3.11 explicit typing);
- a subject token typed as another kind of JWT is refused; a plain JWT or an access token
  is exchanged;
- the hops of an outside subject token's ``act`` chain are that issuer's statement: the
  exchanged token says so, whatever ``iss`` the outside issuer wrote into them (RFC 8693
  §4.1; :mod:`deputy.act_chain`);
- a workload's JWT cannot borrow the identity of a public client named by a bare
  ``client_id`` (RFC 7523 §3.1, RFC 6749 §5.2).

Each refusal is checked for its status and OAuth error code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

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
from tests.support.deputy_process import REDIRECT_URI, RunningDeputy, running_deputy
from tests.support.idp import JWT_BEARER, OMIT, Issuer
from tests.support.oauth_flow import mcp_post, post_token

IDP_ISSUER: Final = "https://idp.enterprise.example"
WORKLOAD_ISSUER: Final = "https://workloads.example"
CLIENT: Final = "enterprise-client"  # confidential, redeems the IdP's ID-JAGs
CLIENT_SECRET: Final = "enterprise-s3cret-for-tests-0123456789"
PUBLIC_APP: Final = "public-app"  # a public client registered for jwt-bearer; agent A may act for its users
WORKLOAD: Final = "spiffe://workloads.example/ns/prod/sa/reporter"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"


@dataclass
class Env:
    deputy: RunningDeputy
    idp: Issuer
    workloads: Issuer

    def resource(self, server: str) -> str:
        return self.deputy.resource(server)


def _config(directory: Path, idp: Issuer, workloads: Issuer) -> str:
    idp.write_jwks(directory / "idp.jwks.json")
    workloads.write_jwks(directory / "workloads.jwks.json")
    return delegation_config(extra=f'''
[[delegation.may_act]]
client = "*"
actors = ["{AGENT_B}"]

[[delegation.may_act]]
client = "{PUBLIC_APP}"
actors = ["{AGENT_A}"]

[[trusted_issuers]]
issuer = "{IDP_ISSUER}"
jwks_file = "idp.jwks.json"
accept = ["id_jag", "subject_token"]

[[trusted_issuers]]
issuer = "{WORKLOAD_ISSUER}"
jwks_file = "workloads.jwks.json"
accept = ["workload"]

[[clients]]
client_id = "{CLIENT}"
client_name = "Enterprise client"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{CLIENT_SECRET}"
grant_types = ["{JWT_BEARER}"]

[[clients]]
client_id = "{PUBLIC_APP}"
client_name = "A public app"
redirect_uris = ["{REDIRECT_URI}"]
grant_types = ["authorization_code", "{JWT_BEARER}"]
''')


@pytest.fixture(scope="module")
def env(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    directory = tmp_path_factory.mktemp(f"deputy-outside-jwts-{backend}")
    idp, workloads = Issuer(IDP_ISSUER, "idp"), Issuer(WORKLOAD_ISSUER, "wl")
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, _config(directory, idp, workloads)) as deputy):
        yield Env(deputy, idp, workloads)


def assert_refused(response: httpx.Response, code: str, because: str = "", status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert oauth_error(response) == code, response.text
    assert response.headers["cache-control"] == "no-store"
    assert because in response.json().get("error_description", ""), response.text


def subject_token(env: Env, **overrides: Any) -> str:
    """A JWT from the IdP about carol, for Deputy; any claim or header (``typ``) overridden."""
    fields: dict[str, Any] = {"aud": env.deputy.url, "sub": "carol@enterprise.example", "scope": "demo:tools",
                              **overrides}
    return env.idp.workload(**fields)


async def b_exchanges(env: Env, subject: str, server: str = "demo",
                      subject_token_type: str = JWT_TOKEN_TYPE) -> httpx.Response:
    """Agent B, with its own token for `server`, exchanges `subject` for a token for `server`."""
    actor = await agent_own_token(env.deputy, AGENT_B, env.resource(server))
    return await exchange_token(env.deputy, AGENT_B, subject, actor, subject_token_type=subject_token_type,
                                extra=[("resource", env.resource(server))])


# --- an ID-JAG is not a subject token ------------------------------------------------------------


async def test_id_jag_is_not_a_subject_token(env: Env) -> None:
    """An ID-JAG the IdP issued to the enterprise client for /mcp/demo, with no scope of its own: agent B (whom
    the client="*" rule admits) cannot exchange it for /mcp/other — nor for /mcp/demo, nor twice — as either
    subject token type. Its own client still redeems it at the jwt-bearer grant, once, for /mcp/demo only."""
    jag = env.idp.id_jag(aud=env.deputy.url, client_id=CLIENT, resource=env.resource("demo"), scope=OMIT)
    for server in ("other", "other", "demo"):
        for token_type in (JWT_TOKEN_TYPE, ACCESS_TOKEN_TYPE):
            assert_refused(await b_exchanges(env, jag, server, token_type), "invalid_grant",
                           "not oauth-id-jag+jwt")

    redeem = [("grant_type", JWT_BEARER), ("assertion", jag)]
    redeemed = await post_token(env.deputy, redeem, basic=(CLIENT, CLIENT_SECRET))
    assert redeemed.status_code == 200, redeemed.text
    claims = claims_of(redeemed.json()["access_token"])
    assert (claims["client_id"], claims["aud"]) == (CLIENT, env.resource("demo"))
    assert_refused(await post_token(env.deputy, redeem, basic=(CLIENT, CLIENT_SECRET)), "invalid_grant", "replay")


# Explicitly typed as another kind of JWT (RFC 8725 §3.11), each with its own rules: refused as a subject token.
OTHER_KINDS: Final = ("oauth-id-jag+jwt", "application/oauth-id-jag+jwt", "OAuth-ID-JAG+JWT", "secevent+jwt",
                      "logout+jwt", "dpop+jwt", "token-introspection+jwt", "client-authentication+jwt", "JOSE", 5)
# A JWT that says nothing more, or an access token its issuer minted (RFC 9068): what token exchange is for.
SUBJECT_KINDS: Final = (OMIT, "JWT", "jwt", "application/jwt", "at+jwt", "application/at+jwt", "AT+JWT")


async def test_subject_token_typed_as_another_kind_of_jwt_is_refused(env: Env) -> None:
    """RFC 8725 §3.11: a subject token's typ, when it has one, says JWT or access token; any other kind of JWT
    the IdP signed (an ID-JAG, a security event, a DPoP proof...) is refused, never exchanged."""
    for typ in OTHER_KINDS:
        response = await b_exchanges(env, subject_token(env, typ=typ))
        assert response.status_code == 400, (typ, response.text)
        assert_refused(response, "invalid_grant", "typ")
    for kind in SUBJECT_KINDS:
        response = await b_exchanges(env, subject_token(env, typ=kind))
        assert response.status_code == 200, (kind, response.text)
        assert claims_of(response.json()["access_token"])["sub"] == "carol@enterprise.example"


# --- the act chain of an outside token ----------------------------------------------------------


async def test_outside_chain_hops_are_the_outside_issuers_statement(env: Env) -> None:
    """The IdP wrote Deputy's issuer (and a third party's) into its act chain: Deputy minted none of those
    hops, so the exchanged token attributes each to the IdP; only B's own hop is Deputy's."""
    chain = {"sub": AGENT_A, "client_id": AGENT_A, "iss": env.deputy.url,
             "act": {"sub": "nightly-batch", "iss": "https://third-party.example"}}
    response = await b_exchanges(env, subject_token(env, act=chain))
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert claims_of(token)["act"] == {
        "sub": AGENT_B, "client_id": AGENT_B, "iss": env.deputy.url,
        "act": {"sub": AGENT_A, "client_id": AGENT_A, "iss": IDP_ISSUER,
                "act": {"sub": "nightly-batch", "iss": IDP_ISSUER}}}
    assert (await mcp_post(env.deputy, token)).status_code == 200


# --- a workload does not become a public client ----------------------------------------------------


async def test_workload_jwt_cannot_borrow_a_public_clients_identity(env: Env) -> None:
    """A public client proves nothing at the token endpoint: naming it by client_id beside a workload's JWT must
    not make its token the app's (context.agent, and the may_act rules for the app's users). Refused
    unauthorized_client, as an ID-JAG presented by it is; the workload alone still gets a token of its own."""
    assertion = env.workloads.workload(aud=env.deputy.url, sub=WORKLOAD)
    data = [("grant_type", JWT_BEARER), ("assertion", assertion), ("resource", env.resource("demo"))]
    assert_refused(await post_token(env.deputy, [*data, ("client_id", PUBLIC_APP)]), "unauthorized_client",
                   "public")
    jag = env.idp.id_jag(aud=env.deputy.url, client_id=PUBLIC_APP, resource=env.resource("demo"))
    assert_refused(await post_token(env.deputy, [("grant_type", JWT_BEARER), ("assertion", jag),
                                                 ("client_id", PUBLIC_APP)]), "unauthorized_client")

    own = await post_token(env.deputy, data)
    assert own.status_code == 200, own.text
    claims = claims_of(own.json()["access_token"])
    assert (claims["sub"], claims["client_id"]) == (WORKLOAD, WORKLOAD)
