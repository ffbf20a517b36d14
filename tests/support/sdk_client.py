"""Drive Deputy's whole OAuth flow with the official MCP Python SDK (v2) client.

The test suite's driver, not an example: a client to copy is `examples/sdk_client.py` (README,
"Connect a client"). This one can also deny, forge and inspect each step. Two pieces:

* `FormDriver` plays the human at the browser: it fetches the authorization URL with a
  cookie-keeping `httpx.AsyncClient`, fills in the login form, answers the consent form, follows
  every redirect by hand and stops at the redirect that leaves for the client's redirect URI.
  `parse_form`/`parse_forms` are exposed on their own so security tests can forge submissions.
* `sdk_oauth_client` / `sdk_oauth_call_tool` wire the SDK's `OAuthClientProvider` (an
  `httpx2.Auth`) into its Streamable HTTP transport, with a redirect handler that runs the
  `FormDriver` and a callback handler that hands the captured code/state/iss back to the SDK. No
  listener is bound for the redirect URI: the driver reads the `Location` header instead.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp_types import CallToolResult

__all__ = [
    "AuthorizationError",
    "AuthorizationRedirect",
    "Form",
    "FormDriver",
    "FormDriverError",
    "InMemoryTokenStorage",
    "OAuthRun",
    "free_port",
    "page_text",
    "parse_form",
    "parse_forms",
    "parse_redirect",
    "sdk_oauth_call_tool",
    "sdk_oauth_client",
]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# --------------------------------------------------------------------------------------------
# HTML forms
# --------------------------------------------------------------------------------------------


@dataclass
class Form:
    """One parsed `<form>`.

    `fields` holds what a browser would submit without a button press: every named `<input>`
    (checkboxes/radios only when checked), `<textarea>` and `<select>`. Submit controls
    (`<button>` and `<input type=submit>`) are listed in `buttons` as (name, value) pairs
    instead, since only the one pressed is sent.
    """

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    input_types: dict[str, str] = field(default_factory=dict)

    def button_values(self, name: str) -> list[str]:
        return [value for button_name, value in self.buttons if button_name == name]

    def has_password(self) -> bool:
        return "password" in self.input_types.values()

    def data(self, button: tuple[str, str] | None = None, **overrides: str) -> dict[str, str]:
        """The body a browser would post: fields, the pressed button, then `overrides`."""
        body = dict(self.fields)
        if button is not None:
            body[button[0]] = button[1]
        body.update(overrides)
        return body

    def resolve_action(self, page_url: str) -> str:
        """The absolute submission URL (an empty action means the page itself)."""
        return urljoin(page_url, self.action) if self.action else page_url


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._textarea: str | None = None
        self._textarea_text: list[str] = []
        self._select: str | None = None
        self._select_first: str | None = None
        self._select_chosen: str | None = None
        self._button: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = Form(action=a.get("action", ""), method=(a.get("method") or "get").upper())
            self.forms.append(self._form)
            return
        form = self._form
        if form is None:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text").lower()
            value = a.get("value", "")
            if kind in ("submit", "image"):
                form.buttons.append((name, value))
            elif kind in ("checkbox", "radio"):
                form.input_types.setdefault(name, kind)
                if "checked" in a:
                    form.fields[name] = value or "on"
            elif kind not in ("button", "reset", "file"):
                form.input_types[name] = kind
                form.fields[name] = value
        elif tag == "button":
            kind = a.get("type", "submit").lower()
            if kind == "submit" and name:
                self._button = {"name": name, "value": a.get("value", "")}
        elif tag == "textarea" and name:
            self._textarea, self._textarea_text = name, []
            form.input_types[name] = "textarea"
        elif tag == "select" and name:
            self._select, self._select_first, self._select_chosen = name, None, None
            form.input_types[name] = "select"
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._select_first is None:
                self._select_first = value
            if "selected" in a:
                self._select_chosen = value

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "button":
            self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        form = self._form
        if tag == "form":
            self._form = None
        elif form is None:
            return
        elif tag == "button" and self._button is not None:
            form.buttons.append((self._button["name"], self._button["value"]))
            self._button = None
        elif tag == "textarea" and self._textarea is not None:
            form.fields[self._textarea] = "".join(self._textarea_text)
            self._textarea = None
        elif tag == "select" and self._select is not None:
            chosen = self._select_chosen if self._select_chosen is not None else self._select_first
            if chosen is not None:
                form.fields[self._select] = chosen
            self._select = None


def parse_forms(html: str) -> list[Form]:
    """Every `<form>` in `html`, in document order."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def parse_form(html: str) -> Form:
    """The single `<form>` a page is expected to carry (the first, if there are several).

    Raises:
        FormDriverError: The page has no form.
    """
    forms = parse_forms(html)
    if not forms:
        raise FormDriverError(f"page has no <form>: {page_text(html)[:500]!r}")
    return forms[0]


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(html: str) -> str:
    """The visible text of an HTML page, whitespace collapsed (for error messages)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return re.sub(r"\s+", " ", unescape(" ".join(extractor.parts))).strip()


# --------------------------------------------------------------------------------------------
# Driving the authorization endpoint
# --------------------------------------------------------------------------------------------


class FormDriverError(AssertionError):
    """The browser walk did not end at the client's redirect URI."""

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


@dataclass
class AuthorizationRedirect:
    """The query of the final redirect to the client (RFC 6749 §4.1.2 / §4.1.2.1, RFC 9207)."""

    url: str
    params: dict[str, str]

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def state(self) -> str | None:
        return self.params.get("state")

    @property
    def iss(self) -> str | None:
        return self.params.get("iss")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_redirect(url: str) -> AuthorizationRedirect:
    """Split a redirect URL's query into single values (a repeated parameter is an error)."""
    raw = parse_qs(urlsplit(url).query, keep_blank_values=True)
    repeated = sorted(k for k, v in raw.items() if len(v) > 1)
    if repeated:
        raise FormDriverError(f"redirect repeats parameters {repeated}: {url}")
    return AuthorizationRedirect(url=url, params={k: v[0] for k, v in raw.items()})


class FormDriver:
    """Walks Deputy's login and consent pages like a browser would, without JavaScript.

    `client` should be a cookie-keeping `httpx.AsyncClient` (the default `httpx.AsyncClient()`
    keeps cookies); it is never asked to follow redirects. When omitted, each `authorize` call
    uses a fresh client, i.e. a browser with no session. `history` records every response seen
    during the last `authorize` call.
    """

    max_steps = 20

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        username: str,
        password: str,
        decision: str = "approve",
    ) -> None:
        self.client = client
        self.username = username
        self.password = password
        self.decision = decision
        self.history: list[httpx.Response] = []

    async def authorize(self, url: str, redirect_uri_prefix: str) -> str:
        """GET the authorization URL, submit login/consent, return the redirect to the client.

        The returned URL starts with `redirect_uri_prefix`; it may carry `code` or `error`
        (callers decide which they expected).

        Raises:
            FormDriverError: The walk ended anywhere else: an error page, a form this driver
                cannot answer, the login page coming back (credentials rejected), a redirect
                loop, or a response that is neither a redirect nor a form.
        """
        if self.client is not None:
            return await self._walk(self.client, url, redirect_uri_prefix)
        async with httpx.AsyncClient(timeout=30) as client:
            return await self._walk(client, url, redirect_uri_prefix)

    async def submit(
        self,
        client: httpx.AsyncClient,
        form: Form,
        page_url: str,
        data: Mapping[str, str],
    ) -> httpx.Response:
        """Send `data` the way `form` would, without following a redirect."""
        target = form.resolve_action(page_url)
        if form.method == "POST":
            return await client.post(target, data=dict(data), follow_redirects=False)
        return await client.get(target, params=dict(data), follow_redirects=False)

    def fill(self, form: Form) -> dict[str, str]:
        """The body for a login or consent form; raises if `form` is neither."""
        if form.has_password() or ("username" in form.input_types and "password" in form.input_types):
            return form.data(username=self.username, password=self.password)
        decisions = form.button_values("decision")
        if decisions:
            if self.decision not in decisions:
                raise FormDriverError(f"consent form offers decisions {decisions}, not {self.decision!r}")
            return form.data(("decision", self.decision))
        raise FormDriverError(f"don't know how to answer form {form!r}")

    async def _walk(self, client: httpx.AsyncClient, url: str, prefix: str) -> str:
        self.history = []
        response = await client.get(url, follow_redirects=False)
        submitted: dict[str, int] = {}
        for _ in range(self.max_steps):
            self.history.append(response)
            page_url = str(response.url)
            if response.status_code in REDIRECT_STATUSES:
                location: str | None = response.headers.get("location")
                if not location:
                    raise FormDriverError(f"{response.status_code} without Location at {page_url}", response)
                target = urljoin(page_url, location)
                if target.startswith(prefix):
                    return target
                response = await client.get(target, follow_redirects=False)
                continue
            html = response.text
            if response.status_code != 200:
                raise FormDriverError(
                    f"HTTP {response.status_code} at {page_url}: {page_text(html)[:1000]!r}", response
                )
            forms = [f for f in parse_forms(html) if f.method in ("GET", "POST")]
            if not forms:
                raise FormDriverError(f"no form on page {page_url}: {page_text(html)[:1000]!r}", response)
            form = forms[0]
            data = self.fill(form)
            kind = "login" if "password" in data else "consent"
            submitted[kind] = submitted.get(kind, 0) + 1
            if submitted[kind] > 1:
                raise FormDriverError(
                    f"{kind} form shown again at {page_url}: {page_text(html)[:1000]!r}", response
                )
            response = await self.submit(client, form, page_url, data)
        raise FormDriverError(f"gave up after {self.max_steps} steps at {response.url}", response)


# --------------------------------------------------------------------------------------------
# SDK client side
# --------------------------------------------------------------------------------------------


class InMemoryTokenStorage:
    """`mcp.client.auth.TokenStorage` kept in memory; reuse one across calls to reuse tokens."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.token_history: list[OAuthToken] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class AuthorizationError(AssertionError):
    """The authorization server redirected back with `error=` instead of a code."""

    def __init__(self, redirect: AuthorizationRedirect) -> None:
        detail = redirect.params.get("error_description")
        super().__init__(f"authorization failed: {redirect.error}" + (f" ({detail})" if detail else ""))
        self.redirect = redirect


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody is listening on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OAuthRun:
    """What happened in the browser leg(s) of one `sdk_oauth_client` session."""

    storage: InMemoryTokenStorage
    redirect_uri: str
    authorization_urls: list[str] = field(default_factory=list)
    redirects: list[AuthorizationRedirect] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _flatten(inner)]
    return [exc]


@asynccontextmanager
async def sdk_oauth_client(
    mcp_url: str,
    username: str,
    password: str,
    *,
    redirect_uri: str | None = None,
    storage: InMemoryTokenStorage | None = None,
    decision: str = "approve",
    browser: httpx.AsyncClient | None = None,
    client_metadata: OAuthClientMetadata | None = None,
    mode: Literal["legacy", "auto"] | str = "legacy",
    client_metadata_url: str | None = None,
) -> AsyncIterator[tuple[Client, OAuthRun]]:
    """A connected SDK `Client` for `mcp_url`, authorized through Deputy's OAuth flow.

    The SDK does discovery, dynamic registration, PKCE, the token exchange and refresh itself;
    this only answers its redirect/callback hooks. With `client_metadata_url` the SDK uses that URL as
    its client_id (a client ID metadata document) instead of registering, when the server supports it.
    `mode="legacy"` makes the SDK open with `initialize`; `"auto"` lets it probe `server/discover`
    first as the SDK does by default.
    A failure inside the OAuth flow is re-raised as itself (not wrapped in task-group noise)
    where it can be found.
    """
    if storage is None:
        storage = InMemoryTokenStorage()
    if redirect_uri is None and storage.client_info is not None and storage.client_info.redirect_uris:
        redirect_uri = str(storage.client_info.redirect_uris[0])  # keep matching the registration
    if redirect_uri is None:
        redirect_uri = f"http://localhost:{free_port()}/callback"
    if client_metadata is None:
        client_metadata = OAuthClientMetadata(
            client_name="Deputy SDK test client",
            redirect_uris=[redirect_uri],  # type: ignore[list-item]
            token_endpoint_auth_method="none",
        )
    run = OAuthRun(storage=storage, redirect_uri=redirect_uri)
    driver = FormDriver(browser, username, password, decision)

    async def redirect_handler(authorization_url: str) -> None:
        run.authorization_urls.append(authorization_url)
        try:
            final = await driver.authorize(authorization_url, redirect_uri)
        except BaseException as exc:
            run.errors.append(exc)
            raise
        run.redirects.append(parse_redirect(final))

    async def callback_handler() -> AuthorizationCodeResult:
        redirect = run.redirects[-1]
        if redirect.error is not None or not redirect.code:
            exc = AuthorizationError(redirect)
            run.errors.append(exc)
            raise exc
        return AuthorizationCodeResult(code=redirect.code, state=redirect.state, iss=redirect.iss)

    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=client_metadata,
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        client_metadata_url=client_metadata_url,
    )
    errors_before_body = 0
    try:
        async with (
            httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
            Client(streamable_http_client(mcp_url, http_client=http), mode=mode) as client,
        ):
            errors_before_body = len(run.errors)
            yield client, run
    except Exception as exc:
        # An exception raised inside the httpx2 auth flow surfaces through the transport's task
        # group, or only as a logged failure plus a generic JSON-RPC error; prefer the cause.
        for leaf in _flatten(exc):
            if any(leaf is err for err in run.errors):
                raise leaf from exc
        if len(run.errors) > errors_before_body:
            raise run.errors[-1] from exc
        raise


async def sdk_oauth_call_tool(
    mcp_url: str,
    username: str,
    password: str,
    tool: str,
    arguments: dict[str, Any] | None,
    *,
    redirect_uri: str | None = None,
    storage: InMemoryTokenStorage | None = None,
    decision: str = "approve",
    browser: httpx.AsyncClient | None = None,
    client_metadata: OAuthClientMetadata | None = None,
    mode: Literal["legacy", "auto"] | str = "legacy",
) -> tuple[CallToolResult, InMemoryTokenStorage]:
    """Authorize with the real SDK client, call `tool` once, return its result and the storage.

    Pass the returned storage back in (with the same `redirect_uri`) to reuse the registration
    and tokens, as a restarted client would.
    """
    async with sdk_oauth_client(
        mcp_url,
        username,
        password,
        redirect_uri=redirect_uri,
        storage=storage,
        decision=decision,
        browser=browser,
        client_metadata=client_metadata,
        mode=mode,
    ) as (client, run):
        result = await client.call_tool(tool, arguments)
    return result, run.storage
