"""Signing a person in on Deputy's own pages, and the CSRF token their forms carry.

One instance serves every page that signs people in (the authorization flow and the
approval pages), so a password guesser meets one budget of failures per user name, not
one per page. A signed-in person holds a login session (database-backed, so any replica
knows it) in an HttpOnly cookie; forms carry a CSRF token that must equal the one in
the CSRF cookie (double-submit), and SameSite=Lax keeps both off cross-site POSTs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from deputy.oauth.rate_limit import SlidingWindowLimiter
from deputy.secrets import same_secret
from deputy.services import Services
from deputy.storage.sessions import LoginSession
from deputy.storage.users import User
from deputy.web.pages import CookieNames

FAILED_LOGINS_PER_MINUTE = 10  # per user name, per process
CSRF_COOKIE_TTL = 600


@dataclass(frozen=True, slots=True)
class SignInRefused:
    """A failed attempt: the status and message for the page, and Retry-After when throttled."""

    status: int
    message: str
    retry_after: str | None = None


class SignIn:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.cookies = CookieNames(services.settings.secure_cookies)
        self.failed_logins = SlidingWindowLimiter(FAILED_LOGINS_PER_MINUTE)

    async def attempt(self, form: FormData) -> User | SignInRefused:
        """The user the form's ``username`` and ``password`` name, or why not."""
        username = str(form.get("username", ""))
        # Password guessing: after too many failures for a name, even the right password waits.
        wait = self.failed_logins.blocked(username.lower())
        if wait is not None:
            return SignInRefused(429, "Too many failed sign-ins for this user; try again in a minute.",
                                 SlidingWindowLimiter.retry_after(wait))
        user = await self.services.users.authenticate(username, str(form.get("password", "")))
        if user is None:
            self.failed_logins.record(username.lower())
            return SignInRefused(401, "Wrong username or password.")
        return user

    async def start_session(self, response: Response, user: User) -> None:
        ttl = self.services.settings.login_session_ttl
        session_id = await self.services.sessions.start(user.user_id, ttl)
        self.cookies.set(response, self.cookies.session, session_id, ttl)

    async def session(self, request: Request) -> LoginSession | None:
        session_id = request.cookies.get(self.cookies.session)
        return await self.services.sessions.find(session_id) if session_id else None

    def csrf_token(self, request: Request) -> tuple[str, bool]:
        """The CSRF token for a form, and whether it is new (then :meth:`set_csrf` must send its cookie)."""
        existing = request.cookies.get(self.cookies.csrf)
        if existing and len(existing) >= 32:
            return existing, False
        return secrets.token_urlsafe(32), True

    def set_csrf(self, response: Response, token: str) -> None:
        self.cookies.set(response, self.cookies.csrf, token, CSRF_COOKIE_TTL)

    def csrf_ok(self, request: Request, form: FormData) -> bool:
        cookie = request.cookies.get(self.cookies.csrf, "")
        submitted = str(form.get("csrf_token", ""))
        return bool(cookie and submitted and same_secret(cookie, submitted))
