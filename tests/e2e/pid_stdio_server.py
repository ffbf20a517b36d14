"""A stdio MCP server (newline-delimited JSON-RPC) that tells which process it is: the upstream of the spare tests
and of ``bench/stdio_first_call.py``.

At start, before reading anything, it appends its pid to ``--starts FILE`` (one ``write`` of one line, so
concurrent starts never interleave) and writes ``pid N started`` to stderr; then it sleeps ``--sleep`` seconds
(standing in for a slow start such as ``npx``), or with ``--exit-at-start`` exits at once with status 3 (a
command that crashes). With ``--linger`` it goes on that long after its stdin ends. Its tools: ``whoami``
answers ``{"pid": N, "received": [methods in the order received]}`` — so a test sees which process serves its
session and that ``initialize`` was the first thing it was sent — and ``add(a, b)``. Raw JSON lines rather than
the SDK: it starts in milliseconds, and the test is about processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TOOLS = [
    {"name": "whoami", "inputSchema": {"type": "object", "properties": {}}},
    {"name": "add", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                                    "required": ["a", "b"]}},
]


def _answer(message: dict[str, object], result: object) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}) + "\n")
    sys.stdout.flush()


def _call(name: object, arguments: dict[str, object], received: list[str]) -> dict[str, object]:
    if name == "whoami":
        value: object = {"pid": os.getpid(), "received": received}
    else:
        value = {"result": float(arguments["a"]) + float(arguments["b"])}  # type: ignore[arg-type]
    return {"content": [{"type": "text", "text": json.dumps(value)}], "structuredContent": value}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit-at-start", action="store_true")
    parser.add_argument("--linger", type=float, default=0.0, help="seconds to go on after stdin ends")
    args = parser.parse_args()
    fd = os.open(args.starts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    sys.stderr.write(f"pid {os.getpid()} started\n")
    sys.stderr.flush()
    if args.exit_at_start:
        sys.exit(3)
    time.sleep(args.sleep)
    received: list[str] = []
    for line in sys.stdin:
        message = json.loads(line)
        method, params = message.get("method"), message.get("params") or {}
        received.append(str(method) if method is not None else "(answer)")
        if "id" not in message or method is None:
            continue  # a notification, or an answer to a request of ours (we send none)
        if method == "initialize":
            _answer(message, {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                              "capabilities": {"tools": {}}, "serverInfo": {"name": "pid", "version": "1"}})
        elif method == "tools/list":
            _answer(message, {"tools": TOOLS})
        elif method == "tools/call":
            _answer(message, _call(params.get("name"), params.get("arguments") or {}, list(received)))
        else:
            _answer(message, {})
    time.sleep(args.linger)  # a server slow to leave: only a signal ends it sooner


if __name__ == "__main__":
    main()
