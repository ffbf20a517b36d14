"""A small demo upstream MCP server that Deputy can sit in front of.

See `deputy.demo.server` for the tools, resource and prompt it offers.
"""

from deputy.demo.server import build_demo_server, demo_asgi_app, main

__all__ = ["build_demo_server", "demo_asgi_app", "main"]
