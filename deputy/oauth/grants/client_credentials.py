"""The client credentials grant (OAuth 2.1 §4.2; MCP extension ``io.modelcontextprotocol/oauth-client-credentials``).

An agent with its own identity — no user — gets a token for one MCP server. Only a
confidential client registered for the grant may use it (a secret or
``private_key_jwt``, checked before this runs). ``resource`` is required and must be
a server Deputy fronts (RFC 8707 §2); ``scope`` must stay within that server's
scopes and defaults to its required ones. The token's ``sub`` and ``client_id`` are
both the client. No refresh token is issued (OAuth 2.1 §4.2.3: the client can simply
ask again); a grant row is kept so the token's ``sid`` can be revoked.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from deputy.clock import now
from deputy.oauth.client_auth import confirmable
from deputy.oauth.errors import InvalidClient, UnauthorizedClient
from deputy.oauth.grants.issue import token_response
from deputy.oauth.grants.targets import granted_scope, requested_server
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientChanged, ClientNotActive


async def client_credentials(services: Services, form: Mapping[str, str], client: Client) -> Response:
    if client.is_public:
        raise UnauthorizedClient("client_credentials is only for clients that authenticate")
    server = requested_server(services.settings, form)
    scope = granted_scope(form, server)
    try:  # checked again where the grant is written: a client withdrawn since it authenticated gets nothing
        grant = await services.grants.create(client_id=client.client_id, user_id=client.client_id,
                                             resource=server.resource, scope=scope, auth_time=now(),
                                             confirm=confirmable(client))
    except ClientChanged:
        raise  # the token endpoint authenticates the client again, against its row as stored
    except ClientNotActive:
        raise InvalidClient("this client is no longer served") from None
    return await token_response(services, grant, scope, None, user_authenticated=False,
                                grant_type="client_credentials")
