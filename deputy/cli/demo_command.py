"""``deputy demo`` (what ``make demo`` runs): Deputy with embedded defaults in front of the demo MCP server.

The demo upstream runs in Deputy's process, on a port of its own: any free one unless ``--upstream-port`` names
one, so a second demo (another ``DEPUTY_PORT`` and ``DEPUTY_DATA_DIR``) or anything else on a fixed port cannot
collide with it. Both ports are bound, and storage, the audit log and the policies started, before the banner is
printed (:mod:`deputy.cli.serving`): a failure is one line and an exit code (:mod:`deputy.cli.failures`), never a
banner followed by a traceback. The demo's effective configuration is then recorded in its data directory
(``demo.toml``), where every admin command run without a configuration finds it (:mod:`deputy.cli.common`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from deputy.cli.common import LogLevelOption, console, settings_or_exit, start_logging
from deputy.cli.failures import exit_on_failure
from deputy.services import Services
from deputy.starter import DEMO_UPSTREAM_PORT, demo_config, demo_config_path, demo_defaults, write_demo_config

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.listener import ListenerBudget

DEMO_UPSTREAM_SHARE = 0.125  # of the connections budget, for the demo upstream in the same process
UPSTREAM_HOST = "127.0.0.1"


def demo(upstream_port: Annotated[int, typer.Option(help="port of the demo MCP server (0: any free port)")]
         = DEMO_UPSTREAM_PORT, log_level: LogLevelOption = None) -> None:
    """Run Deputy with embedded defaults in front of the demo MCP server."""
    from deputy.cli.serving import bind, bound_port, check_data_dir, listener_budget, run_async  # uvicorn: here only

    level, database_url = "info", None
    upstream_sock = None
    try:
        upstream_sock = bind(UPSTREAM_HOST, upstream_port, 128, "the demo upstream",
                             "give another --upstream-port, or leave it out for any free port")
        settings = settings_or_exit(None, demo_defaults(bound_port(upstream_sock)))
        level, database_url = start_logging(settings, log_level), settings.database_url
        if level != "debug":  # the SDK's demo server logs every session at INFO; the demo's own output matters here
            logging.getLogger("mcp").setLevel(logging.WARNING)
        check_data_dir(settings.data_dir)
        budget, files = listener_budget(settings)
        deputy_sock = bind(settings.host, settings.port, budget.backlog, "the demo's Deputy",
                           f"stop what listens there, or run the demo on a free port: DEPUTY_PORT={settings.port + 1} "
                           "make demo (a second demo also needs its own DEPUTY_DATA_DIR)")
        run_async(_run(settings, upstream_sock, deputy_sock, budget, files))
    except typer.Exit:
        raise
    except Exception as exc:
        exit_on_failure(exc, level, database_url)
    finally:
        if upstream_sock is not None:
            upstream_sock.close()


async def _run(settings: Settings, upstream_sock: socket.socket, deputy_sock: socket.socket,
               budget: ListenerBudget, files: str) -> None:
    from deputy.app import create_app
    from deputy.cli.serving import Lifespan, Server, bound_port, uvicorn_config
    from deputy.demo.server import demo_asgi_app

    upstream_app = demo_asgi_app()
    upstream_lifespan = Lifespan(upstream_app)
    await upstream_lifespan.startup()
    upstream = Server(uvicorn_config(upstream_app, settings.limits, budget.share(DEMO_UPSTREAM_SHARE)),
                      upstream_lifespan)
    serving = asyncio.create_task(upstream.serve(sockets=[upstream_sock]))
    try:
        # Deputy checks its policies against the upstream's tools at start; uvicorn offers a flag, not an event.
        while not upstream.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if serving.done():
            serving.result()  # the upstream's failure, raised
        services = Services.open(settings)
        target = create_app(settings, services)
        lifespan = Lifespan(target)
        await lifespan.startup()
    except BaseException:
        upstream.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await upstream_lifespan.shutdown()
        raise
    try:
        passwords = await _ensure_users(settings, services)
        path = demo_config_path(settings.data_dir)
        write_demo_config(path, demo_config(settings.public_url, settings.host, settings.port, settings.data_dir,
                                            settings.database_url, bound_port(upstream_sock)))
        _banner(settings, bound_port(upstream_sock), *passwords)
        console.print(files)
        deputy = Server(uvicorn_config(target, settings.limits, budget.share(1 - DEMO_UPSTREAM_SHARE)), lifespan)
        await asyncio.gather(serving, deputy.serve(sockets=[deputy_sock]))
    finally:
        await lifespan.shutdown()


async def _ensure_users(settings: Settings, services: Services) -> tuple[str, str]:
    """alice (``DEPUTY_DEMO_PASSWORD``, else a random password) and bob the approver (random)."""
    password = settings.demo_password or secrets.token_urlsafe(12)
    approver_password = secrets.token_urlsafe(12)
    for username, secret in (("alice", password), ("bob", approver_password)):
        if not await services.users.set_password(username, secret):
            await services.users.add(username, secret)
    return password, approver_password


def _banner(settings: Settings, upstream_port: int, password: str, approver_password: str) -> None:
    url = settings.resource_of("demo")
    console.print(f"""[bold]Deputy demo[/bold]
  MCP server (through Deputy): [cyan]{url}[/cyan]
  Issuer:                      {settings.issuer}
  Demo upstream (direct):      http://{UPSTREAM_HOST}:{upstream_port}/mcp
  Sign in as alice / {password}
  Policies:                    {settings.servers["demo"].policies}
    (delete_user with id < 100 is forbidden; other deletions wait for a human approval:
     bob / {approver_password} approves at the link the client is given, or `deputy approvals`)
  Admin commands run here (deputy approvals list, deputy audit verify, deputy users list) use the demo's
  configuration, recorded in {demo_config_path(settings.data_dir)}

Connect a client, e.g. from a desktop host that speaks stdio:
  npx mcp-remote {url}
or the MCP Python SDK, with the whole client in examples/sdk_client.py (README, "Connect a client"):
  .venv/bin/python examples/sdk_client.py {url}                         # opens your browser
  .venv/bin/python examples/sdk_client.py {url} --password {password}   # no browser
""", soft_wrap=True)  # keep URLs and code whole; a terminal wraps them itself
