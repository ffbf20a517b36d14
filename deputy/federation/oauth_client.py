"""What Deputy does as an OAuth client, whichever server it is the client of: an identity provider it signs users in
through (:mod:`deputy.federation.relying_party`) or an upstream MCP server's authorization server
(:mod:`deputy.connections.authorization`).

- :func:`authenticate_client`: the client's credentials on a token-endpoint request — ``client_secret_basic``
  (RFC 6749 §2.3.1: each part form-encoded, then joined with ``:`` and base64-encoded), ``client_secret_post``
  (§2.3.1, in the body), ``private_key_jwt`` (RFC 7523 §2.2 and §3: an assertion with ``iss`` = ``sub`` = the client
  id, ``aud`` the token endpoint, a fresh ``jti``, a :data:`ASSERTION_LIFETIME`-second life) or ``none`` (a public
  client names itself with ``client_id``, RFC 6749 §4.1.3);
- :func:`code_challenge`: the PKCE S256 challenge of a verifier (RFC 7636 §4.2; ``plain`` is never sent);
- :func:`with_query`: an authorization request URL, the endpoint's own query kept (RFC 6749 §3.1).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from joserfc import jwt

from deputy import clock
from deputy.handles import new_handle

ASSERTION_LIFETIME = 60
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key Deputy signs ``private_key_jwt`` assertions with: a joserfc key, its JWS alg and its kid."""

    key: Any = field(repr=False)
    algorithm: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    method: AuthMethod
    secret: str | None = field(default=None, repr=False)
    key: SigningKey | None = None


def authenticate_client(credentials: ClientCredentials, token_endpoint: str, form: dict[str, str]) -> dict[str, str]:
    """Adds the client's credentials to ``form``, or returns the ``Authorization`` header that carries them.

    ``ValueError`` when the method needs a secret or key the credentials lack."""
    client_id = credentials.client_id
    if credentials.method == "private_key_jwt":
        if credentials.key is None:
            raise ValueError("private_key_jwt needs a private key")
        key = credentials.key
        now = clock.now()
        claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "jti": new_handle(), "iat": now,
                  "exp": now + ASSERTION_LIFETIME}
        header = {"alg": key.algorithm, "typ": "JWT", **({"kid": key.kid} if key.kid else {})}
        assertion = jwt.encode(header, claims, key.key, algorithms=[key.algorithm])
        form.update({"client_id": client_id, "client_assertion": assertion, "client_assertion_type": ASSERTION_TYPE})
        return {}
    if credentials.method == "none":
        form["client_id"] = client_id
        return {}
    if credentials.secret is None:
        raise ValueError(f"{credentials.method} needs a client secret")
    if credentials.method == "client_secret_basic":
        pair = f"{quote_plus(client_id)}:{quote_plus(credentials.secret)}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    form.update({"client_id": client_id, "client_secret": credentials.secret})
    return {}


def code_challenge(verifier: str) -> str:
    """RFC 7636 §4.2, S256: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def with_query(endpoint: str, params: Mapping[str, str]) -> str:
    """``endpoint`` with ``params`` added to the query it may already have (RFC 6749 §3.1), ours replacing its."""
    parts = urlsplit(endpoint)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()])))
