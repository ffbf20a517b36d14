"""JWTs from outside issuers Deputy is configured to trust (RFC 7519 §7.2, RFC 7523 §3, RFC 8725).

Used for RFC 8693 subject tokens, RFC 7523 jwt-bearer workload assertions and
ID-JAGs. An assertion is believed only when all of this holds:

- its ``iss`` is a configured issuer that accepts JWTs for this purpose;
- ``alg`` is on that issuer's asymmetric allow-list (so ``none`` and HMAC fail,
  RFC 8725 §3.1-3.2), no ``crit`` header Deputy does not understand, a ``typ`` that is
  a string when present (RFC 7515 §4.1.9) and, where the use fixes them, one of the
  expected types (RFC 8725 §3.11 explicit typing: compared case-insensitively, with
  or without the ``application/`` prefix; see :func:`explicit_type`);
- a key of the issuer's JWK Set of the matching type verifies the signature;
- ``aud`` names the audience configured for the issuer (by default Deputy's issuer);
- ``exp`` is present and not past, ``nbf``/``iat`` not in the future (with leeway);
- ``sub`` is a non-empty string.

Keys come from a file read at start or a ``jwks_uri`` fetched over HTTP (the
operator configured it, so it is not an SSRF vector; it is fetched through
:mod:`deputy.outbound_http`: no redirect followed, at most ``JWKS_MAX_BYTES`` read),
cached for five minutes and fetched again — at most every ``jwks_refresh_seconds``
(default ``JWKS_REFRESH_INTERVAL``, 30 s) — when a token names a key the cached set
lacks, so an issuer's key rotation is picked up without a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from deputy import bounded_json
from deputy.clock import wall

# Re-exported: the default refetch interval belongs with the cache it paces; its value is the configuration's.
from deputy.delegation_rules import JWKS_REFRESH_INTERVAL as JWKS_REFRESH_INTERVAL
from deputy.delegation_rules import TrustedIssuer
from deputy.numeric_date import is_time
from deputy.oauth.client_assertions import JwksError, candidate_keys, check_client_jwks
from deputy.outbound_http import BodyTooLarge, NoAnswer, fetch, open_session, step_timeout

JWKS_TTL = 300.0
JWKS_MAX_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0
MAX_SUBJECT_LENGTH = 255  # the width of the columns a subject is stored in (grants.user_id, client_id)


class AssertionRefused(Exception):
    """The JWT is not believed; ``reason`` says why (safe to return to the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    issuer: TrustedIssuer
    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])


@dataclass(slots=True)
class _CachedKeys:
    jwks: Mapping[str, Any]
    fetched_at: float


def explicit_type(header: Mapping[str, Any]) -> str | None:
    """A JOSE header's ``typ`` as a media type to compare: lower case, without the ``application/`` prefix RFC
    7515 §4.1.9 lets a producer omit (``application/at+jwt`` and ``AT+JWT`` are both ``at+jwt``); None when absent.
    A ``typ`` that is not a string (which :meth:`TrustedIssuers.verify` refuses) comes back as its ``str()``."""
    typ = header.get("typ")
    if typ is None:
        return None
    return str(typ).lower().removeprefix("application/")


def _check_type(found: str | None, expected: str | AbstractSet[str | None] | None) -> None:
    if expected is None:
        return
    allowed: AbstractSet[str | None] = {expected} if isinstance(expected, str) else expected
    if found not in allowed:
        names = sorted(t for t in allowed if t is not None)
        wanted = " or ".join(names) + (" (or no typ)" if None in allowed else "")
        raise AssertionRefused(f"typ must be {wanted}, not {found or 'absent'}")


class TrustedIssuers:
    def __init__(self, issuers: tuple[TrustedIssuer, ...], leeway: int,
                 clock: Callable[[], float] = wall) -> None:
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        self.leeway = leeway
        self.clock = clock
        self._keys: dict[str, _CachedKeys] = {}

    def claims_issuer(self, token: str) -> str | None:
        """The unverified ``iss`` of a JWT, to route it; None when it is not a JWT with one."""
        try:
            bounded_json.check_jws_depth(token)  # before the JOSE library parses the header with json.loads
            payload = bounded_json.loads(jws.extract_compact(token.encode("ascii")).payload)
        except (JoseError, ValueError, UnicodeError):
            return None
        iss = payload.get("iss") if isinstance(payload, dict) else None
        return iss if isinstance(iss, str) else None

    async def verify(self, token: str, purpose: str, *,
                     typ: str | AbstractSet[str | None] | None = None) -> VerifiedAssertion:
        """The assertion, if it is believed for ``purpose``; else :class:`AssertionRefused`.

        ``typ`` is the explicit type the use requires (RFC 8725 §3.11): one type, or a set of them in which
        None admits a JWT without ``typ``; None leaves the type to the caller."""
        iss = self.claims_issuer(token)
        issuer = self.issuers.get(iss) if iss is not None else None
        if issuer is None or purpose not in issuer.purposes:
            raise AssertionRefused(f"the issuer is not trusted for a {purpose.replace('_', ' ')}")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise AssertionRefused("not a compact JWS") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in issuer.algorithms:
            raise AssertionRefused(f"alg must be one of {', '.join(issuer.algorithms)}")
        if "crit" in header:
            raise AssertionRefused("critical header parameters are not understood")
        if "typ" in header and not isinstance(header["typ"], str):
            raise AssertionRefused("typ must be a string")
        _check_type(explicit_type(header), typ)
        claims = await self._verified_claims(token, issuer, algorithm, header.get("kid"))
        self._check_claims(claims, issuer)
        return VerifiedAssertion(issuer, header, claims)

    async def _verified_claims(self, token: str, issuer: TrustedIssuer, algorithm: str, kid: Any) -> dict[str, Any]:
        kid = kid if isinstance(kid, str) else None
        for refresh in (False, True):
            if refresh and issuer.jwks_uri is None:
                break
            jwks = await self._jwks(issuer, refresh=refresh)
            for key in candidate_keys(jwks, algorithm, kid):
                try:
                    return dict(jwt.decode(token, key, algorithms=[algorithm]).claims)
                except (JoseError, ValueError, TypeError, KeyError):
                    continue
        raise AssertionRefused("the signature is not by a key of the issuer")

    def _check_claims(self, claims: Mapping[str, Any], issuer: TrustedIssuer) -> None:
        now = self.clock()
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if issuer.audience not in audiences:
            raise AssertionRefused(f"aud must include {issuer.audience}")
        exp = claims.get("exp")
        if not is_time(exp):
            raise AssertionRefused("exp is required (a plausible time)")
        if exp + self.leeway <= now:
            raise AssertionRefused("expired")
        for name in ("iat", "nbf"):
            value = claims.get(name)
            if value is not None and (not is_time(value) or value > now + self.leeway):
                raise AssertionRefused(f"{name} is in the future or not a time")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH:
            raise AssertionRefused(f"sub is required (at most {MAX_SUBJECT_LENGTH} characters)")

    async def _jwks(self, issuer: TrustedIssuer, *, refresh: bool) -> Mapping[str, Any]:
        if issuer.jwks is not None:
            return issuer.jwks
        assert issuer.jwks_uri is not None  # configuration sets exactly one of jwks_file or jwks_uri
        cached = self._keys.get(issuer.issuer)
        age = self.clock() - cached.fetched_at if cached is not None else None
        if cached is not None and age is not None and (
                (not refresh and age < JWKS_TTL) or (refresh and age < issuer.jwks_refresh_seconds)):
            return cached.jwks
        try:
            async with open_session(step_timeout(FETCH_TIMEOUT)) as session:
                answer = await fetch(session, "GET", issuer.jwks_uri, max_bytes=JWKS_MAX_BYTES,
                                     headers={"Accept": "application/json"})
            if answer.status != 200:
                raise AssertionRefused(f"the issuer's JWK Set could not be fetched (HTTP {answer.status})")
            jwks = check_client_jwks(bounded_json.loads(answer.body))
        except (NoAnswer, ValueError, AssertionRefused) as exc:
            if cached is not None:
                return cached.jwks  # keep using the keys we have while the issuer is unreachable or failing
            if isinstance(exc, AssertionRefused):
                raise
            if isinstance(exc, JwksError | BodyTooLarge):
                reason = str(exc)
            else:
                reason = exc.cause_name if isinstance(exc, NoAnswer) else type(exc).__name__
            raise AssertionRefused(f"the issuer's JWK Set could not be fetched: {reason}") from None
        self._keys[issuer.issuer] = _CachedKeys(jwks, self.clock())
        return jwks
