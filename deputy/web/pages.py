"""Rendering of the HTML pages with the headers every page needs.

Framing is forbidden on every page (``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``, MCP Security Best Practices on consent pages;
RFC 9700 §4.16 clickjacking); no page leaks its URL to another origin (``Referrer-Policy:
same-origin``). Cookies are HttpOnly, SameSite=Lax, and
``__Host-``-prefixed and Secure on an https deployment. On a loopback ``http``
deployment they are neither: browsers reject a ``__Host-`` cookie that is not
Secure (RFC 6265bis §4.1.3.2), and clients do not send Secure cookies over http.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from deputy.web.page_text import shown_on_page

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
    finalize=shown_on_page,  # every printed value: bidi and other acting characters shown, never obeyed
)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it browsers send "Origin: null" on the pages' own form POSTs (Fetch
    # §3.2.5, serializing a request origin), and those POSTs must carry Deputy's origin to be accepted.
    # "same-origin" still sends nothing to any other origin (the redirect URI included).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _env.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def protect(response: Response) -> Response:
    """Add the page security headers to a response built elsewhere (e.g. a redirect)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


class CookieNames:
    """Cookie names and attributes for one deployment."""

    def __init__(self, secure: bool) -> None:
        self.secure = secure
        prefix = "__Host-" if secure else ""
        self.session = f"{prefix}deputy_session"
        self.csrf = f"{prefix}deputy_csrf"
        self.signin = f"{prefix}deputy_signin"  # binds a sign-in sent to an identity provider to this browser

    def set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True,
                            samesite="lax")
