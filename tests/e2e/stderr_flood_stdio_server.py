"""A stdio MCP server (newline-delimited JSON-RPC) whose tools write to stderr before answering.

``flood`` writes one 5 MiB stderr line (over the 4 MiB line limit of Deputy's pipes), then 12 MiB more in
100 KiB lines — more than Deputy's stream buffer (twice the limit) and the pipe together, so the server
blocks unless Deputy keeps draining — then a line with terminal controls and a forged log line, then
answers. ``nested`` answers with a result nested 10,000 levels deep. Raw JSON lines rather than the SDK: the
point is what reaches the pipes.
"""

from __future__ import annotations

import json
import sys

FORGED = "\x1b[2J\rINFO deputy.oauth: token issued to mallory"


def _answer(message: dict[str, object], result: object) -> None:
    print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)


def _flood() -> None:
    err = sys.stderr.buffer
    err.write(b"L" * (5 * 1024 * 1024) + b"\n")
    for _ in range(120):
        err.write(b"m" * (100 * 1024) + b"\n")
    err.write(FORGED.encode() + b"\n")
    err.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, params = message.get("method"), message.get("params") or {}
        if method == "initialize":
            _answer(message, {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                              "capabilities": {"tools": {}}, "serverInfo": {"name": "flood", "version": "1"}})
        elif method == "tools/list":
            schema = {"type": "object", "properties": {}}
            _answer(message, {"tools": [{"name": "flood", "inputSchema": schema},
                                        {"name": "nested", "inputSchema": schema}]})
        elif method == "tools/call" and params.get("name") == "flood":
            _flood()
            _answer(message, {"content": [{"type": "text", "text": "flooded"}]})
        elif method == "tools/call":
            deep = "[" * 10_000 + "]" * 10_000
            print('{"jsonrpc":"2.0","id":' + json.dumps(message["id"]) + ',"result":{"deep":' + deep + "}}",
                  flush=True)


if __name__ == "__main__":
    main()
