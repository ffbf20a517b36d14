"""The pages where a person connects her account at an upstream with its own authorization server (issue 15).

``GET /connect/NAME`` (where the gateway's ``connect_url`` sends her): for a server configured with
``credentials = "oauth"``, Deputy's sign-in first (the same sign-in as the authorization flow and the approval
pages, :mod:`deputy.web.sign_in`; the form posts back here and returns here), then a page naming the server, the
authorization server she will be sent to when Deputy knows it, what Deputy keeps, and a Connect button.

``POST /connect/NAME`` (the button; never a GET, so no other site can start a connection in her browser: RFC 9700
§4.7.1): a CSRF token of the Connect form's own purpose, bound to her login session and to this server
(:mod:`deputy.web.csrf`; no consent or approval form's token verifies here), then
:meth:`~deputy.connections.service.Connections.start` binds the waiting connection to her and to this browser
(:mod:`deputy.web.connection_cookies`) and the browser is sent to the upstream's authorization endpoint.

``GET /connect/callback/NAME`` (server NAME's redirect URI, RFC 6749 §4.1.2; RFC 9700 §4.4.2: one per upstream, so
an answer is believed only at the callback of its flow's server) and ``GET /connect/callback`` (the shared one a
configured confidential client keeps: :mod:`deputy.connections.redirect_uris`): repeated parameters are refused
(§3.1), the rest go to :meth:`~deputy.connections.service.Connections.finish` with the callback's server, the
signed-in user and this browser's binding: a callback opened by another user, in another browser, twice, or at
another server's callback connects nobody (§10.12; ``wrong_callback``). Success is a redirect to
the fixed path ``/connections``, never to anything the query names.

``GET /connections`` lists her connections; ``POST /connections/NAME/disconnect`` (CSRF as above, with the
Disconnect form's own purpose) revokes one.
``GET /connect/client-metadata.json`` serves Deputy's client ID metadata document (OAuth Client ID Metadata
Document draft §3) when the service has one (https deployments).

Every page carries the security headers of :func:`deputy.web.pages.protect` (CSP, ``frame-ancestors 'none'``,
``Cache-Control: no-store``). Only GET is served on the GET routes: a HEAD (which Starlette would answer with the
GET handler) is 405 too, so no request without a body can spend a waiting connection.
"""

from __future__ import annotations

import time

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionSummary
from deputy.limits import worker_share
from deputy.page_paths import CONNECT_PAGE, CONNECTIONS_PAGE
from deputy.rate_limit import SlidingWindowLimiter
from deputy.services import Services
from deputy.storage.sessions import LoginSession
from deputy.web.connection_cookies import ConnectionCookies
from deputy.web.connection_failures import failure_page, refusal_page
from deputy.web.csrf import Purpose
from deputy.web.federated_pages import START_PATH
from deputy.web.pages import protect, render
from deputy.web.sign_in import SignIn, SignInRefused

# The connect and disconnect forms carry session-bound CSRF tokens of their own purposes (deputy.web.csrf), bound
# besides to the server: one for "connect ext" verifies nowhere else, and no consent or approval form's token here.
CONNECT_PURPOSE: Purpose = "connect"
DISCONNECT_PURPOSE: Purpose = "disconnect"
# A sign-in posted from /connections goes to POST /connect/<this>: no server name can start with "_" (config).
CONNECTIONS_SIGN_IN = "_connections"
MAX_CALLBACK_PARAMETERS = 16
# Each start costs a waiting row and requests to the upstream (discovery, registration): bounded per user (in this
# process), so neither a stuck button nor a script with her session floods them; other users are not slowed.
STARTS_PER_MINUTE = 30
METADATA_CACHE = "public, max-age=300"  # the document changes only with the configuration
FORGED = "The form's CSRF token is missing or wrong; reload the page and try again."
NOTICE_TEXT = {"connected": "Connected to {title}.", "disconnected": "Disconnected from {title}.",
               "not_connected": "You were not connected to {title}."}


def _when(seconds: int | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds)) if seconds is not None else None


def _get_only(request: Request) -> Response | None:
    if request.method == "GET":
        return None
    return protect(Response("Method Not Allowed", status_code=405, headers={"Allow": "GET"}))


class ConnectionPages:
    def __init__(self, services: Services, sign_in: SignIn) -> None:
        self.services = services
        self.sign_in = sign_in
        self.cookies = ConnectionCookies(sign_in.cookies.secure, services.settings.connections.flow_ttl)
        self.starts = SlidingWindowLimiter(worker_share(STARTS_PER_MINUTE, services.settings.workers))  # per worker

    # -- connecting -------------------------------------------------------------------------------

    async def connect_page(self, request: Request) -> Response:
        """``GET /connect/NAME``."""
        if (refused := _get_only(request)) is not None:
            return refused
        server = self._server(request.path_params["name"])
        if server is None:
            return self._unknown()
        session = await self.sign_in.session(request)
        if session is None:
            return self._sign_in_page(request, server)
        return await self._connect_page(request, server, session)

    async def start(self, request: Request) -> Response:
        """``POST /connect/NAME``: the Connect button, or the sign-in form shown in its place."""
        name = request.path_params["name"]
        form = await self.sign_in.read_form(request)
        if name == CONNECTIONS_SIGN_IN and "username" in form:
            return await self._signed_in(request, form, None)
        server = self._server(name)
        if server is None:
            return self._unknown()
        if "username" in form:  # the sign-in form the connect page shows a visitor who is not signed in
            return await self._signed_in(request, form, server)
        if not self.sign_in.csrf_ok(request, form, CONNECT_PURPOSE, server.name):
            return refusal_page(403, "csrf", FORGED)
        session = await self.sign_in.session(request)
        if session is None:  # the token verified against a session cookie that has since ended
            return self._sign_in_page(request, server)
        wait = self.starts.admit(session.user_id)
        if wait is not None:
            response = refusal_page(429, "too_many_attempts", "You started connecting too often in the last "
                                                              "minute; wait a little and try again.")
            response.headers["Retry-After"] = SlidingWindowLimiter.retry_after(wait)
            return response
        browser = self.cookies.bind_browser(request)
        try:
            url = await self.services.connections.start(server.name, session.user_id, browser)
        except ConnectionFailed as failure:
            return failure_page(failure, server)
        response = protect(RedirectResponse(url, 303))
        self.cookies.keep_browser(response, browser)
        return response

    async def callback(self, request: Request) -> Response:
        """``GET /connect/callback/NAME`` or ``/connect/callback``: the authorization server's answer (RFC 6749
        §4.1.2, RFC 9207, RFC 9700 §4.4.2)."""
        if (refused := _get_only(request)) is not None:
            return refused
        items = request.query_params.multi_items()
        query = dict(items)
        if len(items) > MAX_CALLBACK_PARAMETERS or len(query) != len(items):
            # RFC 6749 §3.1: no parameter more than once; which copy would count is the attack.
            return refusal_page(400, "bad_callback", "This answer repeats a parameter or carries too many.")
        session = await self.sign_in.session(request)
        try:
            name = await self.services.connections.finish(query, session.user_id if session else None,
                                                          self.cookies.browser_of(request),
                                                          request.path_params.get("name"))
        except ConnectionFailed as failure:
            return failure_page(failure, self._server(failure.server))
        response = protect(RedirectResponse(CONNECTIONS_PAGE, 303))
        self.cookies.set_notice(response, "connected", name)
        return response

    # -- her connections --------------------------------------------------------------------------

    async def connections_page(self, request: Request) -> Response:
        """``GET /connections``."""
        if (refused := _get_only(request)) is not None:
            return refused
        session = await self.sign_in.session(request)
        if session is None:
            return self._sign_in_page(request, None)
        user = await self.services.users.get(session.user_id)
        held = await self.services.connections.list(session.user_id)
        connected = {summary.server for summary in held}
        available = [(server.title, CONNECT_PAGE + name)
                     for name, server in self.services.connections.oauth_servers().items() if name not in connected]
        notice = self.cookies.notice_of(request)
        noticed = self._server(notice[1]) if notice is not None else None  # a configured server's title only
        response = render("connections.html", title="Your connections", username=user.username if user else None,
                          rows=[self._row(request, summary) for summary in held], available=available,
                          notice=NOTICE_TEXT[notice[0]].format(title=noticed.title) if notice and noticed else None)
        self.cookies.clear_notice(request, response)
        return response

    async def disconnect(self, request: Request) -> Response:
        """``POST /connections/NAME/disconnect``."""
        form = await self.sign_in.read_form(request)
        server = self._server(request.path_params["name"])
        if server is None:
            return self._unknown()
        if not self.sign_in.csrf_ok(request, form, DISCONNECT_PURPOSE, server.name):
            return refusal_page(403, "csrf", FORGED)
        session = await self.sign_in.session(request)
        if session is None:
            return self._sign_in_page(request, None)
        removed = await self.services.connections.disconnect(session.user_id, server.name, "user")
        response = protect(RedirectResponse(CONNECTIONS_PAGE, 303))
        self.cookies.set_notice(response, "disconnected" if removed else "not_connected", server.name)
        return response

    async def metadata_document(self, request: Request) -> Response:
        """``GET /connect/client-metadata.json``: public, the same for everyone, so cacheable."""
        if (refused := _get_only(request)) is not None:
            return refused
        document = self.services.connections.metadata_document()
        if document is None:
            return refusal_page(404, "not_found", "Deputy serves no client metadata document here.")
        return JSONResponse(document, headers={"Cache-Control": METADATA_CACHE, "X-Content-Type-Options": "nosniff"})

    # -- parts ------------------------------------------------------------------------------------

    def _server(self, name: str) -> UpstreamServer | None:
        return self.services.connections.oauth_servers().get(name)

    async def _connect_page(self, request: Request, server: UpstreamServer, session: LoginSession) -> Response:
        user = await self.services.users.get(session.user_id)
        existing = await self.services.connections.list(session.user_id, server.name)
        # The authorization server she will be sent to, when Deputy knows it: the configured pin, else the one
        # her earlier connection used (discovery happens when she presses Connect).
        pinned = server.oauth.authorization_server if server.oauth is not None else None
        issuer = pinned or (existing[0].issuer if existing else None)
        csrf, _ = self.sign_in.csrf_token(request, CONNECT_PURPOSE, server.name)
        return render("connect.html", title=f"Connect {server.title}", server=server.title,
                      server_name=server.name, issuer=issuer, username=user.username if user else None,
                      connection_status=existing[0].status if existing else None, action=CONNECT_PAGE + server.name,
                      csrf_token=csrf, connections=CONNECTIONS_PAGE)

    def _row(self, request: Request, summary: ConnectionSummary) -> dict[str, object]:
        server = self._server(summary.server)
        csrf, _ = self.sign_in.csrf_token(request, DISCONNECT_PURPOSE, summary.server)
        return {"title": server.title if server is not None else summary.server, "name": summary.server,
                "status": summary.status, "scope": summary.scope, "issuer": summary.issuer,
                "connected": _when(summary.created_at), "refreshed": _when(summary.refreshed_at),
                "reconnect": CONNECT_PAGE + summary.server if server is not None else None,
                "disconnect": f"{CONNECTIONS_PAGE}/{summary.server}/disconnect", "csrf_token": csrf}

    async def _signed_in(self, request: Request, form: FormData, server: UpstreamServer | None) -> Response:
        """The sign-in form: checked like every sign-in (login CSRF, back-off), then back to the page it was on."""
        if not self.sign_in.csrf_ok(request, form, "login"):
            return refusal_page(403, "csrf", FORGED)
        user = await self.sign_in.attempt(request, form)
        if isinstance(user, SignInRefused):
            response = self._sign_in_page(request, server, user.message, user.status)
            if user.retry_after is not None:
                response.headers["Retry-After"] = user.retry_after
            return response
        response = protect(RedirectResponse(CONNECT_PAGE + server.name if server else CONNECTIONS_PAGE, 303))
        await self.sign_in.start_session(request, response, user)  # a new session: no fixation
        return response

    def _sign_in_page(self, request: Request, server: UpstreamServer | None, error: str | None = None,
                      status: int = 200) -> Response:
        csrf, pre_session = self.sign_in.csrf_token(request, "login")
        local = self.services.settings.local_users
        if server is not None:
            purpose = f"Sign in to connect your account at {server.title}."
        else:
            purpose = "Sign in to see the accounts you connected."
        response = render("login.html", status=status, title="Sign in", csrf_token=csrf, request_id=None,
                          purpose=purpose, error=error, password_form=local,
                          connect=server.name if server is not None else CONNECTIONS_SIGN_IN,
                          providers=[(p.title, START_PATH + p.name) for p in self.services.settings.identity_providers],
                          action=CONNECT_PAGE + (server.name if server is not None else CONNECTIONS_SIGN_IN))
        self.sign_in.set_pre_session(response, pre_session)
        return response

    @staticmethod
    def _unknown() -> Response:
        return refusal_page(404, "unknown_server", "There is no server here whose account you can connect.")
