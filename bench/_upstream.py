"""Launch the demo upstream for the benchmark: the SDK's MCPServer, stateless JSON mode.

``python -m deputy.demo`` runs uvicorn at log level ``info`` with the access log on,
and the SDK's ``MCPServer`` sets the root logger to INFO with a rich handler, which
then logs a line per request ("Terminating session: None"). Both cost the server a
large share of its CPU; the benchmark wants the upstream as cheap as it can be, so it
starts the same app here with the access log off and everything at WARNING.

Usage: python bench/_upstream.py PORT
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from deputy.demo.server import build_demo_server, demo_asgi_app


def main() -> None:
    port = int(sys.argv[1])
    server = build_demo_server()  # runs the SDK's logging.basicConfig(level=INFO)
    logging.getLogger().setLevel(logging.WARNING)
    app = demo_asgi_app(server, stateless=True, json_response=True, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, access_log=False, log_level="warning",
                loop="uvloop", http="httptools", lifespan="on")


if __name__ == "__main__":
    main()
