"""What a person reads, and the status she gets, when connecting her account at an upstream failed.

One place maps the closed set of :data:`deputy.connections.errors.Problem` reasons to a page: a sentence for
people, the reason's code, and the service's ``detail`` (which never holds a token, code, secret or ``state``, and
whose upstream text is already cut to printable ASCII). Jinja escapes all of it; nothing here is a URL to follow.

Statuses: a callback that is not this browser's or was used (RFC 6749 §10.12) and an authorization server that
said no (RFC 6749 §4.1.2.1) are the request's fault, 400; Deputy's vault key not opening a sealed token is
Deputy's own fault, 500; everything else is the upstream or its authorization server failing or answering what
Deputy will not use, 502 (RFC 9110 §15.6.3: a gateway that got an invalid answer).
"""

from __future__ import annotations

from starlette.responses import Response

from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.page_paths import CONNECT_PAGE, CONNECTIONS_PAGE
from deputy.web.pages import render

NOT_THIS_BROWSER = "This link is not for this browser or was already used. Start connecting again from this browser."
TEXTS = {
    "discovery_failed": "Deputy could not find how {title} wants to be authorized (it is unreachable or its "
                        "answers are not usable).",
    "resource_mismatch": "{title} describes itself as another server than the one configured.",
    "issuer_mismatch": "The authorization server of {title} is not the one it claims to be.",
    "issuer_missing": "The authorization server of {title} did not say who answered.",
    "pkce_unsupported": "The authorization server of {title} does not support PKCE (S256), which Deputy requires.",
    "endpoint_refused": "The authorization server of {title} names endpoints Deputy may not use.",
    "authorization_server_not_allowed": "{title} names an authorization server it is not configured to use.",
    "fetch_refused": "{title} names an address Deputy may not fetch from.",
    "registration_failed": "Deputy could not register itself at the authorization server of {title}.",
    "no_client_authentication": "Deputy has no way to authenticate to the authorization server of {title} that it "
                                "accepts.",
    "state_unknown": NOT_THIS_BROWSER,
    "state_foreign": NOT_THIS_BROWSER,
    "wrong_callback": "This answer for {title} arrived at another server's address, so Deputy does not believe it "
                      "came from {title}'s authorization server. Start connecting again.",
    "authorization_denied": "The authorization server of {title} did not authorize the connection.",
    "code_missing": "The answer of the authorization server of {title} carries no authorization code.",
    "token_request_failed": "The authorization server of {title} refused to issue a token.",
    "token_response_invalid": "The authorization server of {title} answered with a token Deputy will not use.",
    "refresh_refused": "The authorization server of {title} refused to renew the token.",
    "upstream_unavailable": "{title} or its authorization server is unreachable.",
    "vault_key": "Deputy cannot open its token vault; tell your administrator.",
}
REQUEST_FAULTS = frozenset({"state_unknown", "state_foreign", "authorization_denied"})


def status_of(failure: ConnectionFailed) -> int:
    if failure.reason in REQUEST_FAULTS:
        return 400
    if failure.reason == "vault_key":
        return 500
    return 502


def failure_page(failure: ConnectionFailed, server: UpstreamServer | None) -> Response:
    """The page for ``failure``; ``server`` is the configured server it names, if any (its title is shown)."""
    title = server.title if server is not None else "The server"
    text = TEXTS.get(failure.reason, "Connecting to {title} failed.").format(title=title)
    if failure.reason == "authorization_denied" and failure.error is not None:
        text += f" It answered {failure.error!r}."  # the upstream's error code, printable ASCII (errors.shown)
    retry = CONNECT_PAGE + server.name if server is not None else None
    return render("connect_error.html", status=status_of(failure), title="Connecting failed", heading=text,
                  error=failure.reason, detail=failure.detail, retry=retry, connections=CONNECTIONS_PAGE)


def refusal_page(status: int, error: str, text: str) -> Response:
    """A refusal of the pages themselves (unknown server, a forged form, a malformed callback)."""
    return render("connect_error.html", status=status, title="Connecting failed", heading=text, error=error,
                  detail=None, retry=None, connections=CONNECTIONS_PAGE)
