"""Launch the demo upstream for ``bench/sessions_memory.py``: the SDK's MCPServer with sessions (stateful), JSON
responses, logging quiet (see ``bench/_upstream.py`` for why), so that clients can open sessions and GET streams;
up to :data:`MAX_SESSIONS` of them.

Usage: python bench/_upstream_sessions.py PORT
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from deputy.demo.server import build_demo_server, demo_asgi_app

MAX_SESSIONS = 50_000


def main() -> None:
    port = int(sys.argv[1])
    server = build_demo_server()
    logging.getLogger().setLevel(logging.WARNING)
    app = demo_asgi_app(server, stateless=False, json_response=True, host="127.0.0.1")
    # The SDK refuses sessions past 10,000 (DEFAULT_MAX_SESSIONS); the bench opens 10,000 and a warm-up one.
    server.session_manager.max_sessions = MAX_SESSIONS
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, access_log=False, log_level="warning",
                loop="uvloop", http="httptools", lifespan="on", timeout_keep_alive=75)


if __name__ == "__main__":
    main()
