"""Signing in through an identity provider on Deputy's pages (issue 14; OpenID Connect Core 1.0 §3.1).

**Start** (``POST /login/start/NAME``, a button of the login page; never a GET, so no other site can start a
sign-in in the browser: RFC 9700 §4.7.1 login CSRF): the form's CSRF token is checked
(:mod:`deputy.web.csrf`), the relying party (:mod:`deputy.federation.relying_party`) makes the authentication
request, and the sign-in it starts waits server-side (:mod:`deputy.storage.federated_signins`) bound to this
browser by a random cookie, with the pending authorization request it continues. ``prompt`` and ``max_age`` of the
MCP client's authorization request are sent on (Core §3.1.2.1). With one provider and no local users,
``/authorize`` starts here at once (:meth:`FederatedPages.begin`). An approval page's sign-in
(:mod:`deputy.web.approvals`) offers the same buttons, and its sign-in returns to that approval page.

**Callback** (``GET /login/callback/NAME``, the redirect URI registered at the provider), refused in this order:
a repeated parameter (RFC 6749 §3.1); a ``state`` not waiting (unknown, used or expired) or started by another
browser (RFC 6749 §10.12) — the waiting sign-in is taken, i.e. spent, before anything else is read; a sign-in
started with another provider than the path names (RFC 9700 §4.4.2, mix-up: one redirect URI per provider); then
the relying party's checks (RFC 9207 ``iss``, ``error``, the ID token, admission); a disabled user. Each ends on a
page naming the provider and the reason, writes ``signin.failed`` (``reason``, ``idp``; never a code or token) and
signs nobody in. Success writes ``signin.succeeded``, starts the login session as a password sign-in does
(:meth:`deputy.web.sign_in.SignIn.start_session`) and continues to Deputy's consent page (or the approval page).

**Throttle** (per client address, an IPv6 peer by its /64: :func:`deputy.rate_limit.client_key`), made so that
it can never be turned against someone else's sign-in: any page on the web reaches these URLs from the browser of
whoever opens it (thirty ``<img src=".../login/callback/NAME?state=x">`` are thirty requests from the company's
address), and behind a reverse proxy not named in ``trusted_proxies`` (:mod:`deputy.forwarded_client`) every
client has the proxy's address.

- *A callback carrying its browser's binding is always heard*: one whose ``state`` names a sign-in waiting for the
  cookie it carries is that browser's own answer, and nothing else sent from its address (refusals, starts) stops
  it. Its refusals are recorded and spend no budget: each waiting sign-in is taken once, so they are bounded by the
  starts.
- *Unbound refusals* (a callback that is no sign-in of its browser: unknown, used, expired or another browser's
  ``state``, or refused before a ``state`` is looked up; and a refused start) are counted in a sliding minute
  (``[limits] signin_failures_per_minute``). Past it such a refusal is answered 429 with ``Retry-After`` and writes
  no record: forged answers cost the audit log at most the limit per address per minute. A callback without a
  binding cookie (what an ``<img>`` elsewhere sends: the cookie is SameSite=Lax) cannot be anyone's answer, so it is
  counted, and past the limit refused, before anything is read; one with a cookie is looked up first (one
  statement: the price of never refusing a real answer) and counted the moment it is found to be no sign-in of its
  browser. This budget stops nothing but other unbound refusals.
- *Starts* (each a waiting row, and the code exchange and records its callback may cost) are counted per address
  (``signin_starts_per_minute``); past it a start is 429, unrecorded. Refusals never spend it. Cross-site, ``<img
  src=".../authorize?...">`` would (with one provider and no local users ``/authorize`` starts at once), so a start
  the browser marks as no page of its own (Fetch Metadata: ``Sec-Fetch-Dest`` other than ``document`` or
  ``Sec-Fetch-Mode`` other than ``navigate``: an image, script, frame or fetch; :mod:`deputy.web.fetch_metadata`) is
  refused before it counts (``not_a_page``, an unbound refusal; ``/authorize`` itself refuses such a request first,
  before it stores a pending request: :mod:`deputy.oauth.authorize`). What can still spend it is a navigation (a
  window that visibly goes to the provider) or a client sending no such header: behind a reverse proxy not named in
  ``trusted_proxies``, anyone, as with registration. Counting per browser instead was weighed and not taken: a
  client that presents a new cookie at each start is a new browser each time, so only a count per address bounds
  the rows of a direct flood.

Each count is made in one step with its check (no ``await`` between), so requests sent all at once meet a limit
as they do one by one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from deputy.config_identity_providers import IdentityProvider
from deputy.federation.errors import IdTokenRefused, NotAdmitted, ProviderUnavailable, SignInFailed, shown
from deputy.federation.relying_party import PENDING_TTL, PendingSignIn, RelyingParty
from deputy.handles import new_handle
from deputy.limits import worker_share
from deputy.page_paths import APPROVAL_PAGE, CONNECT_PAGE, CONNECTIONS_PAGE
from deputy.rate_limit import SlidingWindowLimiter, client_key
from deputy.services import Services
from deputy.storage.federated_signins import FederatedSignIns
from deputy.storage.federated_users import ProfileRefused
from deputy.storage.users import UserDisabled
from deputy.web.fetch_metadata import fetched_as_page
from deputy.web.pages import protect, render
from deputy.web.sign_in import MIN_PRE_SESSION, SignIn

log = logging.getLogger(__name__)
CALLBACK_PATH = "/login/callback/"
START_PATH = "/login/start/"
MAX_CALLBACK_PARAMETERS = 16
REFUSED_TOO_OFTEN = "Too many sign-ins were refused from here; wait a little and try again."


class Refused(Exception):
    """A sign-in refused by the pages themselves (not by the relying party): a reason code, status and text."""

    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.detail = detail


class FederatedPages:
    def __init__(self, services: Services, sign_in: SignIn, rp: RelyingParty | None = None) -> None:
        self.services = services
        self.settings = services.settings
        self.sign_in = sign_in
        self.cookies = sign_in.cookies
        self.rp = rp or RelyingParty(self.settings.identity_providers, self.settings.clock_leeway)
        self.waiting = FederatedSignIns(services.database.engine)
        limits = self.settings.limits
        workers = self.settings.workers  # each worker counts what it serves: its share of the whole Deputy's limit
        self.failures = SlidingWindowLimiter(worker_share(limits.signin_failures_per_minute, workers))  # unbound
        self.starts = SlidingWindowLimiter(worker_share(limits.signin_starts_per_minute, workers))

    @property
    def providers(self) -> tuple[IdentityProvider, ...]:
        return self.settings.identity_providers

    async def warm_up(self) -> None:
        """At start, fetch each provider's discovery document once, in the background: a provider that is down is a
        warning, never a failed start (each sign-in through it tries again)."""
        async def one(provider: IdentityProvider) -> None:
            try:
                await self.rp.discovery.metadata(provider)
            except ProviderUnavailable as exc:
                log.warning("identity provider %s unusable at start (%s): %s; tried again at each sign-in",
                            provider.name, exc.reason, exc.detail)
        await asyncio.gather(*(one(provider) for provider in self.providers))

    # -- start ------------------------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        """``POST /login/start/NAME``: a login page's button. Refusals before :meth:`begin` are unbound ones."""
        name = request.path_params["name"]
        form = await self.sign_in.read_form(request)
        if name not in self.rp.providers:
            return await self._failed(request, name, Refused("unknown_provider", 404, "no such identity provider"))
        if not self.sign_in.csrf_ok(request, form, "login"):
            return await self._failed(request, name, Refused("csrf", 403, "the form's CSRF token is missing or "
                                                                          "wrong; go back and start again"))
        approval_id = str(form.get("approval_id", ""))
        if approval_id and "request_id" not in form:  # the sign-in of an approval page: back there after
            return await self.begin(request, name, {"approval_id": approval_id}, {})
        connect = str(form.get("connect", ""))
        if connect and "request_id" not in form:  # the sign-in of a connect or connections page: back there after
            return await self.begin(request, name, {"connect": connect}, {})
        request_id = str(form.get("request_id", ""))
        params = await self.services.sessions.load_request(request_id)
        if params is None:
            return await self._failed(request, name, Refused("request_expired", 400, "this sign-in request has "
                                                                                     "expired; start again"))
        return await self.begin(request, name, {"request_id": request_id}, params)

    async def begin(self, request: Request, name: str, then: dict[str, str], params: dict[str, Any]) -> Response:
        """Send the browser to provider ``name`` to sign in, then on to ``then``: the pending authorization request
        (``request_id``, whose ``params`` may ask for ``prompt``/``max_age``) or an approval page (``approval_id``).
        Counted against its address's starts unless the browser says it is no page (see the module's docstring)."""
        if not fetched_as_page(request):
            return await self._failed(request, name, Refused("not_a_page", 403, "a sign-in starts in a page of its "
                                                                                 "own, never in an image, a frame or "
                                                                                 "a script"))
        if (wait := self.starts.admit(client_key(request))) is not None:  # checked and counted at once
            return _too_many(wait, "Too many sign-ins were started from here; wait a little and try again.")
        try:
            url, pending = await self.rp.start(name, prompt=params.get("prompt"), max_age=params.get("max_age"))
        except ValueError as exc:  # /authorize validated both; kept as a refusal, never a 500
            return await self._failed(request, name, Refused("bad_request", 400, str(exc)))
        except SignInFailed as exc:
            return await self._failed(request, name, exc)
        browser = self._browser(request) or new_handle()
        kept = {"nonce": pending.nonce, "code_verifier": pending.code_verifier, "created_at": pending.created_at,
                "max_age": pending.max_age, **then}
        await self.waiting.save(pending.state, name, browser, kept, PENDING_TTL)
        response = protect(RedirectResponse(url, status_code=303))
        self.cookies.set(response, self.cookies.signin, browser, PENDING_TTL)
        return response

    # -- callback ---------------------------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        """``GET /login/callback/NAME``: the provider's authorization response (RFC 6749 §4.1.2)."""
        browser = self._browser(request)
        # No binding cookie: no sign-in of this browser's whatever it carries, so a refusal, counted before it is read.
        if browser is None and (wait := self.failures.admit(client_key(request))) is not None:
            return _too_many(wait, REFUSED_TOO_OFTEN)
        name = request.path_params["name"]
        try:
            if name not in self.rp.providers:
                raise Refused("unknown_provider", 404, "no such identity provider")
            query = self._parameters(request)
            state = query.get("state")
            if not state:
                raise Refused("state_missing", 400, "the response carries no state")
            waiting = await self.waiting.take(state, browser)
            if waiting == "foreign":
                raise Refused("state_foreign", 400, "this response belongs to a sign-in another browser started")
            if waiting == "unknown":
                raise Refused("state_unknown", 400, "this sign-in is unknown, used already, or expired; start again")
        except Refused as exc:  # unbound: counted now unless it was before it was read
            return await self._failed(request, name, exc, count=browser is not None)
        # This browser's own sign-in, taken: heard to the end whatever else its address sent, and never counted.
        try:
            if waiting.idp != name:
                raise Refused("wrong_callback", 400, f"this sign-in was sent to {waiting.idp}, but the answer came "
                                                     f"back as {name}'s (mix-up refused)")
            kept = waiting.kept
            pending = PendingSignIn(name, state, kept["nonce"], kept["code_verifier"], float(kept["created_at"]),
                                    kept["max_age"])
            identity = await self.rp.finish(pending, query)
            user = await self.services.users.upsert_federated(
                name, identity.issuer, identity.subject, identity.username, identity.email, identity.name,
                identity.groups, identity.extra_claims)
        except UserDisabled:
            return await self._failed(request, name, Refused("user_disabled", 403, "this user is disabled here"),
                                      count=False)
        except ProfileRefused as exc:
            return await self._failed(request, name, Refused("profile_refused", 403, shown(exc.reason)), count=False)
        except (Refused, SignInFailed) as exc:
            return await self._failed(request, name, exc, count=False)
        await self.services.record("signin.succeeded", user=user.user_id, username=user.username, idp=name,
                                   method="oidc")
        approval_id = kept.get("approval_id")
        connect = kept.get("connect")
        if approval_id is not None:  # one path segment, whatever the form said: never another page or host
            target = APPROVAL_PAGE + quote(str(approval_id), safe="")
        elif connect is not None:
            # The connect page of a server that has one, else her connections page: the form's value picks one of
            # Deputy's own pages, never a path of its own ("..", "a/b") or another site.
            servers = self.services.settings.servers
            known = connect in servers and servers[str(connect)].credentials == "oauth"
            target = CONNECT_PAGE + quote(str(connect), safe="") if known else CONNECTIONS_PAGE
        else:
            target = f"/authorize/consent?{urlencode({'request_id': kept.get('request_id', '')})}"
        response = protect(RedirectResponse(target, 303))
        session_id = await self.sign_in.start_session(request, response, user)
        if approval_id is None and connect is None:
            await self.services.sessions.mark_signed_in(str(kept.get("request_id", "")), session_id)
        return response

    def _parameters(self, request: Request) -> dict[str, str]:
        items = request.query_params.multi_items()
        if len(items) > MAX_CALLBACK_PARAMETERS:
            raise Refused("too_many_parameters", 400, "the response carries too many parameters")
        seen: dict[str, str] = {}
        for key, value in items:
            if key in seen:  # RFC 6749 §3.1: never more than once; which one would count is the attack
                raise Refused("repeated_parameter", 400, f"the response repeats {shown(key)!r}")
            seen[key] = value
        return seen

    # -- failure ----------------------------------------------------------------------------------

    def _browser(self, request: Request) -> str | None:
        """This browser's binding cookie, when it is long enough to be one Deputy gave (a sign-in is bound to it)."""
        value = request.cookies.get(self.cookies.signin)
        return value if value and len(value) >= MIN_PRE_SESSION else None

    async def _failed(self, request: Request, name: str, exc: Refused | SignInFailed, *,
                      count: bool = True) -> Response:
        """The refusal's page and ``signin.failed`` record. ``count``: an unbound refusal, not yet counted; past its
        address's limit it is 429 instead, unrecorded (and not logged)."""
        if count and (wait := self.failures.admit(client_key(request))) is not None:  # checked and counted at once
            return _too_many(wait, REFUSED_TOO_OFTEN)
        provider = self.rp.providers.get(name)
        idp = provider.name if provider is not None else shown(name)[:64]
        title = provider.title if provider is not None else idp
        status = exc.status if isinstance(exc, Refused) else _status(exc)
        fields: dict[str, Any] = {"reason": exc.reason, "idp": idp}
        error = getattr(exc, "error", None)
        if error is not None:
            fields["error"] = error
        if isinstance(exc, ProviderUnavailable):
            # Start-up never waits for a provider; each use tries again (deputy.federation.discovery).
            log.warning("identity provider %s unusable (%s): %s", idp, exc.reason, exc.detail)
        await self.services.record("signin.failed", **fields)
        return render("error.html", status=status, title=f"Sign-in through {title} failed", error=exc.reason,
                      description=exc.detail)


def _too_many(wait: float, description: str) -> Response:
    # No record: past the limit a flood costs the audit log nothing (the limit's records before it say what happened).
    response = render("error.html", status=429, title="Too many sign-in attempts", error="too_many_attempts",
                      description=description)
    response.headers["Retry-After"] = SlidingWindowLimiter.retry_after(wait)
    return response


def _status(exc: SignInFailed) -> int:
    if isinstance(exc, ProviderUnavailable):
        return 502  # the provider, an upstream of this sign-in, failed
    if isinstance(exc, IdTokenRefused | NotAdmitted):
        return 403
    return 403 if getattr(exc, "error", None) is not None else 400

