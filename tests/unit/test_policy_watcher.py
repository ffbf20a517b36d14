"""The policy watcher reloads a directory only once its files hold still (deputy.gateway.policy_lifecycle).

From an outside review (2026-12-06): a file caught half-written can be a valid set (cut after one policy, before
the ``forbid`` after it), which was then in force until the next poll. Now a change is reloaded once the files
have not changed for one more interval.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from deputy.gateway.policy_lifecycle import PolicyWatcher

INTERVAL = 0.05


@dataclass
class Watched:
    """What the watcher reads of a server's policies: its directory, its name, and reload()."""

    directory: Path
    server: Any = field(default_factory=lambda: SimpleNamespace(name="demo"))
    reloads: list[str] = field(default_factory=list)

    def reload(self) -> None:
        self.reloads.append((self.directory / "main.cedar").read_text())


async def test_a_file_still_being_written_is_not_loaded_until_it_holds_still(tmp_path: Path) -> None:
    (tmp_path / "main.cedar").write_text("// first\n")
    watched = Watched(tmp_path)
    watcher = PolicyWatcher([cast(Any, watched)], INTERVAL)
    watcher.start()
    try:
        text = ""
        for n in range(12):  # a writer appending for longer than several polls
            text += f"// policy {n}\n"
            (tmp_path / "main.cedar").write_text(text)
            await asyncio.sleep(INTERVAL / 2)
        assert watched.reloads == [], "nothing reloaded while the file kept changing"
        for _ in range(100):
            if watched.reloads:
                break
            await asyncio.sleep(INTERVAL / 2)
        await asyncio.sleep(3 * INTERVAL)
        assert watched.reloads == [text], "one reload, of the whole file"
    finally:
        await watcher.stop()
