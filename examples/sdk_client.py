"""Call a tool on an MCP server behind Deputy with the official MCP Python SDK (v2).

Start the demo in one terminal (`make demo`), then in another:

    .venv/bin/python examples/sdk_client.py                     # your browser opens: sign in as alice
    .venv/bin/python examples/sdk_client.py --password PASSWORD  # no browser: for scripts and CI

The password is the one `make demo` prints ("Sign in as alice / ..."); `--password` defaults to
$DEPUTY_DEMO_PASSWORD. Another server: pass its URL (`examples/sdk_client.py https://host/mcp/name`).
`--token-file PATH` keeps the registration and tokens between runs; without it they live in memory.

From nothing but the URL, the SDK reads the authorization server from the 401 (RFC 9728 §5),
registers this client (RFC 7591), sends you to sign in with PKCE (OAuth 2.1 §4.1, RFC 7636), gets
the code back at a loopback redirect on any free port (RFC 8252 §7.3), checks its issuer
(RFC 9207), and exchanges it for a token for this one server (RFC 8707). This file adds only what
the SDK leaves to its user: where tokens are kept, how the browser is opened, and the listener
that receives the redirect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import webbrowser
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

DEMO_URL = "http://127.0.0.1:8000/mcp/demo"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


# README: begin
async def call_add(url: str, storage: TokenStore, sign_in: SignIn) -> None:
    """Connect to `url` (signing in when the SDK asks), list its tools and call `add`."""
    async with Redirects() as redirects:  # the loopback listener that receives the sign-in's answer
        auth = OAuthClientProvider(
            server_url=url,
            client_metadata=OAuthClientMetadata(
                client_name="Deputy example client",
                redirect_uris=[AnyUrl(redirects.uri)],
                token_endpoint_auth_method="none",  # a public client: PKCE instead of a secret
            ),
            storage=storage,
            redirect_handler=lambda authorization_url: sign_in(authorization_url, redirects.uri),
            callback_handler=redirects.answer,
        )
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            tools = await client.list_tools()
            print("tools:", ", ".join(tool.name for tool in tools.tools))
            result = await client.call_tool("add", {"a": 2, "b": 3})
            print("add(2, 3) ->", result.structured_content)
# README: end


class SignInFailed(Exception):
    """The sign-in ended without an authorization code; the message says why."""


class TokenStore:
    """The SDK's `TokenStorage`: in memory, and also in a file only you can read when given one."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        saved = json.loads(path.read_text()) if path and path.exists() else {}
        self.tokens = OAuthToken.model_validate(saved["tokens"]) if saved.get("tokens") else None
        info = saved.get("client_info")
        self.client_info = OAuthClientInformationFull.model_validate(info) if info else None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self._save()

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        saved = {name: value.model_dump(mode="json") if value else None
                 for name, value in (("tokens", self.tokens), ("client_info", self.client_info))}
        # A refresh token is as good as a password: create the file readable by its owner only.
        with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            json.dump(saved, file)


class Redirects:
    """A one-shot loopback HTTP listener, on a port the OS picks, for the authorization response.

    It listens on the IPv6 loopback `[::1]`: Deputy lets a native client's loopback IP literal use any port
    (RFC 8252 §7.3), but refuses redirects to the host Deputy itself serves from (the demo's 127.0.0.1),
    since a browser would send Deputy's cookies there too. Without IPv6, `localhost` on 127.0.0.1 will do.
    """

    def __init__(self) -> None:
        self.uri = ""
        self._answer: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def __aenter__(self) -> Redirects:
        try:
            self._server = await asyncio.start_server(self._serve, "::1", 0)
            host = "[::1]"
        except OSError:  # no IPv6 on this machine
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            host = "localhost"
        self.uri = f"http://{host}:{self._server.sockets[0].getsockname()[1]}/callback"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()).strip():  # read the headers through, so closing does not reset
            pass
        target = urlsplit(request_line[1] if len(request_line) == 3 else "")
        found = target.path == "/callback" and not self._answer.done()
        if found:  # RFC 6749 §4.1.2: code, state and (RFC 9207) iss, or error and error_description
            self._answer.set_result({key: values[0] for key, values in parse_qs(target.query).items()})
        body = b"Signed in: you can close this window." if found else b"Not found"
        writer.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (b"200 OK" if found else b"404 Not Found", len(body), body))
        await writer.drain()
        writer.close()

    async def answer(self) -> AuthorizationCodeResult:
        """Wait for the redirect (five minutes at most) and hand its code to the SDK."""
        try:
            params = await asyncio.wait_for(self._answer, timeout=300)
        except TimeoutError:
            raise SignInFailed(f"nothing came back to {self.uri} within five minutes") from None
        if "code" not in params:
            raise SignInFailed(f"{params.get('error', 'no code')}: {params.get('error_description', '')}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


class SignIn:
    """Open the authorization URL in the user's browser; they sign in, the browser goes to the redirect."""

    async def __call__(self, authorization_url: str, redirect_uri: str) -> None:
        print(f"Sign in with your browser; if it does not open, visit:\n  {authorization_url}", file=sys.stderr)
        webbrowser.open(authorization_url)


class FormSignIn(SignIn):
    """Without a browser: fill in Deputy's sign-in and consent forms the way a browser would post them.

    Cookies are kept and redirects followed, so the last one lands on the listener like a browser's does.
    Use it only with a server you trust: it signs in wherever that server's metadata sends it, and allows
    whatever the consent page asks.
    """

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    async def __call__(self, authorization_url: str, redirect_uri: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=True, timeout=30) as browser:
            page = await browser.get(authorization_url)
            for _ in range(3):  # the sign-in form, then the consent form; a third page is something else
                if str(page.url).startswith(redirect_uri):
                    return  # the listener has the answer
                form = Form.of(page.text)
                if form.action is None or form.error:  # an error page, or the sign-in page again with why
                    raise SignInFailed(form.error or f"HTTP {page.status_code} at {page.url}")
                target = urljoin(str(page.url), form.action)
                if "password" in form.fields:
                    # Only over TLS, or to this machine: on plain http anyone on the way reads the password.
                    if urlsplit(target).scheme != "https" and urlsplit(target).hostname not in LOOPBACK:
                        raise SignInFailed(f"will not send a password over plain http to {target}")
                    data = {**form.fields, "username": self.username, "password": self.password}
                else:
                    data = {**form.fields, "decision": "approve"}  # the consent page's Allow button
                page = await browser.post(target, data=data)
        raise SignInFailed(f"the sign-in did not come back to {redirect_uri}")


class Form(HTMLParser):
    """A page's first `<form>`: its action, its named `<input>` fields (CSRF token included), and the
    text of the page's `role="alert"` element (where Deputy says why it refused)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.error = ""
        self._in_form = self._in_alert = False

    @classmethod
    def of(cls, html: str) -> Form:
        form = cls()
        form.feed(html)
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form" and self.action is None:
            self.action, self._in_form = attributes.get("action") or "", True
        elif tag == "input" and self._in_form and attributes.get("name"):
            self.fields[attributes["name"] or ""] = attributes.get("value") or ""
        self._in_alert = self._in_alert or attributes.get("role") == "alert"

    def handle_endtag(self, tag: str) -> None:
        self._in_form = self._in_form and tag != "form"
        self._in_alert = self._in_alert and tag != "p"

    def handle_data(self, data: str) -> None:
        if self._in_alert:
            self.error += data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default=DEMO_URL, help=f"the MCP server's URL (default {DEMO_URL})")
    parser.add_argument("--username", default="alice")
    parser.add_argument("--password", default=os.environ.get("DEPUTY_DEMO_PASSWORD"),
                        help="sign in without a browser (default $DEPUTY_DEMO_PASSWORD; unset: open the browser)")
    parser.add_argument("--token-file", type=Path, help="keep the registration and tokens here between runs")
    args = parser.parse_args()
    # The SDK logs a traceback when the sign-in fails; the one line printed below says the same.
    logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)
    sign_in = FormSignIn(args.username, args.password) if args.password else SignIn()
    try:
        asyncio.run(call_add(args.url, TokenStore(args.token_file), sign_in))
    except* SignInFailed as failed:  # raised inside the SDK's task group, so it arrives in a group
        sys.exit(f"sign-in failed: {failed.exceptions[0]}")
    except* httpx2.ConnectError:
        sys.exit(f"cannot connect to {args.url}: is `make demo` running?")
    return 0


if __name__ == "__main__":
    sys.exit(main())
