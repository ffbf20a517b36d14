"""Dynamic client registration (RFC 7591 §3) and its management protocol (RFC 7592).

``POST /register`` checks the metadata (:mod:`deputy.oauth.client_metadata`), verifies
a ``software_statement`` if one is sent (:mod:`deputy.oauth.software_statements`), and
lets the registration policy decide (:mod:`deputy.oauth.admission`). The response
carries the client's metadata, a secret when its method needs one (stored hashed, shown
once), and a registration access token with the client configuration endpoint
``{issuer}/register/{client_id}`` (RFC 7592 §3).

``GET``/``PUT``/``DELETE /register/{client_id}`` read, replace and delete a client
registered here, with the registration access token as a Bearer token; a missing or
wrong token, or a client this endpoint did not register, is ``401 invalid_token``
(RFC 7592 §2: no hint whether the client exists). Deleting the client revokes every
grant it holds in the same transaction, so no token of it outlives the answer.

Registration attempts are limited per peer address (``rate_limit_per_minute``): more
is ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deputy import bounded_json
from deputy.handles import new_handle
from deputy.limits import worker_share
from deputy.oauth.admission import admit
from deputy.oauth.client_metadata import SECRET_METHODS, ClientMetadata, parse_client_metadata
from deputy.oauth.errors import NO_STORE, InvalidClientMetadata, InvalidRegistrationToken
from deputy.oauth.redirect_uris import refuse_deputy_host
from deputy.oauth.software_statements import SoftwareStatement, verify_software_statement
from deputy.rate_limit import SlidingWindowLimiter, client_key
from deputy.services import Services
from deputy.storage.clients import Client, hash_client_secret

SOURCE = "registration"
# RFC 7592 §2.2: read-only fields a client may echo back in an update; they are ignored.
_ECHOED = ("registration_access_token", "registration_client_uri", "client_id_issued_at", "client_secret_expires_at")


class RegistrationEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.policy = services.settings.registration
        # Counted in this process: each of N workers admits its share of the per-address rate.
        self.limiter = SlidingWindowLimiter(worker_share(self.policy.rate_limit_per_minute,
                                                         services.settings.workers))

    async def handle(self, request: Request) -> Response:
        """``POST /register``."""
        address = client_key(request)
        wait = self.limiter.admit(address)
        if wait is not None:
            return JSONResponse(
                {"error": "too_many_requests", "error_description": "too many registrations from this address"},
                status_code=429, headers={**NO_STORE, "Retry-After": SlidingWindowLimiter.retry_after(wait)})
        return await self._register(request)

    async def manage(self, request: Request) -> Response:
        """``GET``/``PUT``/``DELETE /register/{client_id}`` (RFC 7592 §2)."""
        client, token = await self._authenticate(request)
        if request.method == "GET":
            return self._answer(client, token, status=200)
        if request.method == "PUT":
            return await self._update(request, client, token)
        # RFC 7592 §2.3: the client and everything it was granted end together (one transaction).
        revoked = await self.services.grants.withdraw_client(client.client_id, "removed",
                                                             "client deleted its registration")
        await self.services.record("client.removed", client_id=client.client_id, by="the client (RFC 7592)",
                                   grants_revoked=revoked or 0)
        return Response(status_code=204, headers=NO_STORE)

    async def _register(self, request: Request) -> Response:
        raw = await _json_body(request)
        metadata, statement = self._metadata(raw)
        # Only `allowlist` knows initial access tokens; elsewhere an Authorization header is not ours to judge.
        bearer = _bearer(request) if self.policy.mode == "allowlist" else None
        admission = admit(self.policy, metadata, statement=statement, initial_access_token=bearer)
        secret = secrets.token_urlsafe(32) if metadata.token_endpoint_auth_method in SECRET_METHODS else None
        token = new_handle()
        client = await self.services.clients.put(
            client_id=uuid.uuid4().hex, client_name=metadata.client_name, redirect_uris=metadata.redirect_uris,
            token_endpoint_auth_method=metadata.token_endpoint_auth_method, source=SOURCE,
            application_type=metadata.application_type, grant_types=metadata.grant_types, client_secret=secret,
            status=admission.status, jwks=metadata.jwks, jwks_uri=metadata.jwks_uri,
            registration_access_token=token,
            client_metadata=_stored_metadata(metadata, raw, admission.admitted_by, statement))
        await self.services.record("client.registered", client_id=client.client_id, source=SOURCE,
                                   status=client.status, admitted_by=admission.admitted_by,
                                   redirect_uris=list(client.redirect_uris), grant_types=list(client.grant_types),
                                   token_endpoint_auth_method=client.token_endpoint_auth_method)
        return self._answer(client, token, status=201, secret=secret)

    async def _update(self, request: Request, client: Client, token: str) -> Response:
        raw = await _json_body(request)
        if raw.get("client_id") != client.client_id:  # RFC 7592 §2.2: MUST be included and match
            raise InvalidClientMetadata("client_id must be present and equal to this client's id")
        presented_secret = raw.get("client_secret")
        if presented_secret is not None and not (
                isinstance(presented_secret, str) and await client.verify_secret(presented_secret)):
            raise InvalidClientMetadata("client_secret does not match the secret issued to this client")
        for key in ("client_id", "client_secret", *_ECHOED):
            raw.pop(key, None)
        metadata, statement = self._metadata(raw)
        admission = admit(self.policy, metadata, statement=statement, previous=client)
        method = metadata.token_endpoint_auth_method
        secret: str | None = None
        secret_hash = client.client_secret_hash if method in SECRET_METHODS else None
        if method in SECRET_METHODS and secret_hash is None:  # a secret only when one is newly needed
            secret = secrets.token_urlsafe(32)
            secret_hash = hash_client_secret(secret)
        updated = dataclasses.replace(
            client, client_name=metadata.client_name, redirect_uris=metadata.redirect_uris,
            grant_types=metadata.grant_types, token_endpoint_auth_method=method,
            application_type=metadata.application_type, client_secret_hash=secret_hash, status=admission.status,
            jwks=metadata.jwks, jwks_uri=metadata.jwks_uri,
            client_metadata=_stored_metadata(metadata, raw, admission.admitted_by, statement))
        if not await self.services.clients.replace(updated):
            raise InvalidRegistrationToken("the registration access token is not valid")
        await self.services.record("client.registered", client_id=updated.client_id, source=SOURCE, updated=True,
                                   status=updated.status, admitted_by=admission.admitted_by,
                                   redirect_uris=list(updated.redirect_uris), grant_types=list(updated.grant_types),
                                   token_endpoint_auth_method=updated.token_endpoint_auth_method)
        return self._answer(updated, token, status=200, secret=secret)

    def _metadata(self, raw: dict[str, Any]) -> tuple[ClientMetadata, SoftwareStatement | None]:
        statement = None
        if "software_statement" in raw:
            # RFC 7591 §3.1.1: the statement's claims take precedence over the plain fields. A field it lacks still
            # comes from the request, unsigned: admission judges that by what the statement itself carries.
            statement = verify_software_statement(
                raw["software_statement"], self.policy.trusted_publishers, self.services.settings.clock_leeway)
            raw = {**raw, **statement.claims}
        metadata = parse_client_metadata(raw)
        refuse_deputy_host(metadata.redirect_uris, self.services.settings.public_url)
        return metadata, statement

    async def _authenticate(self, request: Request) -> tuple[Client, str]:
        token = _bearer(request)
        client = await self.services.clients.get(request.path_params["client_id"])
        if (token is None or client is None or client.source != SOURCE
                or not client.verify_registration_access_token(token)):
            raise InvalidRegistrationToken("the registration access token is missing or not valid for this client")
        return client, token

    def _answer(self, client: Client, token: str, status: int, secret: str | None = None) -> JSONResponse:
        issuer = self.services.settings.issuer
        answer: dict[str, Any] = {
            "client_id": client.client_id,
            "client_id_issued_at": client.created_at,
            "client_name": client.client_name,
            "redirect_uris": list(client.redirect_uris),
            "grant_types": list(client.grant_types),
            "response_types": ["code"],
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "application_type": client.application_type,
            **{k: v for k, v in client.client_metadata.items() if k != "admitted_by"},
            # RFC 7592 §3: the token is presented again, not rotated; Deputy stores only its hash.
            "registration_access_token": token,
            "registration_client_uri": f"{issuer}/register/{client.client_id}",
        }
        if client.jwks is not None:
            answer["jwks"] = dict(client.jwks)
        if client.jwks_uri is not None:
            answer["jwks_uri"] = client.jwks_uri
        if secret is not None:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = 0
        return JSONResponse(answer, status_code=status, headers=NO_STORE)


def _stored_metadata(metadata: ClientMetadata, raw: dict[str, Any], admitted_by: str,
                     statement: SoftwareStatement | None) -> dict[str, Any]:
    stored: dict[str, Any] = dict(metadata.descriptive)
    if "software_statement" in raw:
        stored["software_statement"] = raw["software_statement"]  # RFC 7591 §3.2.1: returned unmodified
    # The publisher is named only where its statement admitted the client: one that vouched for a name alone did not.
    publisher = statement.publisher if statement is not None and admitted_by == "software_statement" else None
    stored["admitted_by"] = f"{admitted_by}:{publisher}" if publisher else admitted_by
    return stored


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if _media_type(content_type) != "application/json":  # refused before a byte of the body is read
        raise InvalidClientMetadata("the body must be application/json")
    # The body's bytes are capped while they arrive (deputy.request_limits.REGISTRATION_BODY).
    return parse_registration_json(content_type, await request.body())


def parse_registration_json(content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON object of a registration request (RFC 7591 §3.1); anything else is ``invalid_client_metadata``."""
    if _media_type(content_type) != "application/json":
        raise InvalidClientMetadata("the body must be application/json")
    try:
        # RFC 8259 §8.1: UTF-8 only (json.loads would also take UTF-16/32 bytes and a byte order mark).
        raw = bounded_json.loads(body.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_not_json)
    except bounded_json.TooDeep as exc:  # a 64 KiB body could nest 65536 levels: refused before parsing
        raise InvalidClientMetadata(f"the body is nested deeper than {exc.limit} levels") from None
    except ValueError:  # malformed, not UTF-8, a repeated member, NaN/Infinity, an integer past the digit limit
        raise InvalidClientMetadata("the body is not a JSON object without repeated members") from None
    if not isinstance(raw, dict):
        raise InvalidClientMetadata("the body must be a JSON object")
    return raw


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 §4: names SHOULD be unique; a repeated one is ambiguous, so it is refused, not resolved.
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("repeated member")
    return members


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # RFC 8259 §6: NaN and Infinity are not permitted


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidRegistrationToken("send the token as Authorization: Bearer")
    return value.strip()

