"""The "Waiting for approval" page's command runs Deputy's command and nothing its client's author wrote.

From the outside review of the browser-facing pages (2026-12-06). The page (``pending.html``) tells the person to
have her administrator run ``deputy clients approve CLIENT_ID``. A client identified by its metadata document URL
(``[client_documents] unknown_domains = "approval"``) has an id its author chose, and ``$( )``, ``;``, backticks and
quotes are all valid in a URL's path: printed raw, the command ran the author's shell code as the administrator. The
page prints the id shell-quoted (:func:`deputy.display_text.command_line`), still through the pages' outside-text
escaping, so the command, pasted into a POSIX shell, approves exactly that client id and does nothing else.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.document_server import DocumentServer
from tests.support.oauth_flow import Pkce
from tests.support.sdk_client import page_text
from tests.support.tls import TlsFiles

CALLBACK = "http://localhost:9/callback"
# Paths of metadata documents whose URL, run as a shell would read it unquoted (or naively single-quoted), creates
# the file ``pwned``.
HOSTILE_PATHS = [
    "/clients/app$(touch$IFS'pwned').json",
    "/clients/app;touch$IFS'pwned';.json",
    "/clients/app|touch$IFS'pwned'|.json",
    "/clients/app'$(touch$IFS'pwned')'.json",
    '/clients/app"$(touch$IFS"pwned")".json',
]


@pytest.fixture(scope="module")
def pending_deputy(upstream_url: str, tls: TlsFiles,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """SQLite; client metadata documents in development mode trusting the test CA, unknown domains held for
    approval: the documented mode in which a client waits on the "Waiting for approval" page."""
    directory: Path = tmp_path_factory.mktemp("deputy-pending-command")
    extra = f'''
[client_documents]
development_mode = true
ca_file = "{tls.ca_file}"
allowed_domains = ["127.0.0.1"]
unknown_domains = "approval"
cache_min_seconds = 0
'''
    with (database_url("sqlite", directory) as url,
          running_deputy(directory, url, upstream_url, extra) as running):
        yield running


def authorization_url(deputy: RunningDeputy, client_id: str) -> str:
    return f"{deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "state": "s",
        "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256", "resource": deputy.resource("demo")})


def run_as_posix_shell(command: str, where: Path) -> list[str]:
    """Run ``command`` as a POSIX shell would, with ``deputy`` a function that writes its arguments one a line."""
    script = 'deputy() { printf "%s\\n" "$@" > arguments; }\n' + command + "\n"
    subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=where, check=False, timeout=10,
                   capture_output=True)
    out = where / "arguments"
    return out.read_text().splitlines() if out.exists() else []


@pytest.mark.parametrize("path", HOSTILE_PATHS)
async def test_the_pending_page_command_runs_nothing_the_client_wrote(
        pending_deputy: RunningDeputy, docs: DocumentServer, tmp_path: Path, path: str) -> None:
    """A client's author picks a metadata document URL holding shell syntax; the page tells the person to have her
    administrator run ``deputy clients approve <that URL>``. Run as shown, it approves that client id and does
    nothing else."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to read the command as an administrator's shell would")
    url = docs.serve_document(path, host="localhost", redirect_uris=[CALLBACK], grant_types=["authorization_code"])
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorization_url(pending_deputy, url))
    assert page.status_code == 403, page.text
    assert "Waiting for approval" in page_text(page.text)
    shown = re.search(r"<code>(deputy clients approve .*?)</code>", page.text, re.DOTALL)
    assert shown is not None, page.text
    command = html.unescape(shown.group(1))

    arguments = run_as_posix_shell(command, tmp_path)

    assert not (tmp_path / "pwned").exists(), f"running the page's command {command!r} ran the client's own command"
    assert arguments == ["clients", "approve", url], f"{command!r} does not approve {url!r}"


async def test_a_plain_client_id_is_shown_as_it_is(pending_deputy: RunningDeputy, docs: DocumentServer) -> None:
    """Quoting only where a shell would read the id otherwise: an ordinary URL reads as itself in the command."""
    url = docs.serve_document("/clients/plain-app.json", host="localhost", redirect_uris=[CALLBACK],
                              grant_types=["authorization_code"])
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorization_url(pending_deputy, url))
    assert page.status_code == 403, page.text
    assert f"<code>deputy clients approve {url}</code>" in page.text
