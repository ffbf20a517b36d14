"""Signing a person in on Deputy's own pages, and the CSRF checks of their forms.

One instance serves every page that signs people in (the authorization flow and the
approval pages), so a password guesser meets one back-off, not one per page. The back-off
is kept per client address *and* user name (:class:`~deputy.rate_limit.FailureBackoff`):
guessing slows the guesser, never locks the name's owner out.

A signed-in person holds a login session (database-backed, so any replica knows it) in
an HttpOnly cookie. Signing in always starts a new session and ends the one the browser
held before, so a session id known before sign-in is worth nothing after it (no session
fixation, OWASP Session Management). Forms carry a token bound to the session (or, on
the sign-in form, to a random pre-session cookie), to the form's purpose
(:mod:`deputy.web.csrf`) and, on the consent form, to the pending authorization request it
answers; a POST from a foreign ``Origin`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from deputy.handles import new_handle
from deputy.limits import worker_share
from deputy.rate_limit import FailureBackoff, SlidingWindowLimiter, client_key
from deputy.services import Services
from deputy.storage.sessions import LoginSession
from deputy.storage.users import User
from deputy.web.csrf import CsrfTokens, Purpose, same_origin
from deputy.web.pages import CookieNames

PRE_SESSION_TTL = 600
MIN_PRE_SESSION = 32
MAX_FORM_FIELDS = 32


@dataclass(frozen=True, slots=True)
class SignInRefused:
    """A failed attempt: the status and message for the page, and Retry-After when throttled."""

    status: int
    message: str
    retry_after: str | None = None


FREE_FAILED_SIGN_INS = 5  # per address and user name, the whole Deputy's, before the back-off starts


class SignIn:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.cookies = CookieNames(services.settings.secure_cookies)
        # Counted in this process only: with N workers each lets its share of the free failures through.
        self.failed_logins = FailureBackoff(free=worker_share(FREE_FAILED_SIGN_INS, services.settings.workers))
        self.tokens = CsrfTokens.from_data_dir(services.settings.data_dir)

    async def attempt(self, request: Request, form: FormData) -> User | SignInRefused:
        """The user the form's ``username`` and ``password`` name, or why not."""
        if not self.services.settings.local_users:  # local_users = false: only identity providers sign people in
            return SignInRefused(403, "Password sign-in is off here; sign in with your organisation's identity "
                                      "provider.")
        username = str(form.get("username", ""))
        address = client_key(request)
        name = username.lower()  # one budget whatever the case the guesser types
        wait = self.failed_logins.wait(address, name)
        if wait is not None:
            return SignInRefused(429, "Too many failed sign-ins for this user from here; wait a little and try "
                                      "again.", SlidingWindowLimiter.retry_after(wait))
        # Counted as failed before the password is checked (no await between the check and the count): guesses
        # sent at once would otherwise all pass the check above before the first was counted. A right one clears it.
        self.failed_logins.failed(address, name)
        user = await self.services.users.authenticate(username, str(form.get("password", "")))
        if user is None:
            return SignInRefused(401, "Wrong username or password.")
        self.failed_logins.succeeded(address, name)
        return user

    async def start_session(self, request: Request, response: Response, user: User) -> str:
        """A new session for ``user`` (its id); the one this browser held before ends, and its pre-session cookie
        changes."""
        previous = request.cookies.get(self.cookies.session)
        if previous:
            await self.services.sessions.end(previous)
        ttl = self.services.settings.login_session_ttl
        session_id = await self.services.sessions.start(user.user_id, ttl)
        self.cookies.set(response, self.cookies.session, session_id, ttl)
        self.cookies.set(response, self.cookies.csrf, new_handle(), PRE_SESSION_TTL)
        return session_id

    async def session(self, request: Request) -> LoginSession | None:
        session_id = request.cookies.get(self.cookies.session)
        return await self.services.sessions.find(session_id) if session_id else None

    async def read_form(self, request: Request) -> FormData:
        return await request.form(max_fields=MAX_FORM_FIELDS)

    def csrf_token(self, request: Request, purpose: Purpose, bound_to: str = "") -> tuple[str, str | None]:
        """The token for a form, and a new pre-session cookie value to send (:meth:`set_pre_session`) or None.

        A ``login`` form is bound to the pre-session cookie; every other form to the session cookie,
        so call it for those only once :meth:`session` found the session. ``bound_to`` (e.g. the id of
        the pending authorization request the form answers) binds a session form to that too."""
        if purpose != "login":
            return self.tokens.token(purpose, _binding(request.cookies.get(self.cookies.session, ""), bound_to)), None
        existing = request.cookies.get(self.cookies.csrf)
        if existing and len(existing) >= MIN_PRE_SESSION:
            return self.tokens.token(purpose, existing), None
        fresh = new_handle()
        return self.tokens.token(purpose, fresh), fresh

    def set_pre_session(self, response: Response, value: str | None) -> None:
        if value is not None:
            self.cookies.set(response, self.cookies.csrf, value, PRE_SESSION_TTL)

    def csrf_ok(self, request: Request, form: FormData, purpose: Purpose, bound_to: str = "") -> bool:
        """Whether a POSTed form comes from Deputy's own page, rendered for this browser, for this purpose
        (and, with ``bound_to``, for that very request: see :meth:`csrf_token`)."""
        if not same_origin(request.headers.get("origin"), self.services.settings.public_url):
            return False
        cookie = self.cookies.csrf if purpose == "login" else self.cookies.session
        binding = request.cookies.get(cookie)
        if purpose == "login" and binding is not None and len(binding) < MIN_PRE_SESSION:
            return False
        if purpose != "login" and binding:
            binding = _binding(binding, bound_to)
        return self.tokens.verify(purpose, binding, str(form.get("csrf_token", "")))


def _binding(session_id: str, bound_to: str) -> str:
    # Session ids are url-safe handles, so the NUL cannot shift a boundary between the two parts.
    return f"{session_id}\x00{bound_to}" if session_id and bound_to else session_id
