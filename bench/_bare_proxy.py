"""The floor for ``bench/tools_call.py``: a bare pass-through HTTP proxy in front of the same upstream.

No authentication, no policy, no audit, no metrics, no logging: it reads the POST body, forwards it
over a pooled keep-alive aiohttp connection and sends the upstream's status, content type and body
back. Issue 16 states its targets against such a proxy (0.34 ms of CPU per call where Deputy was to
reach 0.55), so the benchmark measures one in the same run as Deputy: on a slower machine both cost
more, and their ratio is the figure that carries over.

Usage: python bench/_bare_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

FORWARDED = ("Content-Type", "Accept", "MCP-Protocol-Version", "Mcp-Session-Id")


def build_app(upstream: str) -> web.Application:
    app = web.Application()

    async def open_session(app: web.Application) -> None:
        app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app["client"].close()

    async def forward(request: web.Request) -> web.Response:
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        async with app["client"].post(upstream, data=await request.read(), headers=headers) as reply:
            body = await reply.read()
            return web.Response(status=reply.status, body=body,
                                headers={"Content-Type": reply.headers.get("Content-Type", "application/json")})

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_post("/mcp", forward)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    uvloop.install()
    web.run_app(build_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
