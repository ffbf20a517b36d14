"""A hostile OpenID Provider for tests: it serves whatever the test tells it to, on a loopback port.

:func:`hostile_idp` serves, in the test's own event loop (:func:`tests.support.local_http.serving`):

- ``/.well-known/openid-configuration``: :meth:`HostileIdp.metadata` — a valid document for its issuer
  ``http://127.0.0.1:PORT``, with :attr:`HostileIdp.metadata_changes` merged in (``OMIT`` removes a member) — or,
  when :attr:`HostileIdp.discovery_answer` is set, exactly that answer (any status, headers and body);
- ``/jwks``: the public keys of :attr:`HostileIdp.keys` (an :class:`tests.support.idp.Issuer`, EC P-256 and RSA
  2048), or :attr:`HostileIdp.jwks_answer`;
- ``/token``: records the request (:attr:`HostileIdp.token_requests`, form and headers) and answers
  ``{"access_token", "token_type", "id_token": HostileIdp.id_token}``, or :attr:`HostileIdp.token_answer`;
- ``/authorize``: never called by the code under test (the browser would go there); 404.

The ID token is whatever the test built, typically with :meth:`HostileIdp.sign` over :meth:`HostileIdp.claims`,
which start valid for a client and a nonce and take any change (``OMIT`` leaves a claim out), or with
:func:`tests.support.idp.sign` for a forgery (``alg: none``, an HMAC keyed with the public key).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deputy.config_identity_providers import IdentityProvider, identity_providers
from deputy.federation.claims import FederatedIdentity
from deputy.federation.relying_party import PendingSignIn, RelyingParty
from tests.support.idp import OMIT, Issuer, SigningKey
from tests.support.local_http import serving

CLIENT_ID = "deputy-at-hostile"
CLIENT_SECRET = "a secret: with/odd+chars"
PUBLIC_URL = "https://deputy.example.com"
LEEWAY = 30


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer, served as it is."""

    status: int = 200
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        body = self.body if isinstance(self.body, bytes) else json.dumps(dict(self.body)).encode()
        return Response(body, self.status, headers=dict(self.headers), media_type="application/json")


@dataclass(frozen=True)
class TokenRequest:
    form: Mapping[str, str]
    headers: Mapping[str, str]


class HostileIdp:
    def __init__(self, name: str = "hostile") -> None:
        self.name = name
        self.port = 0
        self.keys = Issuer("", name)
        self.metadata_changes: dict[str, Any] = {}
        self.discovery_answer: Answer | None = None
        self.jwks_answer: Answer | None = None
        self.token_answer: Answer | None = None
        self.id_token: Any = None
        self.token_requests: list[TokenRequest] = []
        self.hits: Counter[str] = Counter()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.issuer}{path}"

    def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "jwks_uri": self.url("/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
            "authorization_response_iss_parameter_supported": True,
        }
        document.update(self.metadata_changes)
        return {name: value for name, value in document.items() if value is not OMIT}

    def claims(self, *, client_id: str, nonce: Any, **changes: Any) -> dict[str, Any]:
        """Claims of a valid ID token for ``client_id`` and ``nonce``; each keyword replaces (or, ``OMIT``,
        removes) one."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": "alice-sub-1", "aud": client_id, "iat": now,
                                  "exp": now + 300, "nonce": nonce, "preferred_username": "alice",
                                  "email": "alice@example.com", "email_verified": True, "name": "Alice",
                                  "groups": ["finance", "staff"]}
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not OMIT}

    def sign(self, claims: Mapping[str, Any], *, alg: str = "ES256", kid: Any = None,
             key: SigningKey | bytes | None = None, header: Mapping[str, Any] | None = None) -> str:
        """``claims`` signed by this provider's current key for ``alg`` (or ``key``), ``kid`` as given."""
        if kid is None:
            return self.keys.jwt(claims, alg=alg, key=key, header=header)
        return self.keys.jwt(claims, alg=alg, key=key, kid=kid, header=header)

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            self.hits["discovery"] += 1
            if self.discovery_answer is not None:
                return self.discovery_answer.response()
            return Answer(200, self.metadata()).response()

        async def jwks(request: Request) -> Response:
            self.hits["jwks"] += 1
            return (self.jwks_answer or Answer(200, self.keys.jwks())).response()

        async def token(request: Request) -> Response:
            self.hits["token"] += 1
            form = await request.form()
            self.token_requests.append(TokenRequest({k: str(v) for k, v in form.items()}, dict(request.headers)))
            if self.token_answer is not None:
                return self.token_answer.response()
            return Answer(200, {"access_token": "idp-access-token", "token_type": "Bearer",
                                "id_token": self.id_token}).response()

        return Starlette(routes=[Route("/.well-known/openid-configuration", discovery),
                                 Route("/jwks", jwks), Route("/token", token, methods=["POST"])])


@asynccontextmanager
async def hostile_idp(name: str = "hostile") -> AsyncIterator[HostileIdp]:
    """A :class:`HostileIdp` served until the block ends."""
    idp = HostileIdp(name)
    async with serving(idp.app()) as port:
        idp.port = port
        idp.keys.issuer = idp.issuer
        yield idp


def provider_for(idp: HostileIdp, base_dir: Path | None = None, **entry: Any) -> IdentityProvider:
    """The configured provider (read by the real configuration code) for ``idp``: a client secret unless
    ``entry`` says otherwise; each keyword replaces a key of the entry (``OMIT`` removes it)."""
    table: dict[str, Any] = {"name": idp.name, "issuer": idp.issuer, "client_id": CLIENT_ID,
                             "client_secret": CLIENT_SECRET, **entry}
    table = {key: value for key, value in table.items() if value is not OMIT}
    [provider] = identity_providers({"identity_providers": [table]}, PUBLIC_URL, {}, base_dir or Path.cwd())
    return provider


def sent_parameters(url: str) -> dict[str, str]:
    """The query of an authentication request URL, one value per name."""
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def sign_in(rp: RelyingParty, idp: HostileIdp, provider: IdentityProvider,
                  token: Callable[[str], Any] | None = None, *, query: Mapping[str, Any] | None = None,
                  pending_seen: Callable[[PendingSignIn], None] | None = None) -> FederatedIdentity:
    """A whole sign-in through ``idp``: start, the ID token ``token(nonce)`` builds (default: a valid one) served
    by its token endpoint, then the callback with the right state and iss, each changed by ``query`` (``OMIT``
    removes a parameter)."""
    url, pending = await rp.start(provider.name)
    nonce = sent_parameters(url)["nonce"]
    idp.id_token = token(nonce) if token is not None else idp.sign(idp.claims(client_id=provider.client_id,
                                                                              nonce=nonce))
    if pending_seen is not None:
        pending_seen(pending)
    answer: dict[str, Any] = {"code": "code-from-idp", "state": pending.state, "iss": idp.issuer, **(query or {})}
    return await rp.finish(pending, {name: value for name, value in answer.items() if value is not OMIT})
