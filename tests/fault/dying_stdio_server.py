"""A stdio MCP server (newline-delimited JSON-RPC) whose one tool sends a progress notification and then exits.

Raw JSON lines rather than the SDK: the point is a process that dies between two messages of one answer.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, params = message.get("method"), message.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                      "serverInfo": {"name": "dying", "version": "1"}}
            print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
        elif method == "tools/list":
            tools = [{"name": "stream", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}]
            print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": tools}}), flush=True)
        elif method == "tools/call":
            token = params.get("_meta", {}).get("progressToken")
            progress = {"progressToken": token, "progress": 1, "total": 2}
            print(json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": progress}), flush=True)
            sys.exit(1)  # dies before the answer


if __name__ == "__main__":
    main()
