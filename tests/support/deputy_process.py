"""Deputy and the demo upstream as real processes on free loopback ports.

Nothing of Deputy is mocked: the test writes a ``deputy.toml``, adds its users with the
CLI's own code, and starts ``python -m deputy serve``. That process, and ``RunningDeputy.cli``'s, is forked from a
process that imported Deputy once (tests.support.forked_deputy) unless it needs what fork cannot give (a
``preexec_fn``): find it by ``RunningDeputy.process.pid``, never by its /proc cmdline or environ (the host's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlsplit

import httpx
from argon2 import PasswordHasher

from tests.support.forked_deputy import DeputyProcess, run_deputy, start_deputy
from tests.support.sdk_client import free_port

PASSWORD = "correct horse battery staple"
PUBLIC_CLIENT = "test-public"
CONFIDENTIAL_CLIENT = "test-confidential"
CONFIDENTIAL_SECRET = "s3cret-for-tests-only-0123456789"
# Never on Deputy's own host (127.0.0.1 here): a browser would send it Deputy's cookies (README, security notes).
REDIRECT_URI = "http://localhost:9/callback"
# The static clients' redirect URI when Deputy itself runs on localhost (public_host="localhost").
IP_LITERAL_REDIRECT_URI = "http://127.0.0.1:9/callback"


@dataclass(frozen=True)
class RunningDeputy:
    url: str
    data_dir: Path
    config: Path
    database_url: str
    upstream_url: str
    env: dict[str, str]
    process: DeputyProcess | None = field(default=None, compare=False)

    def resource(self, name: str = "demo") -> str:
        return f"{self.url}/mcp/{name}"

    @property
    def redirect_uri(self) -> str:
        """The static clients' redirect URI: never on this Deputy's own host (browsers share cookies across ports)."""
        return IP_LITERAL_REDIRECT_URI if urlsplit(self.url).hostname == "localhost" else REDIRECT_URI

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m deputy *args`` with this Deputy's environment, forked from a process that imported Deputy
        once (tests.support.forked_deputy: about two seconds of imports saved per command)."""
        return run_deputy(list(args), self.env, timeout=60)


class Polled(Protocol):
    """What `_wait_http` needs of a process: a ``subprocess.Popen``, or a forked one (tests.support.forked_deputy)."""

    returncode: int | None

    def poll(self) -> int | None: ...


def _wait_http(url: str, process: Polled, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout}s")


@contextmanager
def demo_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "deputy.demo", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        _wait_http(url, process, "demo upstream")
        yield url
    finally:
        process.terminate()
        process.wait(10)


# Every test request comes from 127.0.0.1, so the per-address registration limit (default 10 a
# minute) would throttle the suite itself; it is tested on its own with a low limit.
RELAXED_REGISTRATION = "\n[registration]\nrate_limit_per_minute = 10000\n"
# Likewise the per-address budget of pending authorization requests (default 60 a minute): the suite sends hundreds
# of /authorize from 127.0.0.1 (tests/security/test_authorize_request_budget.py sets its own).
RELAXED_AUTHORIZATION_REQUESTS = "authorization_requests_per_minute = 10000\n"
LIMITS_HEADER = re.compile(r"^\[limits\][^\n]*\n", re.MULTILINE)


def relaxed(extra: str) -> str:
    """``extra`` with the suite's relaxed per-address limits, each unless ``extra`` sets it: a `[registration]`
    table in it replaces the relaxed one; the relaxed pending-request budget joins a `[limits]` table it has."""
    if "[registration]" not in extra:
        extra += RELAXED_REGISTRATION
    if "authorization_requests_per_minute" not in extra:
        header = LIMITS_HEADER.search(extra)
        if header is None:
            extra += "\n[limits]\n" + RELAXED_AUTHORIZATION_REQUESTS
        else:
            extra = extra[:header.end()] + RELAXED_AUTHORIZATION_REQUESTS + extra[header.end():]
    return extra


def write_config(path: Path, port: int, upstream_url: str, extra: str = "", public_host: str = "127.0.0.1",
                 top_level: str = "") -> None:
    """The generated config plus `extra` (tables; :func:`relaxed`) and `top_level` (keys of no table, written
    before the first table)."""
    extra = relaxed(extra)
    redirect_uri = IP_LITERAL_REDIRECT_URI if public_host == "localhost" else REDIRECT_URI
    path.write_text(f'''
public_url = "http://{public_host}:{port}"
port = {port}
{top_level}

[tokens]
clock_leeway = 5

[servers.demo]
title = "Demo"
url = "{upstream_url}"
scopes = ["demo:tools", "demo:admin"]
required_scopes = ["demo:tools"]

[servers.other]
title = "Another server"
url = "{upstream_url}"
scopes = ["other:tools"]

[servers.local]
title = "The demo server over stdio"
command = {json.dumps([sys.executable, "-m", "deputy.demo", "--stdio"])}
scopes = ["local:tools"]

[[clients]]
client_id = "{PUBLIC_CLIENT}"
client_name = "Test public client"
redirect_uris = ["{redirect_uri}"]

[[clients]]
client_id = "{CONFIDENTIAL_CLIENT}"
client_name = "Test confidential client"
redirect_uris = ["{redirect_uri}"]
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{CONFIDENTIAL_SECRET}"
{extra}
''')


TEST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def add_users(deputy: RunningDeputy, users: tuple[tuple[str, str], ...]) -> None:
    """Add ``users`` (name, password) as `deputy users add` does — its own code: the same storage, the same
    ``admin.action`` record — in one start of the storage for all of them, not a CLI process each (a process costs
    about two seconds of imports, and the suite starts over a hundred Deputies). `deputy users add` itself is
    tested as a command elsewhere.

    Their passwords are argon2id hashes with the smallest parameters argon2 takes (:data:`TEST_PASSWORD_HASHER`):
    Deputy verifies a hash by the parameters it carries, so every sign-in of these users then costs well under a
    millisecond instead of about 0.2 s of CPU (RFC 9106's 64 MiB, three passes), over the suite's hundreds of
    sign-ins. What Deputy hashes itself (`deputy users add`, configured client secrets) keeps its own parameters."""
    from deputy import hashing
    from deputy.cli.common import with_services
    from deputy.config import load_settings
    from deputy.services import Services

    async def add(services: Services) -> None:
        for username, password in users:
            added = await services.users.add(username, password)
            await services.record("admin.action", action="users.add", username=added.username, user_id=added.user_id)

    settings = load_settings(deputy.config, environ=deputy.env)
    failure: list[BaseException] = []

    def run() -> None:  # its own thread: a caller may be inside a running event loop
        try:
            with_services(settings, add)
        except BaseException as exc:  # handed to the caller below (SystemExit from a failed start too)
            failure.append(exc)

    # Swapped only while this process's one other thread of work (the caller's) waits in join() below.
    deputys_hasher, hashing._hasher = hashing._hasher, TEST_PASSWORD_HASHER
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    finally:
        hashing._hasher = deputys_hasher
    if failure:
        raise RuntimeError(f"adding users failed: {failure[0]!r}")


@contextmanager
def running_deputy(directory: Path, database_url: str, upstream_url: str, extra_config: str = "",
                   preexec_fn: Callable[[], None] | None = None, public_host: str = "127.0.0.1",
                   port: int | None = None, *, environment: Mapping[str, str] | None = None,
                   users: tuple[tuple[str, str], ...] = (), stderr_apart: bool = False,
                   top_level: str = "") -> Iterator[RunningDeputy]:
    """`deputy serve` on `port` (default: a free one), alice and `users` added; `preexec_fn` runs in the child
    before it starts (e.g. to set rlimits); `environment` is added to its environment. Its output goes to
    `directory/deputy.log`, or with `stderr_apart` standard error (the log) to `stderr.log` and standard output to
    `stdout.log`. The process is forked from tests.support.forked_deputy's host (its imports done once) unless it
    needs what fork cannot give (a `preexec_fn`: then ``subprocess.Popen``); either way `process.pid` is its pid."""
    port = port or free_port()
    config = directory / "deputy.toml"
    write_config(config, port, upstream_url, extra_config, public_host, top_level)
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(directory / "data"),
           "DEPUTY_DATABASE_URL": database_url, **(environment or {})}
    deputy = RunningDeputy(f"http://{public_host}:{port}", directory / "data", config, database_url, upstream_url, env)
    add_users(deputy, (("alice", PASSWORD), *users))
    with contextlib.ExitStack() as files:
        if stderr_apart:
            out = files.enter_context((directory / "stdout.log").open("wb"))
            err: IO[bytes] | int = files.enter_context((directory / "stderr.log").open("wb"))
        else:
            out, err = files.enter_context((directory / "deputy.log").open("wb")), subprocess.STDOUT
        process = start_deputy(["serve"], env, out, err, preexec_fn=preexec_fn)
        try:
            _wait_http(f"{deputy.url}/healthz", process, "deputy serve")
            yield replace(deputy, process=process)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def deputy_on(backend: str, upstream_url: str, directory: Path) -> Iterator[RunningDeputy]:
    """A running Deputy on a fresh database of the given backend (see tests.support.databases)."""
    from tests.support.databases import database_url

    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url) as running:
        yield running
