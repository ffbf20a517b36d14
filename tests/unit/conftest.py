"""Fixtures shared by the unit tests of the policy library."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.demo_policies import demo_tool_list


@pytest.fixture(scope="module")
async def demo_tools() -> list[dict[str, Any]]:
    return await demo_tool_list()
