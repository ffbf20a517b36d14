"""Benchmark: first-call latency of a new MCP session on a stdio upstream, with and without spare processes.

A new session's first call is ``initialize``, ``notifications/initialized`` and ``tools/call add`` on a session
nobody has used; its latency is from the first byte of ``initialize`` sent to the last of the call's answer, as a
client sees it. Each stdio server is measured with ``spare_processes = 0`` (a process started for the session:
how Deputy worked before issue 16 item 4) and ``= 1`` (the session takes a process started ahead), and with
``--before REV`` also on Deputy as it was at commit REV (exported with ``git archive``, run from that tree).
The servers:

* ``py``: ``tests/e2e/pid_stdio_server.py --sleep S``, a Python server that sleeps S seconds at start, standing
  in for a slow-starting command;
* ``npx``: a real npm MCP server, the official TypeScript SDK's ``McpServer`` (``bench/_node_stdio_server.mjs``,
  the SDK from the npm cache in ``.cache/conf``) started through ``npx --offline -c`` (npm's own start-up, no
  network); left out when node, npx or that cache is missing.

Rounds are interleaved (every variant once per round) and a round waits ``--gap`` seconds first, so a spare has
had the time to start as it would between two users' sessions. Medians over the rounds after the first; the
first round is shown apart: it is the first session after Deputy started, and spares start with the first
request to a server (until the application starts them at start-up). The load average of the (shared, noisy)
machine is printed beside them.

    .venv/bin/python bench/stdio_first_call.py [--rounds 7] [--sleep 1.5] [--gap 8] [--before REV]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tools_call import free_port, stop, wait_http

from deputy.keys import KeyRing
from deputy.oauth.access_tokens import mint_access_token

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
PID_SERVER = ROOT / "tests" / "e2e" / "pid_stdio_server.py"
NODE_SERVER = ROOT / "bench" / "_node_stdio_server.mjs"
NODE_MODULES = ROOT / ".cache" / "conf" / "node_modules"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-06-18"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}


@dataclass
class Deputy:
    label: str
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, server: str) -> str:
        if server not in self.tokens:
            ring = KeyRing.open(self.data_dir / "keys", 3600)
            self.tokens[server], _ = mint_access_token(
                ring, issuer=self.url, subject="bench-user", client_id="bench-client",
                audience=f"{self.url}/mcp/{server}", scope=f"{server}:tools", ttl=3600, grant_id="bench-grant",
                auth_time=None)
        return self.tokens[server]


def commands(work: Path, sleep: float) -> dict[str, list[str]]:
    """The stdio commands measured, by kind."""
    found = {"py": [sys.executable, str(PID_SERVER), "--starts", str(work / "py.starts"), "--sleep", str(sleep)]}
    if shutil.which("npx") and shutil.which("node") and (NODE_MODULES / "@modelcontextprotocol" / "sdk").is_dir():
        found["npx"] = ["npx", "--offline", "--prefix", str(NODE_MODULES.parent), "-c", f"node {NODE_SERVER}"]
    return found


def config(port: int, servers: Mapping[str, tuple[list[str], int | None]]) -> str:
    text = f'public_url = "http://{HOST}:{port}"\nport = {port}\n\n[registration]\nmode = "off"\n'
    text += "\n[limits]\nstdio_sessions_per_server = 8\nstdio_sessions_per_user = 8\n"
    for name, (command, spares) in servers.items():
        text += f'\n[servers.{name}]\ncommand = {json.dumps(command)}\nscopes = ["{name}:tools"]\n'
        if spares is not None:  # None: a Deputy from before the key existed
            text += f"spare_processes = {spares}\n"
    return text


@contextmanager
def deputy(label: str, work: Path, servers: Mapping[str, tuple[list[str], int | None]],
           tree: Path | None = None) -> Iterator[Deputy]:
    work.mkdir(parents=True)
    port = free_port()
    (work / "deputy.toml").write_text(config(port, servers))
    env = {**os.environ, "DEPUTY_CONFIG": str(work / "deputy.toml"), "DEPUTY_DATA_DIR": str(work / "data")}
    env.pop("DEPUTY_DATABASE_URL", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)  # ahead of the editable install: that tree's deputy package runs
    log = work / "deputy.log"
    process = subprocess.Popen([sys.executable, "-m", "deputy", "serve"], env=env, cwd=tree or work,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://{HOST}:{port}"
        wait_http(f"{url}/healthz", process, f"deputy ({label})", log)
        yield Deputy(label, process, url, work / "data")
    finally:
        stop(process)


def first_call(http: httpx.Client, running: Deputy, server: str) -> tuple[float, float]:
    """(initialize answered, first call answered) in ms, on a new session; the session is ended after."""
    url = f"{running.url}/mcp/{server}"
    auth = {**HEADERS, "Authorization": f"Bearer {running.token(server)}"}
    started = time.perf_counter()
    opened = http.post(url, json=INITIALIZE, headers=auth)
    initialized = time.perf_counter()
    if opened.status_code != 200 or '"result"' not in opened.text:
        raise RuntimeError(f"{running.label} {server}: initialize answered {opened.status_code}: {opened.text[:300]}")
    session = {**auth, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    answer = http.post(url, json=CALL, headers=session)
    done = time.perf_counter()
    if answer.status_code != 200 or '"result"' not in answer.text:
        raise RuntimeError(f"{running.label} {server}: tools/call answered {answer.status_code}: {answer.text[:300]}")
    http.delete(url, headers=session)
    return (initialized - started) * 1000, (done - started) * 1000


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def export(rev: str, into: Path) -> Path:
    """The deputy package as it was at ``rev``, unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "deputy"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sleep", type=float, default=1.5, help="start-up seconds of the Python stand-in")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds before each round (spares start meanwhile)")
    parser.add_argument("--before", metavar="REV", help="also measure Deputy at this commit (spares did not exist)")
    args = parser.parse_args()
    # SIGTERM (e.g. timeout) ends the run through the finally blocks: the Deputies stop, and their processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="deputy-stdio-bench-") as temp:
        work = Path(temp)
        kinds = commands(work, args.sleep)
        variants: list[tuple[str, str, str]] = []  # (deputy label, server name, row label)
        now = {f"{kind}-{spares}": (command, spares) for kind, command in kinds.items() for spares in (0, 1)}
        with contextlib.ExitStack() as stack:
            running = {"after": stack.enter_context(deputy("after", work / "after", now))}
            variants += [("after", name, f"{name.split('-')[0]}, spare_processes = {name.split('-')[1]}")
                         for name in now]
            if args.before:
                (work / "tree").mkdir()
                tree = export(args.before, work / "tree")
                old = {f"{kind}-old": (command, None) for kind, command in kinds.items()}
                running["before"] = stack.enter_context(deputy("before", work / "before", old, tree))
                variants += [("before", name, f"{name.split('-')[0]}, Deputy at {args.before}") for name in old]
            samples: dict[str, list[tuple[float, float]]] = {row: [] for _, _, row in variants}
            loads = []
            with httpx.Client(timeout=120) as http:
                for _ in range(args.rounds):
                    time.sleep(args.gap)
                    loads.append(load_average())
                    for label, server, row in variants:
                        samples[row].append(first_call(http, running[label], server))
    print(f"# stdio first call, {args.rounds} rounds, python stand-in sleeps {args.sleep} s, gap {args.gap} s")
    print(f"# load average before each round: {'; '.join(loads)}")
    print("| server, variant | initialize ms (median) | first call ms (median) | min | max | round 1 first call ms |")
    print("|---|---|---|---|---|---|")
    for _, _, row in variants:
        later = samples[row][1:] or samples[row]
        calls = [total for _, total in later]
        inits = [init for init, _ in later]
        print(f"| {row} | {statistics.median(inits):.0f} | {statistics.median(calls):.0f} | {min(calls):.0f} | "
              f"{max(calls):.0f} | {samples[row][0][1]:.0f} |")
    if "npx" not in kinds:
        print("# npx: not measured (node, npx or the TypeScript SDK in .cache/conf missing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
