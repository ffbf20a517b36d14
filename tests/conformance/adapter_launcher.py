"""The command ``conformance client --command`` runs: hands this run to :mod:`tests.conformance.adapter_host`.

``python adapter_launcher.py HOST_SOCKET SERVER_URL``: standard library only, so it starts in milliseconds. It
sends the host its standard input, output and error (``SCM_RIGHTS``, unix(7)), its environment (the suite's
``MCP_CONFORMANCE_*`` variables) and working directory, and the argument list the adapter expects
(``upstream_auth_adapter SERVER_URL``); it exits with the status of the forked adapter. Killed (the suite's
timeout), it closes its connection, and the host kills that adapter.
"""

from __future__ import annotations

import array
import json
import os
import socket
import sys

ADAPTER_NAME = "upstream_auth_adapter"


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: {sys.argv[0]} HOST_SOCKET SERVER_URL")
    request = json.dumps({"argv": [ADAPTER_NAME, *sys.argv[2:]], "env": dict(os.environ),
                          "cwd": os.getcwd()}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as host:
        host.connect(sys.argv[1])
        descriptors = array.array("i", [0, 1, 2])
        host.sendmsg([len(request).to_bytes(4, "big") + request],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, descriptors.tobytes())])
        status = b""
        while chunk := host.recv(16):
            status += chunk
    if not status:
        print("adapter launcher: the host ended without the adapter's exit status", file=sys.stderr)
        sys.exit(1)
    sys.exit(int(status))


if __name__ == "__main__":
    main()
