"""The authorization endpoint, login and consent (OAuth 2.1 §4.1.1-§4.1.2, RFC 9207, RFC 8707).

Order of checks follows OAuth 2.1 §4.1.2.1: while the client or its redirect URI
is in doubt, errors are shown on a page and never redirected (an open redirector
is how codes leak). Once both are known, every error goes back to the client
with ``error``, ``state`` and ``iss`` (RFC 9207 §2).

The validated request is stored server-side; the login and consent forms carry
only its opaque id and a CSRF token bound to the browser and the form
(:mod:`deputy.web.csrf`), so nothing the browser sends later can change what was
authorized.

A redirect URI on Deputy's own host is refused here too, for clients registered
before that rule (:func:`deputy.cookie_scope.redirect_shares_cookies`): the browser would
send Deputy's cookies along with the code.

The redirect URI is matched by :func:`deputy.oauth.redirect_uris.matches_registered` (exact,
but any port for a loopback IP literal, RFC 8252 §7.3) and the code is bound to the one used.

A remembered consent answers at once only when the redirect cannot be owned by just any
process on the user's machine: for a loopback or private-use-scheme redirect, a client id
proves nothing (MCP authorization: the server MUST show the redirect host; RFC 8252 §8.6),
so the person always sees a page naming the client and the host and must press Continue.
That POST carries a CSRF token bound to the session *and* this pending request, and the
request is consumed once; no GET ever issues a code for such a redirect.

A pending request is a row kept ten minutes, stored before anyone signs in, so each is bounded: ``state`` to
:data:`MAX_STATE` characters (longer is ``invalid_request`` on a page), and their number per client address and
sliding minute (``[limits] authorization_requests_per_minute``; past it a 429 page with ``Retry-After``, never a
redirect). Only a request about to be stored counts, and not one the browser fetches as no page (an image, a
frame: :mod:`deputy.web.fetch_metadata`), refused first, so a page elsewhere cannot spend its visitors' budget.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from deputy.clock import now
from deputy.cookie_scope import redirect_shares_cookies
from deputy.display_text import command_line
from deputy.federation.relying_party import MAX_AGE_LIMIT, PROMPTS
from deputy.handles import handle_hash
from deputy.limits import worker_share
from deputy.oauth import pkce
from deputy.oauth.clients import UnknownClient
from deputy.oauth.errors import (
    AccessDenied,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    TemporarilyUnavailable,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from deputy.oauth.redirect_uris import matches_registered, owned_by_any_local_process
from deputy.rate_limit import SlidingWindowLimiter, client_key
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientNotActive
from deputy.storage.sessions import LoginSession
from deputy.web.csrf import Purpose
from deputy.web.federated_pages import START_PATH, FederatedPages
from deputy.web.fetch_metadata import fetched_as_page
from deputy.web.pages import protect, render
from deputy.web.sign_in import SignIn, SignInRefused

PENDING_REQUEST_TTL = 600
MAX_STATE = 2048  # kept and echoed in every answer; RFC 6749 §4.1.1 sets no bound, clients send a few dozen
SINGLE_VALUED = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                 "code_challenge_method", "resource", "prompt", "max_age")


class AuthorizationEndpoint:
    def __init__(self, services: Services, sign_in: SignIn | None = None,
                 federated: FederatedPages | None = None) -> None:
        self.services = services
        self.settings = services.settings
        self.sign_in = sign_in or SignIn(services)
        self.federated = federated or FederatedPages(services, self.sign_in)
        # Pending requests stored per client address; each worker counts what it serves: its share of the limit.
        self.pending_requests = SlidingWindowLimiter(
            worker_share(self.settings.limits.authorization_requests_per_minute, self.settings.workers))

    # -- GET /authorize ---------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        query = request.query_params
        client_id = query.get("client_id")
        if not client_id:
            return self._error_page(InvalidRequest, "missing client_id")
        try:
            client = await self.services.registry.resolve(client_id)
        except UnknownClient as exc:
            return self._error_page(InvalidRequest, str(exc))
        if not client.is_active:
            return self._not_served(client)
        redirect_uri = query.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        # OAuth 2.1 §2.3.1 / MCP: exact string match against a registered redirect URI (any port on a
        # loopback IP literal, RFC 8252 §7.3); what was sent is what the code is bound to.
        if (redirect_uri is None or not matches_registered(redirect_uri, client.redirect_uris)
                or len(query.getlist("redirect_uri")) > 1):
            return self._error_page(InvalidRequest, "redirect_uri is missing or not registered for this client")
        cookie_problem = redirect_shares_cookies(redirect_uri, self.settings.public_url)
        if cookie_problem is not None:  # RFC 6749 §4.1.2.1: an unusable redirect URI is shown, never followed
            return self._error_page(InvalidRedirectUri, cookie_problem)
        if any(len(value) > MAX_STATE for value in query.getlist("state")):
            # Shown, never redirected: an error sent back must carry the state (RFC 6749 §4.1.2.1).
            return self._error_page(InvalidRequest, f"state is longer than {MAX_STATE} characters")
        state = query.get("state")
        try:
            params = self._validate(query.multi_items(), client)
        except OAuthError as exc:
            return self._redirect_error(redirect_uri, state, exc)
        params["redirect_uri"] = redirect_uri
        # OAuth 2.1 §4.1.3: the token request must repeat redirect_uri only if this request carried it.
        params["redirect_uri_sent"] = "redirect_uri" in query
        refused = self._admit(request)
        if refused is not None:
            return refused
        request_id = await self.services.sessions.save_request(client.client_id, params, PENDING_REQUEST_TTL)
        session = await self._session(request)
        if self._needs_sign_in(request, session, params):
            return await self._sign_in_page(request, request_id, client, params)
        assert session is not None
        return await self._consent_or_code(request, request_id, params, client, session)

    def _admit(self, request: Request) -> Response | None:
        """None when a pending request may be stored for this request's address (it is counted then), else the
        refusal page: 403 for a fetch that is no page, 429 with ``Retry-After`` past the address's budget."""
        if not fetched_as_page(request):  # before it counts: no page elsewhere spends its visitors' budget
            return self._error_page(InvalidRequest, "an authorization request opens in a page of its own, never in "
                                                    "an image, a frame or a script", status=403)
        if (wait := self.pending_requests.admit(client_key(request))) is not None:  # checked and counted at once
            response = self._error_page(TemporarilyUnavailable, "too many sign-in requests came from this address; "
                                                                "wait a little and try again", status=429)
            response.headers["Retry-After"] = SlidingWindowLimiter.retry_after(wait)
            return response
        return None

    def _validate(self, items: list[tuple[str, str]], client: Client) -> dict[str, Any]:
        seen: dict[str, list[str]] = {}
        for key, value in items:
            seen.setdefault(key, []).append(value)
        for key in SINGLE_VALUED:
            if len(seen.get(key, [])) > 1:
                # RFC 6749 §3.1: parameters MUST NOT be included more than once.
                raise InvalidRequest(f"{key} is repeated")
        one = {k: v[0] for k, v in seen.items()}
        if one.get("response_type") != "code":
            raise UnsupportedResponseType("only response_type=code is supported")
        challenge = one.get("code_challenge")
        if not challenge:
            raise InvalidRequest("code_challenge is required (PKCE, S256)")
        if one.get("code_challenge_method") != "S256":
            raise InvalidRequest("code_challenge_method must be S256")
        if not pkce.is_valid_challenge(challenge):
            raise InvalidRequest("code_challenge is not a base64url SHA-256 value")
        resource = one.get("resource")
        if not resource:
            raise InvalidTarget("resource is required: the URL of the MCP server (RFC 8707)")
        server = self.settings.server_for_resource(resource)
        if server is None:
            raise InvalidTarget("resource is not a server this authorization server protects")
        requested = one.get("scope", "").split()
        scopes = set(requested) if requested else set(server.required_scopes)
        unknown = scopes - set(server.scopes)
        if unknown:
            raise InvalidScope(f"unknown scope for {server.name}: {' '.join(sorted(unknown))}")
        if "authorization_code" not in client.grant_types:
            raise UnauthorizedClient("this client may not use the authorization code grant")
        validated: dict[str, Any] = {
            "client_id": client.client_id,
            "state": one.get("state"),
            "code_challenge": challenge,
            "resource": server.resource,
            "server": server.name,
            "scope": " ".join(sorted(scopes)),
        }
        # OpenID Connect Core §3.1.2.1: a fresh sign-in asked for, here and at the identity provider.
        prompt = one.get("prompt")
        if prompt is not None:
            if not prompt or not set(prompt.split(" ")) <= PROMPTS:
                raise InvalidRequest("prompt must be space-separated values of none, login, consent, select_account")
            validated["prompt"] = " ".join(dict.fromkeys(prompt.split(" ")))  # each value once: kept, sent on
        max_age = one.get("max_age")
        if max_age is not None:
            if not max_age.isascii() or not max_age.isdigit() or int(max_age) > MAX_AGE_LIMIT:
                raise InvalidRequest("max_age must be a number of seconds")
            validated["max_age"] = int(max_age)
        return validated

    def _needs_sign_in(self, request: Request, session: LoginSession | None, params: dict[str, Any]) -> bool:
        """No session, or the client asked for a sign-in more recent than this one (prompt=login, max_age) and
        this session was not started for this very request (:meth:`SessionRepository.mark_signed_in`)."""
        if session is None:
            return True
        max_age = params.get("max_age")
        if "login" not in params.get("prompt", "").split() and (max_age is None or now() - session.auth_time < max_age):
            return False
        session_id = request.cookies.get(self.sign_in.cookies.session, "")
        return params.get("signed_in_session") != handle_hash(session_id)

    # -- login ------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        form = await self.sign_in.read_form(request)
        pending = await self._pending_from_form(request, form, "login")
        if isinstance(pending, Response):
            return pending
        request_id, params, client = pending
        user = await self.sign_in.attempt(request, form)
        if isinstance(user, SignInRefused):
            response = self._login_page(request, request_id, client, params, status=user.status, error=user.message)
            if user.retry_after is not None:
                response.headers["Retry-After"] = user.retry_after
            return response
        response = protect(RedirectResponse(f"/authorize/consent?{urlencode({'request_id': request_id})}", 303))
        session_id = await self.sign_in.start_session(request, response, user)
        await self.services.sessions.mark_signed_in(request_id, session_id)
        return response

    # -- consent ----------------------------------------------------------------------------------

    async def consent_page(self, request: Request) -> Response:
        request_id = request.query_params.get("request_id", "")
        params = await self.services.sessions.load_request(request_id)
        client = await self.services.registry.find(params["client_id"]) if params else None
        if params is None or client is None or not client.is_active:
            return self._error_page(InvalidRequest, "this sign-in request has expired; start again")
        session = await self._session(request)
        if self._needs_sign_in(request, session, params):
            return await self._sign_in_page(request, request_id, client, params)
        assert session is not None
        return await self._consent_or_code(request, request_id, params, client, session)

    async def consent(self, request: Request) -> Response:
        form = await self.sign_in.read_form(request)
        session = await self._session(request)
        pending = await self._pending_from_form(request, form, "consent")
        if isinstance(pending, Response):
            return pending
        request_id, params, client = pending
        if session is None:  # the token verified against a session cookie that has since expired
            return self._login_page(request, request_id, client, params)
        if not await self.services.sessions.consume_request(request_id):
            return self._error_page(InvalidRequest, "this sign-in request was already answered")
        if form.get("decision") != "approve":
            return self._redirect_error(params["redirect_uri"], params["state"],
                                        AccessDenied("the user denied the request"))
        scopes = set(params["scope"].split())
        # On the Continue page of a remembered consent nothing new is granted, so nothing is recorded.
        if not await self.services.consents.covers(session.user_id, client.client_id, params["resource"], scopes):
            await self.services.consents.grant(session.user_id, client.client_id, params["resource"], scopes)
            await self.services.record("consent.granted", user=session.user_id, client_id=client.client_id,
                                       resource=params["resource"], scope=" ".join(sorted(scopes)))
        return await self._issue_code(params, session)

    async def _consent_or_code(
        self, request: Request, request_id: str, params: dict[str, Any], client: Client, session: LoginSession
    ) -> Response:
        scopes = set(params["scope"].split())
        remembered = await self.services.consents.covers(session.user_id, client.client_id, params["resource"],
                                                         scopes)
        local_redirect = owned_by_any_local_process(params["redirect_uri"])
        if remembered and not local_redirect:
            if not await self.services.sessions.consume_request(request_id):
                return self._error_page(InvalidRequest, "this sign-in request was already answered")
            return await self._issue_code(params, session)
        user = await self.services.users.get(session.user_id)
        redirect_host = urlsplit(params["redirect_uri"]).netloc or params["redirect_uri"]
        return self._form_page(
            request,
            "consent.html",
            request_id,
            "consent",
            title=f"Continue to {client.client_name}?" if remembered else "Allow access?",
            remembered=remembered,
            username=user.username if user else "?",
            client_name=client.client_name,
            client_id=client.client_id,
            redirect_uri=params["redirect_uri"],
            redirect_host=redirect_host,
            loopback_redirect=local_redirect,
            server_title=self.settings.servers[params["server"]].title,
            resource=params["resource"],
            scopes=sorted(scopes),
            action="/authorize/consent",
        )

    async def _issue_code(self, params: dict[str, Any], session: LoginSession) -> Response:
        try:
            code = await self.services.grants.create_with_code(
                client_id=params["client_id"],
                user_id=session.user_id,
                resource=params["resource"],
                scope=params["scope"],
                auth_time=session.auth_time,
                redirect_uri=params["redirect_uri"] if params["redirect_uri_sent"] else "",
                code_challenge=params["code_challenge"],
                code_ttl=self.settings.code_ttl,
            )
        except ClientNotActive:  # withdrawn (or held back) since this request began: no code for it
            return self._error_page(UnauthorizedClient, "this client is no longer served", status=403)
        answer = {"code": code}
        if params["state"] is not None:
            answer["state"] = params["state"]
        return self._redirect(params["redirect_uri"], answer)

    # -- shared pieces ----------------------------------------------------------------------------

    async def _pending_from_form(
        self, request: Request, form: FormData, purpose: Purpose
    ) -> tuple[str, dict[str, Any], Client] | Response:
        request_id = str(form.get("request_id", ""))
        # A consent or Continue form answers one pending request only: its token is bound to it.
        if not self.sign_in.csrf_ok(request, form, purpose, bound_to=request_id if purpose == "consent" else ""):
            return self._error_page(InvalidRequest, "the form's CSRF token is missing or wrong", status=403)
        params = await self.services.sessions.load_request(request_id)
        client = await self.services.registry.find(params["client_id"]) if params else None
        if params is None or client is None or not client.is_active:
            return self._error_page(InvalidRequest, "this sign-in request has expired; start again")
        return request_id, params, client

    async def _session(self, request: Request) -> LoginSession | None:
        return await self.sign_in.session(request)

    async def _sign_in_page(self, request: Request, request_id: str, client: Client,
                            params: dict[str, Any]) -> Response:
        """The login page; with one identity provider and no local users, that provider's sign-in at once."""
        providers = self.settings.identity_providers
        if len(providers) == 1 and not self.settings.local_users:
            return await self.federated.begin(request, providers[0].name, {"request_id": request_id}, params)
        return self._login_page(request, request_id, client, params)

    def _login_page(
        self,
        request: Request,
        request_id: str,
        client: Client,
        params: dict[str, Any],
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        return self._form_page(
            request,
            "login.html",
            request_id,
            "login",
            status=status,
            title="Sign in",
            client_name=client.client_name,
            server_title=self.settings.servers[params["server"]].title,
            error=error,
            action="/authorize/login",
            password_form=self.settings.local_users,
            providers=[(provider.title, START_PATH + provider.name) for provider in self.settings.identity_providers],
        )

    def _form_page(self, request: Request, template: str, request_id: str, purpose: Purpose, status: int = 200,
                   **context: Any) -> Response:
        """A page with a form: carries the pending request id and the CSRF token for this browser and form."""
        csrf, pre_session = self.sign_in.csrf_token(request, purpose, request_id if purpose == "consent" else "")
        response = render(template, status=status, csrf_token=csrf, request_id=request_id, **context)
        self.sign_in.set_pre_session(response, pre_session)
        return response

    def _redirect(self, redirect_uri: str, answer: dict[str, str]) -> Response:
        answer["iss"] = self.settings.issuer  # RFC 9207 §2: in every authorization response
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return protect(RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=303))

    def _redirect_error(self, redirect_uri: str, state: str | None, error: OAuthError) -> Response:
        answer = {"error": error.code, "error_description": error.description}  # OAuth 2.1 §4.1.2.1
        if state is not None:
            answer["state"] = state
        return self._redirect(redirect_uri, answer)

    def _not_served(self, client: Client) -> Response:
        if client.status == "pending":
            # The id may be a URL its author chose: the command the administrator is to run quotes it.
            return render("pending.html", status=403, title="Waiting for approval", client_name=client.client_name,
                          client_id=client.client_id,
                          approve_command=command_line("deputy", "clients", "approve", client.client_id))
        return self._error_page(UnauthorizedClient, "an administrator has refused this client", status=403)

    def _error_page(self, error: type[OAuthError], description: str, status: int = 400) -> Response:
        return render("error.html", status=status, title="Sign-in failed", error=error.code, description=description)
