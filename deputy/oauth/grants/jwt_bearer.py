"""The JWT bearer grant (RFC 7523 §2.1, §3): identities Deputy did not sign in itself.

``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with an ``assertion`` from a
``[[trusted_issuers]]`` entry (checked by :mod:`deputy.oauth.trusted_issuers`). Two profiles:

- **ID-JAG** (``typ: oauth-id-jag+jwt``; draft-ietf-oauth-identity-assertion-authz-grant,
  MCP enterprise-managed authorization): an enterprise IdP asserts a user for one
  client and one MCP server. The client must authenticate and be the ``client_id``
  the assertion names; ``aud`` is Deputy's issuer; ``resource`` names a configured
  server and the token is for that server only; ``jti`` is accepted once; the scope
  is the assertion's (the server's required scopes when it names none) ∩ the
  server's ∩ the request's. No refresh token: the client
  asks the IdP for a new ID-JAG.
- **Workload identity** (MCP workload identity federation draft): a workload's JWT
  from an issuer trusted for ``workload``, with ``resource`` required and no client
  registration; the token's ``sub`` and ``client_id`` are the workload (or the
  client, when one authenticates) — never a registered client's id unless that
  client authenticates — and it never outlives the workload's JWT. An access token
  (``typ: at+jwt``) is not accepted as a workload assertion (RFC 8725 §3.11).

Either way a client that comes with the assertion must authenticate. A public client
names itself with a bare ``client_id`` and proves nothing (RFC 6749 §2.1, §3.2.1), so
one presented here is ``unauthorized_client`` (RFC 6749 §5.2): else anyone holding a
workload's JWT could add ``client_id=<a public app>`` and get a token whose client —
the policy's ``context.agent``, the client whose ``may_act`` rules its tokens carry —
is that app.
"""

from __future__ import annotations

from collections.abc import Mapping

from joserfc import jws
from joserfc.errors import JoseError
from starlette.responses import Response

from deputy.bounded_json import check_jws_depth
from deputy.clock import now
from deputy.config import JWT_BEARER, canonical_resource
from deputy.numeric_date import is_time
from deputy.oauth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    UnauthorizedClient,
)
from deputy.oauth.grants.issue import token_response
from deputy.oauth.grants.targets import granted_scope, requested_server
from deputy.oauth.trusted_issuers import AssertionRefused, VerifiedAssertion
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientNotActive, Grant

ID_JAG_TYPE = "oauth-id-jag+jwt"
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
GRANT_PROFILE_ID_JAG = "urn:ietf:params:oauth:grant-profile:id-jag"
MAX_JTI_LENGTH = 255


async def jwt_bearer(services: Services, form: Mapping[str, str], client: Client | None) -> Response:
    if client is not None and client.is_public:
        raise UnauthorizedClient("a client presented with an assertion must authenticate; a public client cannot")
    assertion = form.get("assertion")
    if not assertion:
        raise InvalidRequest("assertion is required")
    try:
        check_jws_depth(assertion)  # before the JOSE library parses the header with json.loads
        typ = str(jws.extract_compact(assertion.encode("ascii")).headers().get("typ", "")).lower()
    except (JoseError, ValueError, UnicodeError):
        raise InvalidGrant("assertion is not a compact JWS") from None
    if typ in (ID_JAG_TYPE, f"application/{ID_JAG_TYPE}"):
        return await _id_jag(services, form, assertion, client)
    return await _workload(services, form, assertion, client)


async def _id_jag(services: Services, form: Mapping[str, str], assertion: str, client: Client | None) -> Response:
    if client is None:  # RFC 6749 §5.2: "no client authentication included" is invalid_client
        raise InvalidClient("an ID-JAG is redeemed by the client it names, which must authenticate")
    verified = await _verified(services, assertion, "id_jag", ID_JAG_TYPE)
    claims = verified.claims
    if claims.get("client_id") != client.client_id:
        raise InvalidGrant("the ID-JAG was issued to another client")
    named = claims.get("resource")
    if not isinstance(named, str):
        raise InvalidGrant("the ID-JAG must name one resource")
    server = services.settings.server_for_resource(named)
    if server is None:
        raise InvalidTarget("the ID-JAG's resource is not a server this authorization server protects")
    resource = form.get("resource")
    if resource is not None and canonical_resource(resource) != server.resource:
        raise InvalidTarget("resource differs from the ID-JAG's resource")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidGrant("the ID-JAG needs a jti")
    if await services.names_local_identity(verified.subject):
        raise InvalidGrant("the ID-JAG's sub is the id of a Deputy user or client; the IdP cannot speak for them")
    leeway = services.settings.clock_leeway
    auth_time = claims.get("auth_time", claims.get("iat"))
    if auth_time is not None and not (is_time(auth_time) and 0 <= auth_time <= now() + leeway):
        raise InvalidGrant("the ID-JAG's auth_time is in the future or not a time")
    # The intersection with what the IdP granted; an ID-JAG granting nothing in particular gets the least.
    granted = claims.get("scope")
    scope = granted_scope(form, server,
                          set(granted.split()) if isinstance(granted, str) else set(server.required_scopes))
    # Last, once nothing else can refuse it: a refused request does not use up the ID-JAG.
    if not await services.clients.remember_assertion(verified.issuer.issuer, jti, verified.expires_at + leeway):
        raise InvalidGrant("the ID-JAG was already used (jti replay)")
    grant = await _create(services, client, client_id=client.client_id, user_id=verified.subject,
                          resource=server.resource, scope=scope,
                          auth_time=int(auth_time) if auth_time is not None else now())
    return await token_response(services, grant, scope, None, grant_type=JWT_BEARER)


async def _workload(services: Services, form: Mapping[str, str], assertion: str, client: Client | None) -> Response:
    verified = await _verified(services, assertion, "workload", None)
    if str(verified.header.get("typ", "")).lower() in ACCESS_TOKEN_TYPES:
        # RFC 8725 §3.11: an access token the issuer minted for Deputy is not an assertion about a workload.
        raise InvalidGrant("assertion refused: an access token (typ at+jwt) is not a workload assertion")
    speaks_for_itself = client is not None and client.client_id == verified.subject
    if not speaks_for_itself and await services.names_local_identity(verified.subject):
        # The workload's sub becomes the token's sub (and, unregistered, its client_id): never a local name.
        raise InvalidGrant("the workload's sub is the id of a Deputy user or registered client")
    server = requested_server(services.settings, form)
    scope = granted_scope(form, server)
    grant = await _create(services, client, client_id=client.client_id if client is not None else verified.subject,
                          user_id=verified.subject, resource=server.resource, scope=scope, auth_time=now())
    return await token_response(services, grant, scope, None, user_authenticated=False,
                                expires_at=verified.expires_at, grant_type=JWT_BEARER)


async def _create(services: Services, client: Client | None, *, client_id: str, user_id: str, resource: str,
                  scope: str, auth_time: int) -> Grant:
    """The grant; a client that authenticated must still be active when it is written (a workload without a
    registered client has no row to check)."""
    try:
        return await services.grants.create(client_id=client_id, user_id=user_id, resource=resource, scope=scope,
                                            auth_time=auth_time, registered_client=client is not None)
    except ClientNotActive:
        raise InvalidClient("this client is no longer served") from None


async def _verified(services: Services, assertion: str, purpose: str, typ: str | None) -> VerifiedAssertion:
    try:
        return await services.trusted_issuers.verify(assertion, purpose, typ=typ)
    except AssertionRefused as exc:
        raise InvalidGrant(f"assertion refused: {exc.reason}") from None
