"""Bearer token checks for a protected server (RFC 6750 §2.1, §3; RFC 9728 §5.1; MCP authorization).

Only the ``Authorization`` header is accepted (RFC 6750 §2.1); a token in the
query string is refused outright (MCP: "MUST NOT be accepted from the query
string"). Every refusal carries the challenge a client needs to recover:
``resource_metadata`` (RFC 9728 §5.1) and ``scope`` (all scopes the call needs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from deputy.config import Settings, UpstreamServer
from deputy.gateway.principal import Principal
from deputy.gateway.resource_metadata import metadata_url
from deputy.gateway.revocations import RevocationsUnavailable
from deputy.oauth.access_tokens import AccessTokenValidator, InvalidToken
from deputy.oauth.errors import TemporarilyUnavailable


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str | None
    description: str
    www_authenticate: str | None


class BearerAuthenticator:
    def __init__(self, settings: Settings, validator: AccessTokenValidator) -> None:
        self.validator = validator
        self._metadata = {name: metadata_url(settings, s) for name, s in settings.servers.items()}

    def challenge(self, server: UpstreamServer, error: str | None = None, description: str | None = None,
                  scopes: Iterable[str] | None = None) -> str:
        """``scopes``: every scope the call needs (default: the server's required scopes)."""
        needed = " ".join(scopes if scopes is not None else server.required_scopes)
        parts = [f'resource_metadata="{self._metadata[server.name]}"', f'scope="{needed}"']
        if error is not None:
            parts.insert(0, f'error="{error}"')
            if description:
                parts.insert(1, f'error_description="{description}"')
        return "Bearer " + ", ".join(parts)

    def authenticate(self, server: UpstreamServer, authorization: str | None, query: bytes) -> Principal | Refusal:
        if query and any(key == "access_token" for key, _ in parse_qsl(query.decode("latin-1"))):
            return Refusal(400, "invalid_request", "access tokens are not accepted in the query string",
                           self.challenge(server, "invalid_request", "token in query string"))
        if authorization is None:
            return Refusal(401, None, "authorization required", self.challenge(server))
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer":
            return Refusal(401, None, "authorization required", self.challenge(server))
        if not token or " " in token:
            return Refusal(400, "invalid_request", "malformed Authorization header",
                           self.challenge(server, "invalid_request", "malformed Authorization header"))
        try:
            claims = self.validator.validate(token, server.resource)
        except InvalidToken:
            return Refusal(401, "invalid_token", "the access token is invalid",
                           self.challenge(server, "invalid_token", "the access token is invalid or expired"))
        except RevocationsUnavailable:
            return Refusal(503, TemporarilyUnavailable.code, "token revocation status cannot be checked", None)
        missing = [s for s in server.required_scopes if s not in claims.scopes]
        if missing:
            return Refusal(403, "insufficient_scope", "the token lacks a required scope",
                           self.challenge(server, "insufficient_scope"))
        return Principal(
            user=claims.subject,
            agent=claims.client_id,
            scopes=claims.scopes,
            token_id=claims.token_id,
            server=server.name,
            actors=claims.actors,
            txn=claims.txn,
            expires_at=claims.expires_at,
            grant_id=claims.grant_id,
            auth_time=claims.auth_time,
            user_attributes=claims.user,
            issuer=self.validator.issuer,
        )
