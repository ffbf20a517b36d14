"""What the command-line tests share (tests/integration/test_*_cli.py): a deployment's config file driven through
``deputy ... --config FILE`` in-process (Typer's runner), its services opened beside it to plant and inspect rows,
and the outside text those tests feed the terminal.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from deputy.cli import app
from deputy.cli.common import console, err
from deputy.config import load_settings
from deputy.services import Services
from deputy.storage.tables import audit_leaves

T = TypeVar("T")
# Outside words that would act on a terminal if printed as they are: Rich markup, an OSC 52 clipboard write, a
# screen clear, a right-to-left override, an emoji code.
HOSTILE = "x[/][conceal]secret[/conceal]\x1b]52;c;aGVsbG8=\x07\x1b[2J\u202egnp.exe\r\b:warning:"
ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def widen_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows on one line each, whatever the terminal the tests run in, so an assertion sees a row whole."""
    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err, "width", 400)


class Deployment:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.settings = load_settings(config, environ={})

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app, [*args, "--config", str(self.config)], env=env)

    def run(self, work: Callable[[Services], Awaitable[T]]) -> T:
        async def opened() -> T:
            services = Services.open(self.settings)
            try:
                await services.start()
                return await work(services)
            finally:
                await services.close()
        return asyncio.run(opened())


async def records(services: Services, record_type: str) -> list[dict[str, object]]:
    """The audit records of ``record_type``, oldest first."""
    async with services.database.engine.connect() as conn:
        rows = (await conn.execute(select(audit_leaves.c.record).order_by(audit_leaves.c.idx))).scalars().all()
    return [r for r in (json.loads(bytes(row)) for row in rows) if r["type"] == record_type]
