"""The demo server's policies (`deputy/demo/policies/`) and its real tool list, as the policy tests use them;
a policy that never validates against the demo's tools; and what the end-to-end policy tests share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from deputy.demo.server import build_demo_server
from deputy.starter import DEMO_POLICY_DIR
from tests.support.deputy_process import RunningDeputy
from tests.support.recording_upstream import RequestRecorder

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


async def demo_tool_list() -> list[dict[str, Any]]:
    """The demo server's tools/list, from the server object itself (what Deputy would read over MCP)."""
    tools = await build_demo_server().list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
