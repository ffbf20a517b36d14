"""JWT access tokens (RFC 9068), minted by the authorization server and checked by the gateway.

Minting: ``typ: at+jwt`` (RFC 9068 §2.1), ``kid`` of the current ES256 key, claims
``iss sub aud client_id scope jti iat exp auth_time`` (§2.2) plus ``sid``, the
grant the token belongs to, which revocation works on, and the delegation claims
``act``, ``may_act`` (RFC 8693 §4.1, §4.4) and ``txn`` (the task a chain of
exchanges serves; draft-ietf-oauth-transaction-tokens) when there are any, and the user's
attributes for policy (``groups``, ``name``, ``email`` and the private ``deputy_user``:
:mod:`deputy.policy.user_attributes`).

Checking (RFC 9068 §4; OAuth 2.1 §5.2; MCP "Token Handling"): algorithm on an
allow-list (ES256 only, so ``none`` and HS256-with-the-public-key fail), ``typ``,
signature by a published key, ``iss`` exactly, ``aud`` exactly the one resource,
``exp``/``nbf``/``iat`` with a small leeway, and revocation of the grant. A
verified token is cached until it expires, so a busy client costs one signature
check, not one per call; everything that can change (time, revocation) is
re-checked on every use.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from deputy.act_chain import Actor, MalformedChain, parse_act
from deputy.bounded_json import check_jws_depth
from deputy.clock import now, wall
from deputy.keys import ALGORITHM, KeyRing
from deputy.numeric_date import is_time
from deputy.policy.user_attributes import NO_USER, UserAttributes, from_token_claims, token_claims

TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    subject: str
    client_id: str
    audience: str
    scopes: frozenset[str]
    token_id: str
    grant_id: str | None
    issued_at: int
    expires_at: int
    auth_time: int | None
    raw: Mapping[str, Any]
    actors: tuple[Actor, ...] = ()  # the ``act`` chain, current actor first
    txn: str | None = None
    user: UserAttributes = NO_USER

    @property
    def is_delegated(self) -> bool:
        return bool(self.actors)


class InvalidToken(Exception):
    """The token is not acceptable; ``reason`` is for logs, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mint_access_token(
    keyring: KeyRing,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    audience: str,
    scope: str,
    ttl: int,
    grant_id: str | None,
    auth_time: int | None,
    expires_at: int | None = None,
    act: Mapping[str, Any] | None = None,
    may_act: Mapping[str, Any] | None = None,
    txn: str | None = None,
    user: UserAttributes | None = None,
) -> tuple[str, dict[str, Any]]:
    """``expires_at``, when given, caps the lifetime below ``ttl`` (a token never outlives what it came from)."""
    key = keyring.signing_key
    issued = now()
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "scope": scope,
        "jti": uuid.uuid4().hex,
        "iat": issued,
        "exp": issued + ttl if expires_at is None else min(issued + ttl, expires_at),
    }
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if grant_id is not None:
        claims["sid"] = grant_id
    for name, value in (("act", act), ("may_act", may_act), ("txn", txn)):
        if value is not None:
            claims[name] = value
    if user is not None:  # checked against the bounds by the caller (deputy.oauth.grants.issue)
        claims.update(token_claims(user))
    header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=[ALGORITHM]), claims


class AccessTokenValidator:
    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        leeway: int,
        is_revoked: Callable[[str], bool],
        clock: Callable[[], float] = wall,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.leeway = leeway
        self.is_revoked = is_revoked
        self.clock = clock
        self._verified: OrderedDict[str, AccessTokenClaims] = OrderedDict()

    def validate(self, token: str, audience: str) -> AccessTokenClaims:
        claims = self.verify(token)
        now = self.clock()
        if claims.expires_at + self.leeway <= now:
            self._verified.pop(token, None)
            raise InvalidToken("expired")
        # RFC 8707 / MCP: a token is accepted only by the one resource it was issued for.
        if claims.audience != audience:
            raise InvalidToken("issued for another resource")
        if claims.grant_id is not None and self.is_revoked(claims.grant_id):
            raise InvalidToken("revoked")
        return claims

    def verify(self, token: str) -> AccessTokenClaims:
        """Signature, ``typ``, ``iss`` and claim shapes; not expiry, audience or revocation (see ``validate``).

        What was verified once is remembered (the claims of a signed token cannot change)."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            self._verified[token] = claims
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> AccessTokenClaims:
        try:
            check_jws_depth(token)  # before the JOSE library parses header and payload with json.loads
            decoded = jwt.decode(token, self.keyring.public_keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidToken(f"signature or format: {type(exc).__name__}") from None
        header, claims = decoded.header, decoded.claims
        if str(header.get("typ", "")).lower() not in TOKEN_TYPES:
            raise InvalidToken("typ is not at+jwt")  # RFC 9068 §4 step 1
        now = self.clock()
        if claims.get("iss") != self.issuer:
            raise InvalidToken("wrong issuer")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        if not isinstance(aud, str):
            raise InvalidToken("aud must name exactly one resource")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not is_time(exp) or not is_time(iat):
            raise InvalidToken("exp and iat are required")
        if iat > now + self.leeway:
            raise InvalidToken("issued in the future")
        if nbf is not None and (not is_time(nbf) or nbf > now + self.leeway):
            raise InvalidToken("not yet valid")
        for name in ("sub", "client_id", "jti"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise InvalidToken(f"{name} is required")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("scope must be a string")
        sid = claims.get("sid")
        auth_time = claims.get("auth_time")
        try:
            actors = parse_act(claims.get("act"))
        except MalformedChain as exc:
            raise InvalidToken(f"act: {exc}") from None
        txn = claims.get("txn")
        if txn is not None and (not isinstance(txn, str) or not txn):
            raise InvalidToken("txn must be a string")
        try:
            user = from_token_claims(claims)
        except ValueError as exc:
            raise InvalidToken(f"user attributes: {exc}") from None
        return AccessTokenClaims(
            subject=claims["sub"],
            client_id=claims["client_id"],
            audience=aud,
            scopes=frozenset(scope.split()),
            token_id=claims["jti"],
            grant_id=sid if isinstance(sid, str) else None,
            issued_at=int(iat),
            expires_at=int(exp),
            auth_time=int(auth_time) if is_time(auth_time) else None,
            raw=claims,
            actors=actors,
            txn=txn,
            user=user,
        )
