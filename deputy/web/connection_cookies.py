"""The two cookies of the connection pages: the browser a connection was started in, and a one-time notice.

**Browser binding** (RFC 6749 §10.12, RFC 9700 §4.7.1): a connection started at ``POST /connect/NAME`` waits
server-side bound to the user *and* to a random value this browser holds in a cookie, exactly as a federated
sign-in is bound to its browser (:mod:`deputy.web.federated_pages`: the same random handle, kept while it is long
enough to be one of ours, so two connections started in one browser both finish). The cookie lives only under
``/connect`` (where the callback arrives), HttpOnly, SameSite=Lax (the callback is a top-level GET navigation from
the upstream's site, which Lax lets through), Secure on https; a path other than ``/`` rules out the ``__Host-``
prefix, so on https it is ``__Secure-`` (RFC 6265bis §4.1.3.1).

**Notice**: after post/redirect/get, the connections page says in one line what just happened ("connected to
X"). The redirect carries no parameter for it (a link could then show a false notice, and nothing from a query
ever picks the target); a short-lived cookie under ``/connections`` names the event and the server, the page shows
it only for a server that is configured (its title from the configuration, never the cookie's text) and clears it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from deputy.handles import new_handle
from deputy.page_paths import CONNECT_PAGE, CONNECTIONS_PAGE
from deputy.web.sign_in import MIN_PRE_SESSION

CONNECT_PATH = CONNECT_PAGE.rstrip("/")  # "/connect": the connect pages and the callback below it
NOTICE_TTL = 60  # seconds: long enough for the redirect to be followed, not to greet a later visit
NOTICES = ("connected", "disconnected", "not_connected")


class ConnectionCookies:
    def __init__(self, secure: bool, flow_ttl: int) -> None:
        self.secure = secure
        self.flow_ttl = flow_ttl
        prefix = "__Secure-" if secure else ""
        self.browser = f"{prefix}deputy_connect"
        self.notice = f"{prefix}deputy_notice"

    def browser_of(self, request: Request) -> str | None:
        """This browser's binding value, when it holds one of ours."""
        value = request.cookies.get(self.browser)
        return value if value and len(value) >= MIN_PRE_SESSION else None

    def bind_browser(self, request: Request) -> str:
        """The value to bind a new connection to: this browser's, or a fresh random one (:meth:`keep_browser`)."""
        return self.browser_of(request) or new_handle()

    def keep_browser(self, response: Response, value: str) -> None:
        # As long as the connection may take (flow_ttl), renewed at each start.
        response.set_cookie(self.browser, value, max_age=self.flow_ttl, path=CONNECT_PATH, secure=self.secure,
                            httponly=True, samesite="lax")

    def set_notice(self, response: Response, event: str, server: str) -> None:
        response.set_cookie(self.notice, f"{event}.{server}", max_age=NOTICE_TTL, path=CONNECTIONS_PAGE,
                            secure=self.secure, httponly=True, samesite="lax")

    def notice_of(self, request: Request) -> tuple[str, str] | None:
        """The notice this browser holds: (event, server name); None without one (or a malformed one)."""
        event, _, server = request.cookies.get(self.notice, "").partition(".")
        return (event, server) if event in NOTICES and server else None

    def clear_notice(self, request: Request, response: Response) -> None:
        if self.notice in request.cookies:  # shown once
            response.delete_cookie(self.notice, path=CONNECTIONS_PAGE, secure=self.secure, httponly=True,
                                   samesite="lax")
