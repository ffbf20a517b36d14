"""The user a token names, as policies see her: ``context.user`` (name, e-mail, groups, identity provider, claims).

**Where they come from.** The gateway decides every call without a database read, so the attributes travel in
Deputy's access token, signed with it, minted from the users table when the token is issued (an authorization
code, a refresh — read again, so a sign-in's new groups reach the next token — and a token exchange, from the
subject's user, never from the actor). In the token they use the names the IANA "JSON Web Token Claims" registry
holds for them: ``name`` and ``email`` (OpenID Connect Core 1.0 §5.1) and ``groups`` (RFC 7643 §4.1.2, named for
access tokens by RFC 9068 §2.2.3.1); what has no registered name — the identity provider and the configured extra
claims — is the private claim ``deputy_user`` (RFC 7519 §4.3): ``{"idp": ..., "claims": {...}}``.

**Bounded, never cut.** A token is sent with every call, so the attributes are limited
(:data:`MAX_GROUPS` groups, :data:`MAX_BYTES` bytes of JSON in all). A user beyond that gets no token
(:class:`AttributesRefused`) rather than a token with some groups left out: a policy may *forbid* by group, and a
membership dropped would lift the forbid.

**In Cedar** ``context.user`` is a record on every action: ``name: String``, ``email: String`` (``""`` when
unknown), ``groups: Set<String>``, ``idp: String`` (``"local"``, the provider's configured name, or ``""`` when
the token's subject is no Deputy user: an agent by client credentials, a workload, a user asserted by a trusted
issuer), and ``claims``: one optional ``String`` per extra claim any provider is configured to carry (a boolean or
integer as its JSON text). Extra claims sit under ``claims`` so that a claim called ``groups`` or ``idp`` can
never stand in for Deputy's own attributes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from deputy.config import Settings

PRIVATE_CLAIM: Final = "deputy_user"
MAX_GROUPS: Final = 256
MAX_TEXT: Final = 256
MAX_BYTES: Final = 8 * 1024
NO_IDP: Final = ""


class AttributesRefused(ValueError):
    """The user's attributes cannot be carried in a token as they are; ``reason`` names why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UserAttributes:
    idp: str = NO_IDP
    name: str = ""
    email: str = ""
    groups: frozenset[str] = frozenset()
    claims: Mapping[str, str] = field(default_factory=dict, hash=False)


NO_USER: Final = UserAttributes()


def claim_value(name: str, value: Any) -> str:
    """An extra claim as Cedar sees it: a string as it is, a boolean or an integer as its JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return json.dumps(value)
    # A list cannot be one String; leaving it out could lift a forbid that tests it, so no token.
    raise AttributesRefused(f"claim {name} is not a string, a boolean or an integer")


def checked(attributes: UserAttributes) -> UserAttributes:
    """``attributes`` when a token can carry them; :class:`AttributesRefused` otherwise."""
    texts = [attributes.idp, attributes.name, attributes.email, *attributes.groups, *attributes.claims]
    if len(attributes.groups) > MAX_GROUPS or any(len(t) > MAX_TEXT for t in texts):
        raise AttributesRefused(f"the user has more than {MAX_GROUPS} groups, or a name, e-mail, group or claim "
                                f"longer than {MAX_TEXT} characters")
    if len(json.dumps(token_claims(attributes), ensure_ascii=False).encode()) > MAX_BYTES:
        raise AttributesRefused(f"the user's groups and claims exceed {MAX_BYTES} bytes")
    return attributes


def token_claims(attributes: UserAttributes) -> dict[str, Any]:
    """The access token claims carrying ``attributes`` (see the module docstring)."""
    claims: dict[str, Any] = {"groups": sorted(attributes.groups),
                              PRIVATE_CLAIM: {"idp": attributes.idp, "claims": dict(sorted(attributes.claims.items()))}}
    if attributes.name:
        claims["name"] = attributes.name
    if attributes.email:
        claims["email"] = attributes.email
    return claims


def from_token_claims(claims: Mapping[str, Any]) -> UserAttributes:
    """The attributes a verified token carries; ValueError when they are malformed. A token without
    ``deputy_user`` names no Deputy user (:data:`NO_USER`)."""
    private = claims.get(PRIVATE_CLAIM)
    if private is None:
        return NO_USER
    groups, name, email = claims.get("groups", []), claims.get("name", ""), claims.get("email", "")
    if not isinstance(private, dict) or not isinstance(private.get("idp"), str):
        raise ValueError("deputy_user must be an object with idp")
    extra = private.get("claims", {})
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise ValueError("deputy_user.claims must be an object of strings")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("groups must be a list of strings")
    if not isinstance(name, str) or not isinstance(email, str):
        raise ValueError("name and email must be strings")
    try:
        return checked(UserAttributes(private["idp"], name, email, frozenset(groups), extra))
    except AttributesRefused as exc:
        raise ValueError(exc.reason) from None


def recorded_attributes(attributes: UserAttributes) -> dict[str, Any]:
    """The attributes as a decision's audit record keeps them (optional field ``user_attributes``)."""
    return {"idp": attributes.idp, "name": attributes.name, "email": attributes.email,
            "groups": sorted(attributes.groups), "claims": dict(sorted(attributes.claims.items()))}


def configured_claims(settings: Settings) -> tuple[str, ...]:
    """The extra claim names the schema types: every one any identity provider is configured to carry."""
    return tuple(sorted({name for provider in settings.identity_providers for name in provider.extra_claims}))


def _named(name: str, required: bool = True) -> dict[str, Any]:
    ty: dict[str, Any] = {"type": "EntityOrCommon", "name": name}
    return ty if required else {**ty, "required": False}


def schema_type(claim_names: Iterable[str]) -> dict[str, Any]:
    """The Cedar (JSON schema) type of ``context.user``."""
    return {"type": "Record", "attributes": {
        "name": _named("String"),
        "email": _named("String"),
        "groups": {"type": "Set", "element": _named("String")},
        "idp": _named("String"),
        "claims": {"type": "Record", "attributes": {name: _named("String", required=False) for name in claim_names}},
    }}


def cedar_value(attributes: UserAttributes, claim_names: Iterable[str]) -> dict[str, Any]:
    """``context.user`` for a request: only the claims the schema types (a claim no longer configured is not
    typed and would fail the request's validation)."""
    return {"name": attributes.name, "email": attributes.email, "groups": sorted(attributes.groups),
            "idp": attributes.idp,
            "claims": {name: attributes.claims[name] for name in claim_names if name in attributes.claims}}
