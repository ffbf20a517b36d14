"""Time ``verify_database`` on a large audit log in SQLite.

The log is written directly in bulk (sqlite3 executemany): realistic ~0.45 kB decision records, the level >= 1
nodes they complete, a signed checkpoint every ``--every`` records and the head, exactly as ``AuditLog`` would
store them (the verification itself checks that). Then the whole log is verified and a table printed.

    .venv/bin/python bench/audit_verify.py [--records 1000000] [--every 1000] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deputy.audit.checkpoint import Checkpoint, SignedCheckpoint
from deputy.audit.merkle import CompactRange, leaf_hash
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.verify import verify_database
from deputy.storage.db import Database

ORIGIN = "bench.example/deputy-audit"


def entry(i: int) -> bytes:
    record = {
        "v": 1,
        "type": "decision",
        "id": uuid.uuid4().hex,
        "time": 1_760_000_000_000 + i,
        "user": f"user-{i % 97}",
        "agent": f"agent-{i % 13}",
        "actors": [{"sub": f"agent-{i % 13}"}],
        "txn": f"txn-{i // 10}",
        "jti": uuid.uuid4().hex,
        "server": "demo",
        "decision_id": uuid.uuid4().hex,
        "outcome": "allow" if i % 5 else "deny",
        "method": "tools/call",
        "tool": "delete_user",
        "policies": ["policy0"],
        "policy_version": "v1",
        "schema_version": "s1",
        "errors": [],
        "approval_id": None,
        "arguments": {"id": i, "reason": "cleanup"},
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def build(path: Path, records: int, every: int, signer: NoteSigner) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    compact = CompactRange()
    chunk = 50_000
    for start in range(0, records, chunk):
        leaves, nodes, checkpoints = [], [], []
        for i in range(start, min(records, start + chunk)):
            e = entry(i)
            leaves.append((i, e, 0))
            nodes.extend(compact.append(leaf_hash(e)))
            if compact.size % every == 0 or compact.size == records:
                root = compact.root()
                note = SignedCheckpoint.sign(Checkpoint(ORIGIN, compact.size, root), signer).note
                checkpoints.append((compact.size, root, note, 0))
        conn.executemany("INSERT INTO audit_leaves (idx, record, created_at) VALUES (?, ?, ?)", leaves)
        conn.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
        conn.executemany(
            "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)", checkpoints
        )
        conn.commit()
    conn.execute("INSERT INTO audit_head (id, size, compact) VALUES (1, ?, ?)", (compact.size, compact.to_bytes()))
    conn.commit()
    conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    signer = NoteSigner.from_key(generate_signer_key(ORIGIN))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.db"
        database = Database(f"sqlite+aiosqlite:///{path}")
        await database.migrate()
        started = time.perf_counter()
        build(path, args.records, args.every, signer)
        built = time.perf_counter() - started
        try:
            report = await verify_database(database.engine, signer.verifier(), workers=args.workers)
        finally:
            await database.dispose()
        table = Table("records", "checkpoints", "tree nodes", "workers", "build s", "verify s", "records/s", "ok")
        table.add_row(
            f"{report.leaves:,}",
            f"{report.checkpoints_ok:,}",
            f"{report.nodes_checked:,}",
            str(report.workers),
            f"{built:.1f}",
            f"{report.seconds:.1f}",
            f"{report.records_per_second:,.0f}",
            str(report.ok),
        )
        Console().print(table)
        if not report.ok:
            for problem in report.problems[:5]:
                print(problem.message)


if __name__ == "__main__":
    asyncio.run(main())
