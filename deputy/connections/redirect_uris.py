"""Which redirect URI Deputy uses toward each upstream's authorization server (RFC 9700 §4.4.2, mix-up).

Deputy is the OAuth client of many authorization servers. With one redirect URI for all of them, an authorization
server an attacker runs (upstream *evil*'s) can send the user's browser on to an honest one with Deputy's ``state``,
PKCE challenge and redirect URI; the honest server's code then arrives where *evil*'s flow waits and is posted, with
the PKCE verifier, to *evil*'s token endpoint (RFC 9700 §4.4.1). RFC 9700 §4.4.2: a client uses a distinct redirect
URI per issuer and checks that a response arrives at the one of its flow — or it gets ``iss`` (RFC 9207).

- Each upstream server ``NAME`` has its own: ``{public_url}/connect/callback/NAME`` (server names are
  ``[a-z0-9][a-z0-9_-]*``, URL-safe as they are). Registrations (RFC 7591), Deputy's client ID metadata document and
  configured public clients (``client_auth = "none"``: anyone may redeem their code) use it.
- A configured confidential client keeps the shared ``{public_url}/connect/callback`` operators registered before:
  its code is worth nothing to another server without its secret (RFC 9700 §4.4.1: the attacker must redeem it).
- A client ID metadata document is one identity at every authorization server and lists every redirect URI, so
  distinct URIs do not separate servers for it: it is used only where RFC 9207 ``iss`` is sent (:mod:`.registration`,
  :mod:`.authorization`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from deputy.config import UpstreamServer
from deputy.page_paths import CONNECT_CALLBACK


def own_callback(server: UpstreamServer) -> bool:
    """Whether ``server``'s flows come back to its own callback: all but a configured confidential client's."""
    oauth = server.oauth
    return oauth is None or oauth.client_id is None or oauth.client_auth == "none"


@dataclass(frozen=True, slots=True)
class RedirectUris:
    public_url: str  # Deputy's, without a trailing slash

    @property
    def shared(self) -> str:
        """The one callback of configured confidential clients (and of every flow before per-server callbacks)."""
        return self.public_url + CONNECT_CALLBACK

    def callback(self, name: str | None) -> str:
        """The redirect URI of the callback at ``/connect/callback/NAME``; None: the shared ``/connect/callback``."""
        return self.shared if name is None else f"{self.shared}/{name}"

    def of(self, server: UpstreamServer) -> str:
        """The redirect URI a flow toward ``server``'s authorization server uses (and registers)."""
        return self.callback(server.name) if own_callback(server) else self.shared

    def listed(self, servers: Iterable[UpstreamServer]) -> list[str]:
        """The redirect URIs of Deputy's client ID metadata document: each server's own, for those it may serve."""
        return [self.callback(server.name) for server in servers
                if server.oauth is None or server.oauth.client_id is None]
