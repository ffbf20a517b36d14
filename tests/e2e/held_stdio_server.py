"""A stdio MCP server (newline-delimited JSON-RPC) that holds calls, floods a call with progress, and hands ids back
as a JavaScript server does: the upstream of ``test_stdio_open_requests.py``.

Each message it reads is appended to ``--received FILE`` as one line (``method tool id``, the id as JSON; one
``write`` per line), so a test sees what reached the process, and when, without timing. Its tools: a name starting
with ``hold`` is not answered until ``release`` is called, which answers every held call and then itself;
``chatty`` sends ``count`` progress notifications of ``size`` bytes each (on the call's ``progressToken``) before
its answer; any other tool answers at once. Every answer's id is the request's as ``JSON.parse`` and
``JSON.stringify`` hand it back: an integer beyond 2^53 is rounded to the nearest double, as Node's MCP servers do.
Raw JSON lines rather than the SDK: the point is what crosses the pipes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _as_javascript(request_id: Any) -> Any:
    """The id as a JavaScript number holds it (a double); a string as it is."""
    return int(float(request_id)) if type(request_id) is int else request_id


def _write(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")


def _answer(request_id: Any, result: object) -> None:
    _write({"jsonrpc": "2.0", "id": _as_javascript(request_id), "result": result})


def _chatty(message: dict[str, Any], arguments: dict[str, Any]) -> None:
    token = (message.get("params", {}).get("_meta") or {}).get("progressToken")
    filler = "x" * int(arguments.get("size", 1))
    for n in range(int(arguments.get("count", 1))):
        _write({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": n, "message": filler}})
    _answer(message["id"], {"content": [{"type": "text", "text": "said it all"}]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--received", required=True)
    args = parser.parse_args()
    held: list[Any] = []
    for line in sys.stdin:
        message = json.loads(line)
        method, params = message.get("method"), message.get("params") or {}
        tool = params.get("name") if method == "tools/call" else "-"
        fd = os.open(args.received, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{method} {tool} {json.dumps(message.get('id'))}\n".encode())
        os.close(fd)
        if "id" not in message or method is None:
            continue  # a notification, or an answer to a request of ours (we send none)
        if method == "initialize":
            _answer(message["id"], {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                                    "capabilities": {"tools": {}}, "serverInfo": {"name": "held", "version": "1"}})
        elif method == "tools/call" and str(tool).startswith("hold"):
            held.append(message["id"])
        elif method == "tools/call" and tool == "release":
            for request_id in held:
                _answer(request_id, {"content": [{"type": "text", "text": "released"}]})
            held.clear()
            _answer(message["id"], {"content": [{"type": "text", "text": "released all"}]})
        elif method == "tools/call" and tool == "chatty":
            _chatty(message, params.get("arguments") or {})
        else:
            _answer(message["id"], {})
        sys.stdout.flush()


if __name__ == "__main__":
    main()
