"""The demo server's policies (`deputy/demo/policies/`) and its real tool list, as the policy tests use them;
a policy that never validates against the demo's tools; and what the end-to-end policy tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from starlette.types import ASGIApp

from deputy.demo.server import build_demo_server
from deputy.starter import DEMO_POLICY_DIR
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.recording_upstream import RequestRecorder, recording_upstream

DEMO_POLICIES: Final = DEMO_POLICY_DIR

# `echo` takes `text`; a policy reading an attribute the schema does not have never validates.
BROKEN_POLICY: Final = '''
@id("broken-reads-a-missing-attribute")
permit (principal, action == Deputy::Action::"echo", resource)
when { context.input.volume > 3 };
'''


@dataclass
class GuardedDeputy:
    """A running Deputy whose policy-guarded servers forward to a recording upstream."""

    deputy: RunningDeputy
    recorder: RequestRecorder


@contextmanager
def guarded_server(directory: Path, upstream_url: str, name: str, policy: str, *, app: ASGIApp | None = None,
                   server_extra: str = "", extra: str = "", users: tuple[tuple[str, str], ...] = ()
                   ) -> Iterator[GuardedDeputy]:
    """A running Deputy (SQLite, in ``directory``) whose server ``name`` is guarded by ``policy`` (one file) and
    forwards to ``app`` (default: the demo) behind a recorder; ``server_extra`` goes in its table, ``extra`` after."""
    policies = directory / f"{name}-policies"
    policies.mkdir()
    (policies / f"{name}.cedar").write_text(policy)
    with recording_upstream(app) as (url, recorder):
        config = (f'\n[servers.{name}]\nurl = "{url}"\nscopes = ["{name}:tools"]\npolicies = "{policies}"\n'
                  f"{server_extra}\n{extra}")
        with database_url("sqlite", directory) as db_url, running_deputy(directory, db_url, upstream_url, config,
                                                                          users=users) as deputy:
            yield GuardedDeputy(deputy, recorder)


async def demo_tool_list() -> list[dict[str, Any]]:
    """The demo server's tools/list, from the server object itself (what Deputy would read over MCP)."""
    tools = await build_demo_server().list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
