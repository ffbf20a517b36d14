"""Whether the registration policy admits a client, and with which status (RFC 7591 §3).

``[registration].mode`` decides (see :mod:`deputy.client_trust`):

- ``loopback`` — native clients whose redirect URIs are all http loopback, so a code can
  only ever reach the machine the user sits at (RFC 8252 §7.3); served at once.
- ``allowlist`` — served at once when a ``software_statement`` from a trusted publisher
  verified and itself carries the redirect URIs (RFC 7591 §2.3), or an initial access
  token was presented (RFC 7591 §3, compared in constant time), or every redirect URI's
  host is one the operator lists. Anything else is ``invalid_redirect_uri``.

  The allowlist guards where authorization codes go, so a statement admits past it
  only redirect URIs its publisher signed. The statement's values take precedence over
  the request's (RFC 7591 §3.1.1), but a field it does not contain comes from the
  unsigned request, which no one vouched for: a statement that signs a name and a
  ``software_id`` but no ``redirect_uris`` leaves the request's redirect URIs to the
  same rules as if no statement had been sent (listed hosts, or an initial access
  token). Refusing such a registration outright (``invalid_software_statement``) would
  turn away a client the allowlist admits without any statement; judging its
  unsigned redirect URIs as unsigned ones admits nothing the operator did not allow.
- ``approval`` — anyone may register; the client is ``pending`` and not served until an
  admin approves it.

An update (RFC 7592 §2.2) is judged by the same rules, except that redirect URIs the
client already had stay acceptable: an update can keep what was admitted, never widen
it past the policy. Under ``approval`` a new redirect URI sends the client back to
``pending``; a ``denied`` client stays denied.
"""

from __future__ import annotations

from dataclasses import dataclass

from deputy.client_trust import RegistrationPolicy
from deputy.config import is_loopback_http
from deputy.handles import handle_hash, same_secret
from deputy.oauth.client_metadata import ClientMetadata
from deputy.oauth.errors import InvalidClientMetadata, InvalidRedirectUri, InvalidRegistrationToken
from deputy.oauth.redirect_uris import redirect_host
from deputy.oauth.software_statements import SoftwareStatement
from deputy.storage.clients import Client


@dataclass(frozen=True, slots=True)
class Admission:
    status: str  # active | pending | denied
    admitted_by: str  # loopback | software_statement | initial_access_token | redirect_hosts | approval


def admit(policy: RegistrationPolicy, metadata: ClientMetadata, *, statement: SoftwareStatement | None = None,
          initial_access_token: str | None = None, previous: Client | None = None) -> Admission:
    if previous is not None and previous.status == "denied":
        return Admission("denied", "denied")
    known = set(previous.redirect_uris) if previous is not None else set()
    new_uris = [uri for uri in metadata.redirect_uris if uri not in known]
    if policy.mode == "loopback":
        if metadata.application_type != "native":
            raise InvalidClientMetadata("only native clients (loopback redirect URIs) may register here")
        for uri in new_uris:
            if not is_loopback_http(uri):
                raise InvalidRedirectUri(f"{uri}: only http loopback redirect URIs may register (native clients)")
        return Admission("active", "loopback")
    if policy.mode == "allowlist":
        if statement is not None and statement.vouches_for("redirect_uris"):
            return Admission("active", "software_statement")
        if initial_access_token is not None:
            if not _known_token(initial_access_token, policy.initial_access_tokens):
                raise InvalidRegistrationToken("the initial access token is not valid")
            return Admission("active", "initial_access_token")
        allowed = set(policy.allowed_redirect_hosts)
        for uri in new_uris:
            if redirect_host(uri) not in allowed:
                unsigned = ("the software statement does not carry redirect_uris, so it does not vouch for this one; "
                            if statement is not None else "")
                raise InvalidRedirectUri(
                    f"{uri}: {unsigned}this redirect host is not allowed; registering it needs a software statement "
                    "from a trusted publisher that carries it, or an initial access token")
        return Admission("active", "redirect_hosts")
    if policy.mode == "approval":
        if previous is not None and previous.status == "active" and not new_uris:
            return Admission("active", "approval")
        return Admission("pending", "approval")
    raise InvalidClientMetadata("registration is off")


def _known_token(presented: str, configured: tuple[str, ...]) -> bool:
    # Hash both sides so every comparison is of equal length, and compare with every token.
    digest = handle_hash(presented)
    matches = [same_secret(digest, handle_hash(token)) for token in configured]
    return any(matches)
