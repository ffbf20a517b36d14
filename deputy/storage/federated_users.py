"""Federated users: created at first sign-in through an OpenID Provider, refreshed at each one after.

**Identity.** A federated user is the pair (issuer, ``sub``): OpenID Connect Core 1.0 §2 makes ``sub`` unique
and never reassigned within its issuer, and §5.7 says no other claim may serve as a key — the e-mail included,
since two providers can both say ``alice@example.com``. Nothing the provider states about her (name, e-mail,
``preferred_username``) ever selects an existing user.

**Her Deputy username** is a label chosen once, at creation, and never changed, whatever the provider states
later: ``LABEL@IDP`` where IDP is the name of the provider she came through (``[[identity_providers]] name``) and
LABEL comes from the username hint (the configured username claim): its part before any ``@``, NFKC-normalised,
lower-cased, every run of characters outside ``[a-z0-9._-]`` made one ``-``, at most 64 characters, ``user`` when
nothing is left. Taken already, it is ``LABEL-2@IDP`` … ``LABEL-9@IDP``, then ``LABEL-<random>@IDP``. So:

- a provider's user never gets a local user's name: local names are refused an ``@`` (since migration 0012; an
  older local name with one is merely taken, and she gets the next label);
- never another provider's user's name: the part after the last ``@`` is always her own provider's name, and
  provider names have no ``@``;
- never another user's name at her own provider either: a taken name is skipped, never shared. Who gets the
  plain label is first come, as ``preferred_username`` is not unique (Core §5.7): names are for reading, and
  every decision keys on the user id.

**Profile bounds.** The provider's text is outside input: ``sub`` at most 255 characters (Core §2), an e-mail at
most 320 and no control character, groups at most 512 of at most 256 characters, carried claims at most 16 KiB
of JSON; beyond that the sign-in is refused (:class:`ProfileRefused`) — dropping a group could change what a
``forbid`` rule decides. A display name is cut to 256 characters: it only shows.
"""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.storage.tables import users

NO_PASSWORD = "!federated: signs in through an identity provider"  # never an argon2 hash: never verifies
LABEL_MAX = 64
MAX_SUBJECT = 255
MAX_ISSUER = 1024
MAX_EMAIL = 320
MAX_DISPLAY_NAME = 256
MAX_GROUPS = 512
MAX_GROUP = 256
MAX_CLAIMS_BYTES = 16 * 1024
IDP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_OUTSIDE_LABEL = re.compile(r"[^a-z0-9._-]+")


class ProfileRefused(ValueError):
    """What the identity provider stated about a user cannot be stored as it is: the sign-in is refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def username_label(hint: str | None) -> str:
    """The LABEL of ``LABEL@IDP`` for a username hint (the module's docstring gives the rule)."""
    text = unicodedata.normalize("NFKC", hint or "").split("@", 1)[0].lower()
    label = _OUTSIDE_LABEL.sub("-", text)[:LABEL_MAX].strip("-.")
    return label or "user"


def candidate_names(label: str, idp_name: str) -> list[str]:
    """The usernames to try, in order: the plain label, eight numbered ones, then random ones."""
    tails = ["", *(f"-{n}" for n in range(2, 10)), *(f"-{secrets.token_hex(4)}" for _ in range(3))]
    return [f"{label[:LABEL_MAX - len(tail)]}{tail}@{idp_name}" for tail in tails]


def _has_control(value: str) -> bool:
    return any(unicodedata.category(c)[0] == "C" for c in value)


def checked_profile(issuer: str, subject: str, email: str | None, display_name: str | None,
                    groups: Sequence[str], claims: Mapping[str, Any]) -> dict[str, Any]:
    """The profile columns for what the provider stated, or :class:`ProfileRefused`."""
    if not issuer or len(issuer) > MAX_ISSUER or _has_control(issuer):
        raise ProfileRefused("the issuer is empty, too long or not printable")
    if not subject or len(subject) > MAX_SUBJECT or _has_control(subject):
        raise ProfileRefused("sub is empty, longer than 255 characters, or not printable")
    if email is not None and (len(email) > MAX_EMAIL or _has_control(email)):
        raise ProfileRefused("the e-mail is too long or not printable")
    if isinstance(groups, str) or len(groups) > MAX_GROUPS or \
            any(not isinstance(g, str) or len(g) > MAX_GROUP for g in groups):
        raise ProfileRefused(f"groups must be at most {MAX_GROUPS} strings of at most {MAX_GROUP} characters")
    try:
        size = len(json.dumps(dict(claims), ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):
        raise ProfileRefused("the carried claims are not a JSON object") from None
    if size > MAX_CLAIMS_BYTES or not all(isinstance(k, str) for k in claims):
        raise ProfileRefused(f"the carried claims exceed {MAX_CLAIMS_BYTES} bytes of JSON")
    return {"email": email, "display_name": display_name[:MAX_DISPLAY_NAME] if display_name is not None else None,
            "groups": sorted(set(groups)), "claims": dict(claims), "profile_updated_at": now()}


async def refresh(engine: AsyncEngine, idp_name: str, issuer: str, subject: str,
                  profile: dict[str, Any]) -> tuple[Row[Any] | None, bool]:
    """Refresh the profile of the user (issuer, subject) unless she is disabled: (her row, whether it was
    refreshed); (None, False) when there is no such user. Not refreshed and not disabled: she was created
    between the UPDATE and the read (READ COMMITTED gives each statement its own snapshot); the caller retries."""
    key = and_(users.c.issuer == issuer, users.c.subject == subject)
    async with engine.begin() as conn:
        row = (await conn.execute(update(users).where(and_(key, users.c.disabled_at.is_(None)))
                                  .values(source=idp_name, **profile).returning(*users.c))).first()
        if row is not None:
            return row, True
        return (await conn.execute(select(users).where(key))).first(), False


async def create(engine: AsyncEngine, idp_name: str, issuer: str, subject: str, hint: str | None,
                 profile: dict[str, Any]) -> bool:
    """Insert the user (issuer, subject) under the first free candidate name; False when she exists already
    (a concurrent first sign-in made her: the unique index on (issuer, subject) decides, on either backend)."""
    if not IDP_NAME.fullmatch(idp_name):
        raise ValueError(f"not an identity provider name: {idp_name!r}")
    dialect_insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    for name in candidate_names(username_label(hint), idp_name):
        statement = dialect_insert(users).values(
            user_id=str(uuid.uuid4()), username=name, password_hash=NO_PASSWORD, created_at=now(), source=idp_name,
            issuer=issuer, subject=subject, **profile).on_conflict_do_nothing(index_elements=["issuer", "subject"])
        try:
            async with engine.begin() as conn:
                return (await conn.execute(statement)).rowcount == 1
        except IntegrityError:
            continue  # the username is taken (by anyone: local, this provider, another): try the next
    raise ProfileRefused("no free username for this user")
