"""The token response every grant ends with (OAuth 2.1 §3.2.3; RFC 8693 §2.2.1 for exchanges).

Every access token says who may act for its subject (``may_act``, RFC 8693 §4.4):
the clients the ``[delegation]`` rules name for the client it was issued to, and —
when a user signed in and consented — that client itself, which her consent made
her agent.

Every token for a user carries her attributes for policy (:mod:`deputy.policy.user_attributes`), read from the
users table as the token is issued — at a refresh too, so the groups of her latest sign-in reach the next
token — and, for an exchanged token, read for its subject, whose user the grant names: never taken from the
request, the actor's token or the client. Attributes too large for a token refuse the issue (``invalid_grant``)
rather than be cut: a group left out could lift a ``forbid``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from deputy.act_chain import Actor, act_claim, may_act_claim
from deputy.audit.records import new_record
from deputy.config import TOKEN_EXCHANGE
from deputy.oauth.access_tokens import mint_access_token
from deputy.oauth.errors import NO_STORE, InvalidGrant
from deputy.policy.user_attributes import NO_IDP, AttributesRefused, UserAttributes, checked, claim_value
from deputy.services import Services
from deputy.storage.grants import Grant
from deputy.storage.users import User

RECORD_TYPES = {"refresh_token": "token.refreshed", TOKEN_EXCHANGE: "token.exchanged"}


async def token_response(
    services: Services,
    grant: Grant,
    scope: str,
    refresh_token: str | None,
    *,
    user_authenticated: bool = True,
    chain: tuple[Actor, ...] = (),
    txn: str | None = None,
    expires_at: int | None = None,
    ttl: int | None = None,
    issued_token_type: str | None = None,
    grant_type: str,
) -> JSONResponse:
    """``user_authenticated`` is False when no user signed in (client credentials): no ``auth_time``.

    ``chain``, ``txn`` and ``expires_at`` describe an exchanged token (RFC 8693): its
    ``act`` chain, its task, and the moment it must end by; its answer names the
    ``issued_token_type`` (RFC 8693 §2.2.1).

    The issue is an audit record (``token.issued``, ``token.refreshed`` or ``token.exchanged``)
    committed before the token is handed out: a token the log does not know is never issued
    (the audit log failing makes this raise AuditUnavailable, answered 503). Grants that use up a
    handle (a code, a refresh token) call this *before* they consume it (write-ahead), so a failed
    record leaves the handle usable; the refresh token handed out is stored by that consumption.
    """
    settings = services.settings
    user = await user_attributes(services, grant.user_id) if user_authenticated else None
    may_act = list(settings.delegation.actors_for(grant.client_id))
    if user_authenticated and not chain:
        may_act.append(grant.client_id)
    access_token, claims = mint_access_token(
        services.keyring,
        issuer=settings.issuer,
        subject=grant.user_id,
        client_id=grant.client_id,
        audience=grant.resource,
        scope=scope,
        ttl=ttl or settings.access_token_ttl,
        grant_id=grant.grant_id,
        auth_time=grant.auth_time if user_authenticated else None,
        expires_at=expires_at,
        act=act_claim(chain),
        may_act=may_act_claim(may_act),
        txn=txn,
        user=user,
    )
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": claims["exp"] - claims["iat"],
        "scope": scope,
    }
    if issued_token_type is not None:
        body["issued_token_type"] = issued_token_type
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    await services.audit.append(new_record(
        RECORD_TYPES.get(grant_type, "token.issued"), grant_type=grant_type, jti=claims["jti"], sub=grant.user_id,
        client_id=grant.client_id, aud=grant.resource, scope=scope, exp=claims["exp"], grant_id=grant.grant_id,
        actors=[actor.claim() for actor in chain], txn=txn, refresh_token_issued=refresh_token is not None))
    return JSONResponse(body, headers=NO_STORE)


async def user_attributes(services: Services, user_id: str) -> UserAttributes:
    """The attributes of the Deputy user ``user_id`` as the users table holds them now; a subject that is no
    Deputy user (asserted by a trusted issuer) has none (``idp`` empty)."""
    user = await services.users.get(user_id)
    if user is None:
        return UserAttributes(idp=NO_IDP)
    if user.disabled:  # her grants are revoked with her; this closes the window of a concurrent refresh
        raise InvalidGrant("the user is disabled")
    try:
        return checked(attributes_of(user))
    except AttributesRefused as exc:
        raise InvalidGrant(f"no token for this user: {exc.reason}") from None


def attributes_of(user: User) -> UserAttributes:
    return UserAttributes(idp=user.source, name=user.display_name or user.username, email=user.email or "",
                          groups=frozenset(user.groups),
                          claims={name: claim_value(name, value) for name, value in user.claims.items()})
