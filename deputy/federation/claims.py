"""Who a validated ID token names (:func:`federated_identity`), and whether she may sign in (:func:`admit`).

The user is keyed by (issuer, ``sub``) — OpenID Connect Core 1.0 §2 and §5.7: the only claims that identify an
end-user stably and uniquely; an e-mail address or a username may be reassigned or claimed at two providers.
The rest is her profile, read from the ID token's claims (Core §5.1) as the provider's entry maps them:

- username: ``username_claim``, or by default the first of ``preferred_username``, ``email``, ``sub`` that is a
  non-empty string; at most :data:`MAX_TEXT` printable characters, else ``no_username``. ``email`` counts only when
  it is verified (below): an unverified address is passed over for the next claim, and a provider configured with
  ``username_claim = "email"`` refuses a user whose address is unverified (``no_username``) — the username is
  policy's ``context.user.name`` when the provider sends no ``name``, and is shown as who signed in;
- groups: ``groups_claim``, a list of strings or a single string; absent, none. Anything else — an item that is
  not a non-empty string of at most :data:`MAX_TEXT` characters, more than :data:`MAX_GROUPS` of them, or a
  claim of another type — refuses the sign-in (``bad_claims``) rather than dropping what does not fit: groups
  feed policy, and a policy may forbid by group; a membership silently dropped would lift that forbid;
- ``extra_claims``: each, when present, a string (bounded like a group), a boolean or an integer; anything else,
  a list included, refuses the sign-in the same way: policies see each extra claim as one Cedar ``String``
  (:mod:`deputy.policy.user_attributes`), and a user whose claim could not reach them would be refused every token;
- ``email`` (bounded, one ``@``) only when ``email_verified`` is the JSON ``true``; otherwise she has no e-mail
  address here (None: not stored, not in Deputy's tokens, ``""`` to policies as ``context.user.email``). Core §5.1
  (``email_verified``: only true says the provider checked she controls it) and §5.7: an RP must not rely on an
  unverified address, and at a provider where users set their own, anyone can claim
  ``cfo@corp.example`` — a policy permitting ``context.user.email == "cfo@corp.example"`` would let her through.
  A provider that sends no ``email_verified`` at all (Microsoft Entra ID) therefore yields no e-mail. An operator
  who trusts that provider's addresses anyway can carry the raw claim with ``extra_claims = ["email"]``: policies
  then read it, by that explicit choice, as ``context.user.claims.email`` (extra claims are bounded, not checked
  for verification); ``context.user.email`` stays for verified addresses only;
- ``name``.

Admission (the entry's "who may sign in"):

- ``allowed_email_domains``: the e-mail's domain (after its last ``@``, compared in lower case, exactly: no
  subdomains) is one of them, and ``email_verified`` is true — an unverified address proves nothing about who
  holds it (Core §5.7);
- ``required_groups``: she is in at least one of them (any-of: "members of these groups may use Deputy"; an
  all-of rule is a policy's job, which sees every group).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deputy.config_identity_providers import IdentityProvider
from deputy.federation.errors import NotAdmitted
from deputy.federation.id_tokens import IdTokenClaims

MAX_TEXT = 256
MAX_GROUPS = 256
ClaimValue = str | bool | int


@dataclass(frozen=True, slots=True)
class FederatedIdentity:
    """A user as her identity provider describes her at this sign-in; keyed by (``issuer``, ``subject``)."""

    idp: str  # the provider's configured name
    issuer: str
    subject: str
    username: str
    email: str | None
    email_verified: bool
    name: str | None
    groups: tuple[str, ...]
    extra_claims: Mapping[str, ClaimValue]


def federated_identity(provider: IdentityProvider, token: IdTokenClaims) -> FederatedIdentity:
    """The user ``token`` names, her claims mapped as ``provider`` says; :class:`NotAdmitted` when they do not fit."""
    claims = token.claims
    verified = claims.get("email_verified") is True  # the JSON true: not "true", not 1 (Core §5.1 says boolean)
    email = _text(claims.get("email")) if verified else None
    return FederatedIdentity(
        idp=provider.name,
        issuer=token.issuer,
        subject=token.subject,
        username=_username(provider, claims, verified),
        email=email if email is not None and email.count("@") == 1 else None,
        email_verified=verified,
        name=_text(claims.get("name")),
        groups=_groups(provider, claims.get(provider.groups_claim)),
        extra_claims={name: _extra(provider, name, claims[name]) for name in provider.extra_claims
                      if name in claims and claims[name] is not None},
    )


def admit(provider: IdentityProvider, identity: FederatedIdentity) -> None:
    """Raise :class:`NotAdmitted` unless ``identity`` passes the provider's ``allowed_email_domains`` and
    ``required_groups``."""
    if provider.allowed_email_domains:
        if identity.email is None or not identity.email_verified:
            raise NotAdmitted(provider.name, "email_not_verified", "sign-in here needs a verified e-mail address")
        domain = identity.email.rpartition("@")[2].lower()
        if domain not in provider.allowed_email_domains:
            raise NotAdmitted(provider.name, "email_domain_not_allowed",
                              "the e-mail address is not in a domain allowed to sign in")
    if provider.required_groups and not set(provider.required_groups) & set(identity.groups):
        raise NotAdmitted(provider.name, "not_in_required_groups", "the user is in none of the groups required")


def _text(value: Any) -> str | None:
    """A non-empty printable string of at most :data:`MAX_TEXT` characters; anything else, None."""
    if isinstance(value, str) and value and len(value) <= MAX_TEXT and value.isprintable():
        return value
    return None


def _username(provider: IdentityProvider, claims: Mapping[str, Any], email_verified: bool) -> str:
    for name in provider.username_claims:
        if name == "email" and not email_verified:
            continue  # an address anyone may have typed in names nobody (Core §5.7)
        value = _text(claims.get(name))
        if value is not None:
            return value
    raise NotAdmitted(provider.name, "no_username",
                      f"none of {', '.join(provider.username_claims)} is a usable username")


def _groups(provider: IdentityProvider, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_GROUPS or \
            any(_text(item) is None for item in items):
        raise NotAdmitted(provider.name, "bad_claims",
                          f"{provider.groups_claim} must be a string or a list of at most {MAX_GROUPS} strings "
                          f"of at most {MAX_TEXT} printable characters")
    return tuple(dict.fromkeys(items))


def _extra(provider: IdentityProvider, name: str, value: Any) -> ClaimValue:
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53):
        return value
    if isinstance(value, str) and _text(value) is not None:
        return value
    raise NotAdmitted(provider.name, "bad_claims", f"claim {name} must be a string of at most {MAX_TEXT} "
                                                   "printable characters, a boolean or an integer")
