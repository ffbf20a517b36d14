"""The authorization code flow with an identity provider, Deputy as the relying party (OpenID Connect Core 1.0 §3.1).

:meth:`RelyingParty.start` makes the authentication request (Core §3.1.2.1): ``response_type=code``, the
provider's ``client_id`` and redirect URI (``{public_url}/login/callback/NAME``, one per provider), its scopes,
and three fresh 256-bit random values (:func:`deputy.handles.new_handle`): ``state`` (RFC 6749 §10.12: the
response belongs to this browser's sign-in), ``nonce`` (Core §15.5.2: the ID token does) and the PKCE verifier
(RFC 7636 §4.1; only its S256 challenge is sent, §4.2 — never ``plain``). ``prompt`` and ``max_age`` from the
MCP client's own request are passed on (Core §3.1.2.1). It returns the URL and a :class:`PendingSignIn`, which
the caller keeps bound to the browser's session and hands back once: this module keeps no state.

:meth:`RelyingParty.finish` takes the pending sign-in and the authorization response's query and, in order:

1. ``state`` equals the pending one (constant time) and the sign-in is at most :data:`PENDING_TTL` old;
2. ``iss`` (RFC 9207 §2.4), when present, is exactly this provider's issuer, and must be present when its metadata
   says ``authorization_response_iss_parameter_supported``: a response another provider produced is refused
   before its code goes anywhere (RFC 9700 §4.4, mix-up) — an error response included;
3. an ``error`` from the provider (RFC 6749 §4.1.2.1) ends the sign-in with it;
4. the code is redeemed at the provider's token endpoint (Core §3.1.3.1) with the PKCE verifier and the redirect
   URI, the client authenticated as the provider supports (Core §9): ``client_secret_basic``, else
   ``client_secret_post``; or ``private_key_jwt`` (:mod:`deputy.federation.oauth_client`, which Deputy's upstream
   connections use too);
5. the ID token is validated (:mod:`deputy.federation.id_tokens`); the user it names is mapped and admitted
   (:mod:`deputy.federation.claims`).

The provider's own tokens (access, refresh, the ID token itself) are dropped as soon as the identity is read.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from deputy import clock
from deputy.config_identity_providers import IdentityProvider
from deputy.federation.claims import FederatedIdentity, admit, federated_identity
from deputy.federation.discovery import Discovery, ProviderMetadata
from deputy.federation.errors import CallbackRefused, ProviderUnavailable, shown
from deputy.federation.id_tokens import Expected, validate_id_token
from deputy.federation.oauth_client import (
    ClientCredentials,
    SigningKey,
    authenticate_client,
    code_challenge,
    with_query,
)
from deputy.federation.provider_http import ProviderHttp, ProviderHttpError
from deputy.federation.provider_keys import ProviderKeys
from deputy.handles import new_handle

PENDING_TTL = 600  # seconds a sign-in may spend at the provider
TOKEN_MAX_BYTES = 64 * 1024
PROMPTS = frozenset({"none", "login", "consent", "select_account"})  # Core §3.1.2.1
MAX_AGE_LIMIT = 10 * 365 * 24 * 3600
ERROR_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """One sign-in sent to a provider, to be finished once, by the browser that started it."""

    idp: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    created_at: float
    max_age: int | None = None




class RelyingParty:
    def __init__(self, providers: tuple[IdentityProvider, ...], leeway: int, http: ProviderHttp | None = None) -> None:
        self.providers = {provider.name: provider for provider in providers}
        self.leeway = leeway
        self.http = http or ProviderHttp()
        self.discovery = Discovery(self.http)
        self.keys = ProviderKeys(self.http)

    def provider(self, name: str) -> IdentityProvider:
        """The configured provider ``name``; ``KeyError`` for any other."""
        return self.providers[name]

    async def start(self, name: str, *, prompt: str | None = None,
                    max_age: int | None = None) -> tuple[str, PendingSignIn]:
        """The authentication request's URL (Core §3.1.2.1) and the sign-in it starts."""
        provider = self.provider(name)
        if prompt is not None and (not prompt or not set(prompt.split(" ")) <= PROMPTS):
            raise ValueError("prompt must be space-separated values of none, login, consent, select_account")
        if max_age is not None and not 0 <= max_age <= MAX_AGE_LIMIT:
            raise ValueError("max_age must be a number of seconds")
        metadata = await self.discovery.metadata(provider)
        pending = PendingSignIn(name, new_handle(), new_handle(), new_handle(), clock.wall(), max_age)
        params = {"response_type": "code", "client_id": provider.client_id, "redirect_uri": provider.redirect_uri,
                  "scope": " ".join(provider.scopes), "state": pending.state, "nonce": pending.nonce,
                  "code_challenge": code_challenge(pending.code_verifier), "code_challenge_method": "S256"}
        if prompt is not None:
            params["prompt"] = prompt
        if max_age is not None:
            params["max_age"] = str(max_age)
        return with_query(metadata.authorization_endpoint, params), pending

    async def finish(self, pending: PendingSignIn, query: Mapping[str, str]) -> FederatedIdentity:
        """The user the provider signed in, admitted; else a :class:`~deputy.federation.errors.SignInFailed`.

        ``query`` is the authorization response's parameters, each once (the caller refuses a repeated one)."""
        provider = self.provider(pending.idp)
        state = query.get("state")
        if not isinstance(state, str) or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise CallbackRefused(provider.name, "state_mismatch", "state is not this browser's sign-in")
        if clock.wall() - pending.created_at > PENDING_TTL:
            raise CallbackRefused(provider.name, "state_expired", "the sign-in took too long; start again")
        metadata = await self.discovery.metadata(provider)
        _check_issuer(provider, metadata, query.get("iss"))
        error = query.get("error")
        if error is not None:
            code = error if error and len(error) <= 64 and set(error) <= ERROR_CODE_CHARS else "invalid"
            described = query.get("error_description")
            raise CallbackRefused(provider.name, "idp_error", f"the provider answered {code}"
                                  + (f": {shown(described)}" if described else ""), error=code)
        code_value = query.get("code")
        if not code_value:
            raise CallbackRefused(provider.name, "code_missing", "the response carries no code")
        id_token = await self._redeem(provider, metadata, code_value, pending.code_verifier)
        claims = await validate_id_token(id_token, provider, metadata, self.keys,
                                         Expected(pending.nonce, pending.max_age, self.leeway))
        identity = federated_identity(provider, claims)
        admit(provider, identity)
        return identity

    async def _redeem(self, provider: IdentityProvider, metadata: ProviderMetadata, code: str,
                      verifier: str) -> object:
        """Core §3.1.3.1-3.1.3.3: the token request; returns the ``id_token`` member as it came."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": provider.redirect_uri,
                "code_verifier": verifier}
        headers = _client_authentication(provider, metadata, form)
        try:
            answer = await self.http.post_form(metadata.token_endpoint, urlencode(form).encode(), headers,
                                               TOKEN_MAX_BYTES)
        except ProviderHttpError as exc:
            raise ProviderUnavailable(provider.name, "token_request_failed", str(exc)) from None
        document = answer.document if isinstance(answer.document, dict) else {}
        if answer.status != 200:
            error = document.get("error")
            named = f" {shown(error)}" if isinstance(error, str) else ""
            raise ProviderUnavailable(provider.name, "token_request_failed",
                                      f"the token endpoint answered HTTP {answer.status}{named}")
        if "id_token" not in document:
            raise ProviderUnavailable(provider.name, "token_request_failed", "the token response has no id_token")
        return document["id_token"]


def _check_issuer(provider: IdentityProvider, metadata: ProviderMetadata, iss: str | None) -> None:
    """RFC 9207 §2.4: ``iss`` compared exactly with this provider's issuer; required when it says it sends one."""
    if iss is None:
        if metadata.iss_parameter_supported:
            raise CallbackRefused(provider.name, "issuer_missing",
                                  "the provider sends iss with its responses (RFC 9207), and this one has none")
        return
    if iss != metadata.issuer:
        raise CallbackRefused(provider.name, "issuer_mismatch",
                              f"the response comes from issuer {shown(iss)!r}, not {metadata.issuer!r}")


def _client_authentication(provider: IdentityProvider, metadata: ProviderMetadata,
                           form: dict[str, str]) -> dict[str, str]:
    """Core §9: adds the client's credentials to ``form``, or returns the ``Authorization`` header that carries
    them (:func:`deputy.federation.oauth_client.authenticate_client`); a provider that supports none of the ways
    Deputy has is refused."""
    methods = metadata.token_endpoint_auth_methods
    if provider.client_key is not None:
        key = provider.client_key
        algs = metadata.token_endpoint_auth_signing_algs
        if "private_key_jwt" not in methods or (algs is not None and key.algorithm not in algs):
            raise ProviderUnavailable(provider.name, "token_request_failed",
                                      f"the provider does not accept private_key_jwt signed with {key.algorithm}")
        credentials = ClientCredentials(provider.client_id, "private_key_jwt",
                                        key=SigningKey(key.key, key.algorithm, key.kid))
    elif "client_secret_basic" in methods:
        credentials = ClientCredentials(provider.client_id, "client_secret_basic", provider.client_secret or "")
    elif "client_secret_post" in methods:
        credentials = ClientCredentials(provider.client_id, "client_secret_post", provider.client_secret or "")
    else:
        raise ProviderUnavailable(provider.name, "token_request_failed",
                                  "the provider accepts neither client_secret_basic nor client_secret_post")
    return authenticate_client(credentials, metadata.token_endpoint, form)


_with_query = with_query  # kept for callers of the old name
