"""What Deputy presents to an upstream server, chosen per server (``credentials`` in ``[servers.NAME]``).

The client's own token is never forwarded (MCP "Token Passthrough" is forbidden):
it was issued for Deputy's resource, not for the upstream. Instead, per server:

- ``exchange``: Deputy mints a short-lived access token (RFC 9068, ``typ`` at+jwt,
  signed with the key it publishes at ``/.well-known/jwks.json``) for the upstream
  itself: ``aud`` is the server's ``upstream_audience`` (RFC 8707), ``sub`` the
  user (or agent) the call is for, ``client_id`` the agent that presented the
  token, ``scope`` and ``txn`` those of the client's token, and ``act`` (RFC 8693
  §4.1) the gateway as the current actor followed by the client token's chain —
  so the upstream can verify, with Deputy's JWKS, who asked for whom. The
  gateway's identity is the URL Deputy serves the server at,
  ``{issuer}/mcp/NAME`` (the resource the client's token was bound to): stable,
  different per server, vouched for by ``iss``. No ``sid`` or ``may_act``: the
  token is for one hop and cannot be exchanged onward at Deputy.
  Lifetime: at most :data:`UPSTREAM_TOKEN_TTL` and never past the client's token.
  Tokens are cached per client token (``jti``), least recently used dropped
  beyond :data:`CACHE_SIZE`, and reused until :data:`REFRESH_MARGIN` before they
  end, so a busy client costs one signature per token, not one per call. When
  the client's token itself ends sooner than that margin, minting again could
  not give a longer life, so the cached token is used to the end.
- ``static``: the configured headers (literal, ``{env = ...}`` or ``{file = ...}``,
  read at start).
- ``oauth``: the user's own token at the upstream's authorization server (:mod:`deputy.connections`), got per
  call after the policy decision (:mod:`deputy.gateway.connection_answers`) and carried by the exchange; nothing
  is sent for the gateway itself, and a client's ``Authorization`` is dropped as for every server.
- ``none``: nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from deputy.act_chain import Actor, act_claim
from deputy.clock import wall
from deputy.config import UpstreamServer
from deputy.gateway.principal import Principal
from deputy.keys import KeyRing
from deputy.oauth.access_tokens import mint_access_token

UPSTREAM_TOKEN_TTL = 60
REFRESH_MARGIN = 15
CACHE_SIZE = 10_000

Headers = Sequence[tuple[str, str]]


class UpstreamCredentials(Protocol):
    def headers(self, principal: Principal) -> Headers:
        """The credential headers for one call made for ``principal``."""
        ...

    @property
    def header_names(self) -> frozenset[str]:
        """Lower-case names of the headers :meth:`headers` sets (a client may not send its own)."""
        ...


class NoCredentials:
    header_names: frozenset[str] = frozenset()

    def headers(self, principal: Principal) -> Headers:
        return ()


class OAuthCredentials:
    """``credentials = "oauth"``: the headers come with each call (:attr:`Exchange.upstream_headers
    <deputy.gateway.exchange.Exchange.upstream_headers>`), none for Deputy itself."""

    header_names = frozenset({"authorization"})

    def headers(self, principal: Principal) -> Headers:
        return ()


class StaticCredentials:
    def __init__(self, headers: Headers) -> None:
        self._headers = tuple(headers)
        self.header_names = frozenset(name.lower() for name, _ in self._headers)

    def headers(self, principal: Principal) -> Headers:
        return self._headers


def gateway_actor(issuer: str, server: UpstreamServer) -> Actor:
    """The gateway as an actor in the ``act`` chain: ``{issuer}/mcp/NAME``, vouched for by Deputy."""
    return Actor(sub=server.resource, client_id=None, iss=issuer)


class ExchangeCredentials:
    header_names = frozenset({"authorization"})

    def __init__(
        self,
        server: UpstreamServer,
        keyring: KeyRing,
        issuer: str,
        *,
        ttl: int = UPSTREAM_TOKEN_TTL,
        refresh_margin: int = REFRESH_MARGIN,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = wall,
    ) -> None:
        if server.upstream_audience is None:
            raise ValueError(f"server {server.name} has no upstream_audience")
        self.audience = server.upstream_audience
        self.keyring = keyring
        self.issuer = issuer
        self.gateway = gateway_actor(issuer, server)
        self.ttl = ttl
        self.refresh_margin = refresh_margin
        self.cache_size = cache_size
        self.clock = clock
        # token_id -> (the Authorization header, the upstream token's exp)
        self._cache: OrderedDict[str, tuple[tuple[tuple[str, str], ...], int]] = OrderedDict()

    def headers(self, principal: Principal) -> Headers:
        now = self.clock()
        cached = self._cache.get(principal.token_id)
        if cached is not None:
            headers, expires_at = cached
            if expires_at - now > self.refresh_margin or (principal.expires_at <= expires_at and expires_at > now):
                self._cache.move_to_end(principal.token_id)
                return headers
        token, expires_at = self.mint(principal, now)
        headers = (("Authorization", f"Bearer {token}"),)
        self._cache[principal.token_id] = (headers, expires_at)
        self._cache.move_to_end(principal.token_id)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return headers

    def mint(self, principal: Principal, now: float) -> tuple[str, int]:
        """A new upstream token for ``principal`` and its ``exp``."""
        token, claims = mint_access_token(
            self.keyring,
            issuer=self.issuer,
            subject=principal.user,
            client_id=principal.agent,
            audience=self.audience,
            scope=" ".join(sorted(principal.scopes)),
            ttl=self.ttl,
            grant_id=None,
            auth_time=principal.auth_time,
            expires_at=min(int(now) + self.ttl, principal.expires_at),
            act=act_claim((self.gateway, *principal.actors)),
            txn=principal.txn,
        )
        return token, int(claims["exp"])


def upstream_credentials(server: UpstreamServer, keyring: KeyRing, issuer: str) -> UpstreamCredentials:
    """The credentials ``server`` is configured with."""
    if server.credentials == "exchange":
        return ExchangeCredentials(server, keyring, issuer)
    if server.credentials == "static":
        return StaticCredentials(list(server.headers.items()))
    if server.credentials == "oauth":
        return OAuthCredentials()
    return NoCredentials()
