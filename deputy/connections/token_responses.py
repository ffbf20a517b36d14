"""An upstream's token response (RFC 6749 §5.1, §5.2), checked before anything of it is kept.

A successful response must be a JSON object with a non-empty ``access_token`` of bounded size and ``token_type``
``Bearer`` (case-insensitive, RFC 6749 §7.1 and RFC 6750 §4: Deputy sends nothing else); ``expires_in``, when given,
a positive number of seconds of at most :data:`MAX_LIFETIME` (a larger one is cut to it), turned into an absolute
``expires_at``; ``refresh_token`` and ``scope`` strings when present (RFC 6749 §5.1: an omitted ``scope`` is the
one asked for).

An access token Deputy can read (a JWT, RFC 9068) is looked at without verifying it, only to refuse a token that says
it is for someone else: an ``aud`` that does not name the resource asked for (RFC 8707 §2) or an ``iss`` that is not
the authorization server's (RFC 9700 §4.4, mix-up). An opaque token is taken as the authorization server gave it.

Errors (§5.2): a 4xx with ``error`` is the server refusing (the caller decides what that means: a failed code
redemption, or a refresh that will never work); a 5xx, or no answer, is the server being unavailable.
"""

from __future__ import annotations

import json
from typing import Any

from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from deputy.config_servers import canonical_resource
from deputy.connections.errors import ConnectionFailed, TokenProblem, shown
from deputy.connections.model import UpstreamTokens
from deputy.connections.sdk_auth import issuers_match
from deputy.connections.upstream_http import JsonAnswer

MAX_TOKEN = 16 * 1024
MAX_LIFETIME = 366 * 24 * 3600
MAX_SCOPE = 4096


def read_tokens(server: str, answer: JsonAnswer, *, now: int, issuer: str, resource: str,
                asked_scope: str | None, refused: TokenProblem) -> UpstreamTokens:
    """The tokens in ``answer``; ``refused`` is the reason for a 4xx (``token_request_failed`` for a code,
    ``refresh_refused`` for a refresh)."""
    document = answer.document
    if answer.status != 200:
        error = document.get("error") if isinstance(document, dict) else None
        named = error if isinstance(error, str) else None
        reason: TokenProblem = "upstream_unavailable" if answer.status >= 500 else refused
        raise ConnectionFailed(server, reason, f"the token endpoint answered HTTP {answer.status}"
                               + (f" {shown(named)}" if named else ""), error=named)
    if not isinstance(document, dict):
        raise _invalid(server, "the token response is not a JSON object")
    access_token = document.get("access_token")
    if not isinstance(access_token, str) or not access_token or len(access_token) > MAX_TOKEN:
        raise _invalid(server, "the token response has no usable access_token")
    token_type = document.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _invalid(server, f"the token type is {shown(token_type)!r}, not Bearer")
    refresh_token = document.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token
                                      or len(refresh_token) > MAX_TOKEN):
        raise _invalid(server, "the refresh_token is not a usable string")
    scope = document.get("scope", asked_scope)
    if scope is not None and (not isinstance(scope, str) or len(scope) > MAX_SCOPE):
        raise _invalid(server, "the scope is not a string")
    _check_claims(server, access_token, issuer, resource)
    return UpstreamTokens(access_token, refresh_token, _expires_at(server, document.get("expires_in"), now),
                          scope or None)


def _expires_at(server: str, value: Any, now: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:  # some servers send a numeric string
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value <= 0:
        raise _invalid(server, "expires_in is not a positive number of seconds")
    return now + int(min(value, MAX_LIFETIME))


def _check_claims(server: str, access_token: str, issuer: str, resource: str) -> None:
    """RFC 9068 §2.2 claims of a JWT access token, unverified: only to refuse a token for another audience."""
    if access_token.count(".") != 2:
        return
    try:
        claims = json.loads(extract_compact(access_token.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        return  # not a JWS Deputy can read: opaque to it
    if not isinstance(claims, dict):
        return
    audience = claims.get("aud")
    if audience is not None:
        named = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        wanted = canonical_resource(resource)
        if not any(isinstance(a, str) and canonical_resource(a) == wanted for a in named):
            raise _invalid(server, f"the access token is for {shown(audience)!r}, not for {resource!r}")
    token_issuer = claims.get("iss")
    if token_issuer is not None and not (isinstance(token_issuer, str) and issuers_match(token_issuer, issuer)):
        raise _invalid(server, f"the access token was issued by {shown(token_issuer)!r}, not {issuer!r}")


def _invalid(server: str, detail: str) -> ConnectionFailed:
    return ConnectionFailed(server, "token_response_invalid", detail)
