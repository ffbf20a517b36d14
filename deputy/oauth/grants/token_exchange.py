"""Token exchange: "this agent, acting for Alice, for this task" (RFC 8693 §2, §4.1, §4.4).

``grant_type=urn:ietf:params:oauth:grant-type:token-exchange`` from a client that
authenticates. The request names:

- ``subject_token`` — whom the new token is for: a Deputy access token (its grant
  must be live) or a JWT from a ``[[trusted_issuers]]`` entry that accepts
  ``subject_token``. Such a JWT is typed explicitly or not at all (RFC 8725 §3.11):
  its ``typ`` is absent, ``JWT`` (RFC 7519 §5.1: a JWT that claims to be nothing more
  particular) or ``at+jwt`` (RFC 9068 §2.1: an access token its issuer minted for
  Deputy — the token RFC 8693 §1 exists to exchange), each with or without the
  ``application/`` prefix. Any other ``typ`` names another kind of JWT with rules of
  its own, and is ``invalid_grant``: an ID-JAG (``oauth-id-jag+jwt``) is redeemed only
  by the jwt-bearer grant, once, by the client it names, for the server it names
  (:mod:`deputy.oauth.grants.jwt_bearer`) — exchanged, it would be none of these —
  and a security event, a logout token or a DPoP proof is not a statement of whom a
  token is for;
- ``actor_token`` — who will act: the requesting client's own Deputy token
  (client credentials; ``sub`` and ``client_id`` both the client) or an assertion
  it signed with its registered keys (RFC 7523 §3, ``jti`` used once). The actor
  is always the authenticated client; ``may_act`` in the subject token must admit it.
  Without an actor token only the client the subject token was issued to may
  exchange it — to narrow it — and the chain it carries is kept as it is.

The issued token (§2.2.1, ``issued_token_type`` access token, no refresh token):
``sub`` of the subject; ``act`` = the new actor outermost, then the subject's chain
(depth at most ``delegation.max_depth``; a chain is never dropped). The hops of an
outside subject token's chain are that issuer's statement, and each carries its
``iss`` whatever ``iss`` the hop named — Deputy's own or a third party's — so ``iss``
of a hop is always who vouches for it (§4.1; :mod:`deputy.act_chain`); ``aud`` exactly
one server, which for a Deputy subject token must be the server it was issued for
(``resource``/``audience`` may only narrow); ``scope`` = subject ∩ actor's
allowance ∩ request, never wider; lifetime ≤ min(subject, actor token,
``delegation.token_ttl``); ``txn`` kept from the subject, else the request's, else
new. Its grant depends on the subject token's grant and the actor token's
(:mod:`deputy.storage.exchanged_grants`): revoking either — Alice's consent, or the
agent's own token — revokes it and everything exchanged from it. An actor proven
by an assertion (RFC 7523 §3) has no grant to record: its authority is the client's
registration, and withdrawing the client revokes every grant issued to it, exchanged
ones included.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import Response

from deputy.act_chain import Actor, MalformedChain, may_act_allows, parse_act
from deputy.clock import now
from deputy.config import TOKEN_EXCHANGE, UpstreamServer
from deputy.oauth.access_tokens import AccessTokenClaims, InvalidToken
from deputy.oauth.client_assertions import AssertionContext, verify_client_assertion
from deputy.oauth.client_auth import confirmable
from deputy.oauth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    UnauthorizedClient,
)
from deputy.oauth.grants.issue import token_response
from deputy.oauth.grants.targets import granted_scope
from deputy.oauth.trusted_issuers import AssertionRefused
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientChanged, ClientNotActive, HandleRefused

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
TXN = re.compile(r"^[A-Za-z0-9._~:/+=-]{1,128}$")
# The ``typ`` header values (RFC 7515 §4.1.9; not the RFC 8693 token type URIs above) an outside subject token may
# carry, as explicit_type compares them; None: no typ. Why these: the module docstring.
SUBJECT_JWT_TYPES: frozenset[str | None] = frozenset({None, "jwt", "at+jwt"})


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom the exchanged token is for, as its subject token describes them."""

    sub: str
    client_id: str | None  # the Deputy client the subject token was issued to; None for an outside token
    scopes: frozenset[str] | None  # None: the token set no scope of Deputy's servers
    expires_at: int
    chain: tuple[Actor, ...]
    may_act: object
    txn: str | None
    grant_id: str | None
    auth_time: int | None
    resource: str | None  # the one server a Deputy token is for


@dataclass(frozen=True, slots=True)
class ActorProof:
    actor: Actor
    allowance: frozenset[str] | None  # scopes the actor may use; None: not limited by its proof
    expires_at: int | None
    grant_id: str | None  # the actor token's grant, which must still be live; None for an assertion


async def token_exchange(services: Services, form: Mapping[str, str], client: Client) -> Response:
    if client.is_public:
        raise UnauthorizedClient("token exchange is only for clients that authenticate")
    requested_type = form.get("requested_token_type", ACCESS_TOKEN_TYPE)
    if requested_type != ACCESS_TOKEN_TYPE:
        raise InvalidRequest(f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    subject = await _subject(services, form)
    proof = await _actor(services, form, client)
    server = _target(services, form, subject)
    policy = services.settings.delegation
    if proof is None:
        if subject.client_id != client.client_id:
            raise InvalidRequest("actor_token is required to act for a token issued to another client")
        chain = subject.chain  # narrowing one's own token keeps its chain exactly
    else:
        if not may_act_allows(subject.may_act, proof.actor):
            raise InvalidGrant("the subject token's may_act does not name this actor")
        chain = (proof.actor, *subject.chain)
        if len(chain) > policy.max_depth:
            raise InvalidRequest(f"the delegation chain would exceed {policy.max_depth} actors")
    scope = _scope(form, server, subject, proof)
    t = now()
    expires_at = min(e for e in (subject.expires_at, proof.expires_at if proof else None, t + policy.token_ttl)
                     if e is not None)
    if expires_at <= t:
        raise InvalidGrant("the subject or actor token has expired")
    txn = _txn(form, subject)
    try:
        grant = await services.grants.create(
            client_id=client.client_id, user_id=subject.sub, resource=server.resource, scope=scope,
            auth_time=subject.auth_time or t, parent_grant_id=subject.grant_id,
            actor_grant_id=proof.grant_id if proof is not None else None, confirm=confirmable(client))
    except ClientChanged:
        raise  # the token endpoint authenticates the client again, against its row as stored
    except ClientNotActive:
        raise InvalidClient("this client is no longer served") from None
    except HandleRefused as exc:
        raise InvalidGrant(exc.reason) from None
    return await token_response(services, grant, scope, None, user_authenticated=subject.auth_time is not None,
                                chain=chain, txn=txn, expires_at=expires_at, ttl=policy.token_ttl,
                                issued_token_type=ACCESS_TOKEN_TYPE, grant_type=TOKEN_EXCHANGE)


async def _subject(services: Services, form: Mapping[str, str]) -> Subject:
    token, token_type = form.get("subject_token"), form.get("subject_token_type")
    if not token or not token_type:
        raise InvalidRequest("subject_token and subject_token_type are required")
    if token_type not in TOKEN_TYPES:
        raise InvalidRequest(f"subject_token_type must be one of {', '.join(TOKEN_TYPES)}")
    if services.trusted_issuers.claims_issuer(token) == services.settings.issuer:
        claims = _deputy_token(services, token, "subject_token")
        return Subject(
            sub=claims.subject, client_id=claims.client_id, scopes=claims.scopes, expires_at=claims.expires_at,
            chain=claims.actors, may_act=claims.raw.get("may_act"), txn=claims.txn, grant_id=claims.grant_id,
            auth_time=claims.auth_time, resource=claims.audience)
    try:
        verified = await services.trusted_issuers.verify(token, "subject_token", typ=SUBJECT_JWT_TYPES)
    except AssertionRefused as exc:
        raise InvalidGrant(f"subject_token: {exc.reason}") from None
    claims_ = verified.claims
    if await services.names_local_identity(verified.subject):
        raise InvalidGrant("subject_token: its sub is the id of a Deputy user or client; an outside issuer "
                           "cannot speak for them")
    try:
        # Every hop of this chain is the outside issuer's word: Deputy minted none of them, and cannot tell whether a
        # party the issuer names (Deputy itself included) ever vouched for one. So each says who stated it.
        chain = tuple(Actor(a.sub, a.client_id, verified.issuer.issuer) for a in parse_act(claims_.get("act")))
    except MalformedChain as exc:
        raise InvalidGrant(f"subject_token act: {exc}") from None
    # The outside token's own client ids mean nothing here: only its may_act, else the rules for any client.
    may_act = claims_.get("may_act")
    if may_act is None:
        actors = services.settings.delegation.actors_for_any_client()
        may_act = {"client_id": list(actors)} if actors else None
    scope = claims_.get("scope")
    txn = claims_.get("txn")
    return Subject(
        sub=verified.subject, client_id=None,
        scopes=frozenset(scope.split()) if isinstance(scope, str) else None,
        expires_at=verified.expires_at, chain=chain, may_act=may_act,
        txn=txn if isinstance(txn, str) and TXN.match(txn) else None, grant_id=None, auth_time=None, resource=None)


def _deputy_token(services: Services, token: str, name: str) -> AccessTokenClaims:
    """A Deputy access token that is signed and unexpired; that its grant is live is checked when the new
    grant is written, in the same transaction (:meth:`GrantRepository.create`)."""
    try:
        claims = services.token_verifier.verify(token)
    except InvalidToken as exc:
        raise InvalidGrant(f"{name} is not a valid access token ({exc.reason})") from None
    if claims.expires_at + services.settings.clock_leeway <= now():
        raise InvalidGrant(f"{name} has expired")
    return claims


async def _actor(services: Services, form: Mapping[str, str], client: Client) -> ActorProof | None:
    token, token_type = form.get("actor_token"), form.get("actor_token_type")
    if token is None and token_type is None:
        return None
    if not token or not token_type:
        raise InvalidRequest("actor_token and actor_token_type go together")
    if token_type not in TOKEN_TYPES:
        raise InvalidRequest(f"actor_token_type must be one of {', '.join(TOKEN_TYPES)}")
    settings = services.settings
    iss = services.trusted_issuers.claims_issuer(token)
    if iss == settings.issuer:
        claims = _deputy_token(services, token, "actor_token")
        if claims.client_id != client.client_id or claims.subject != client.client_id or claims.is_delegated:
            raise InvalidGrant("actor_token must be the requesting client's own token (client credentials)")
        return ActorProof(Actor(client.client_id, client.client_id, settings.issuer), claims.scopes,
                          claims.expires_at, claims.grant_id)
    if iss == client.client_id:
        # An assertion the client signed about itself (RFC 7523 §3), as for private_key_jwt.
        context = AssertionContext(issuer=settings.issuer, token_endpoint=f"{settings.issuer}/token",
                                   leeway=settings.clock_leeway, now=now())
        try:
            await verify_client_assertion(token, client, context, services.clients.remember_assertion,
                                          services.client_keys)
        except InvalidClient as exc:
            # The client authenticated; what failed is the actor_token (RFC 6749 §5.2), not a 401.
            raise InvalidGrant(f"actor_token is not a valid assertion by this client ({exc.description})") from None
        return ActorProof(Actor(client.client_id, client.client_id, settings.issuer), None, None, None)
    raise InvalidGrant("actor_token must be a Deputy token or an assertion signed by the requesting client")


def _target(services: Services, form: Mapping[str, str], subject: Subject) -> UpstreamServer:
    """The one server the token is for: named by ``resource`` or ``audience``, never wider than the subject's."""
    settings = services.settings
    resource, audience = form.get("resource"), form.get("audience")
    named: list[UpstreamServer] = []
    if resource is not None:
        server = settings.server_for_resource(resource)
        if server is None:
            raise InvalidTarget("resource is not a server this authorization server protects")
        named.append(server)
    if audience is not None:
        server = settings.servers.get(audience) or settings.server_for_resource(audience)
        if server is None:
            raise InvalidTarget("audience is not a server this authorization server protects")
        named.append(server)
    if subject.resource is not None:
        own = settings.server_for_resource(subject.resource)
        if own is None:
            raise InvalidTarget("the subject token is for a server Deputy no longer protects")
        if any(s.name != own.name for s in named):
            raise InvalidTarget("an exchange may only narrow: the subject token is for another server")
        return own
    if not named:
        raise InvalidRequest("resource or audience is required: the MCP server the token is for")
    if len({s.name for s in named}) != 1:
        raise InvalidTarget("resource and audience name different servers")
    return named[0]


def _scope(form: Mapping[str, str], server: UpstreamServer, subject: Subject, proof: ActorProof | None) -> str:
    """Subject ∩ actor's allowance ∩ request: an exchange only ever narrows."""
    granted = set(subject.scopes) if subject.scopes is not None else set(server.required_scopes)
    if proof is not None and proof.allowance is not None:
        granted &= proof.allowance
    return granted_scope(form, server, granted)


def _txn(form: Mapping[str, str], subject: Subject) -> str:
    requested = form.get("txn")
    if requested is not None and not TXN.match(requested):
        raise InvalidRequest("txn must be 1-128 characters of letters, digits and ._~:/+=-")
    if subject.txn is not None:
        if requested is not None and requested != subject.txn:
            raise InvalidRequest("txn differs from the task the subject token belongs to")
        return subject.txn
    return requested or uuid.uuid4().hex
