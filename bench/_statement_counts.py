"""``token_exchange.py --count``: the database work of one request, counted in the Deputy process.

Deputy runs under ``_count_deputy_statements.py``, which keeps a JSON file of its engine's counts (pool
checkouts, begin/commit/rollback, statements, pre-pings). Here ``n`` sequential requests of one kind are sent,
and the difference of the counts before and after, divided by ``n``, is the work of one request. The audit
log's group commit (its own transactions, shared by many requests) is part of the counts; sequential requests
give it the least sharing, so the figures are an upper bound for a loaded Deputy.

PostgreSQL round trips are estimated as statements + begins + commits + rollbacks + 3 per pre-ping
(SQLAlchemy's asyncpg ping is ``BEGIN``, ``;``, ``ROLLBACK``).

The same sequential requests give **Deputy CPU ms/request net of idle**: Deputy's CPU time (``/proc``) over the
requests, less what it spends idle over the same wall time (its background loops, measured just before for
2 s), divided by ``n``. One request at a time is the least sensitive to a busy machine, and an upper bound of
a loaded Deputy's cost (nothing is shared between requests, e.g. the audit log's commits).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

KINDS = ("checkouts", "begin", "statements", "commit", "rollback", "pings")


def read_counts(path: Path) -> dict[str, int]:
    try:
        counts: dict[str, int] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return counts


async def per_request(url: str, make: Callable[[int], tuple[bytes, dict[str, str]]], n: int, path: Path,
                      marker: bytes, cpu: Callable[[], float]) -> dict[str, float]:
    """``cpu``: Deputy's CPU seconds so far."""
    async with aiohttp.ClientSession() as session:
        for i in range(5):  # warm: caches filled, connections open
            await _post(session, url, *make(i), marker)
        idle_started, idle_cpu = time.perf_counter(), cpu()
        await asyncio.sleep(2.0)
        idle_rate = (cpu() - idle_cpu) / (time.perf_counter() - idle_started)
        before = read_counts(path)
        started, cpu_before = time.perf_counter(), cpu()
        for i in range(n):
            await _post(session, url, *make(5 + i), marker)
        wall, used = time.perf_counter() - started, cpu() - cpu_before
        await asyncio.sleep(0.3)  # the file is rewritten every 0.1 s
        after = read_counts(path)
    per = {kind: (after.get(kind, 0) - before.get(kind, 0)) / n for kind in KINDS}
    per["round trips (PG)"] = per["statements"] + per["begin"] + per["commit"] + per["rollback"] + 3 * per["pings"]
    per["CPU ms net"] = 1000 * (used - idle_rate * wall) / n
    return per


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                marker: bytes) -> None:
    async with session.post(url, data=body, headers=headers) as response:
        raw = await response.read()
    if response.status != 200 or marker not in raw:
        raise SystemExit(f"counted request failed: HTTP {response.status} {raw[:300]!r}")


def print_counts(console: Console, rows: list[tuple[str, str, str, dict[str, float]]]) -> None:
    table = Table(title="Database work per request (sequential requests; counted by engine events)")
    columns = (*KINDS, "round trips (PG)", "CPU ms net")
    for col in ("backend", "auth", "grant", *columns):
        table.add_column(col, justify="left" if col in ("backend", "auth", "grant") else "right")
    for backend, auth, grant, per in rows:
        table.add_row(backend, auth, grant, *(f"{per[k]:.2f}" for k in columns))
    console.print(table)
