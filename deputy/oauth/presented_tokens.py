"""What a token handed back to Deputy is (RFC 7009 §2.1, RFC 7662 §2.1): one of its access tokens,
one of its refresh tokens, or nothing it knows.

``token_type_hint`` only decides which kind is tried first (both RFCs: the server
extends its search when the hint is wrong). An access token counts only when it is
a JWT Deputy signed (signature, ``typ``, ``iss``); expiry and revocation are left to
the caller, which needs them differently.
"""

from __future__ import annotations

from dataclasses import dataclass

from deputy.oauth.access_tokens import AccessTokenClaims, InvalidToken
from deputy.services import Services
from deputy.storage.grants import Grant, RefreshTokenState

MAX_TOKEN_LENGTH = 16_384


@dataclass(frozen=True, slots=True)
class PresentedAccessToken:
    claims: AccessTokenClaims
    grant: Grant | None  # the grant of its ``sid``; None when the grant is unknown


@dataclass(frozen=True, slots=True)
class PresentedRefreshToken:
    state: RefreshTokenState


Presented = PresentedAccessToken | PresentedRefreshToken


class TokenIdentifier:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.validator = services.token_verifier

    async def identify(self, token: str, hint: str | None) -> Presented | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        if hint == "refresh_token":
            return await self._refresh(token) or await self._access(token)
        return await self._access(token) or await self._refresh(token)

    async def _access(self, token: str) -> PresentedAccessToken | None:
        if token.count(".") != 2:
            return None
        try:
            claims = self.validator.verify(token)
        except InvalidToken:
            return None
        grant = await self.services.grants.get(claims.grant_id) if claims.grant_id is not None else None
        return PresentedAccessToken(claims, grant)

    async def _refresh(self, token: str) -> PresentedRefreshToken | None:
        state = await self.services.grants.find_refresh_token(token)
        return PresentedRefreshToken(state) if state is not None else None
