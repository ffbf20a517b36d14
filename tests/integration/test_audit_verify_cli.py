"""``deputy audit verify`` and ``deputy audit checkpoint`` from the command line, on both backends (issue 11,
finding 1): verifying creates and changes nothing — no key made up when ``audit.key`` is missing, no migration, no
row — and the checkpoint printed for an auditor to keep is exactly what ``--trusted`` takes back, which passes on the
honest log and fails once the log is cut back or rewritten.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from deputy.cli import app
from deputy.storage.db import Database
from tests.integration.test_audit_verify import ORIGIN, SIGNER, N, build, clear
from tests.support.audit_tamper import edit, truncate


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    await clear(db)
    yield db


def write_config(tmp_path: Path, database_url: str, key_file: Path) -> Path:
    path = tmp_path / "deputy.toml"
    path.write_text(f'''public_url = "http://127.0.0.1:8000"
data_dir = "{tmp_path / "data"}"
database_url = "{database_url}"

[servers.demo]
url = "http://127.0.0.1:9000/mcp"

[audit]
origin = "{ORIGIN}"
key_file = "{key_file}"
''')
    return path


async def cli(*args: str) -> Any:
    # In a thread: the commands run their own event loop.
    return await asyncio.to_thread(CliRunner().invoke, app, ["audit", *args])


def files(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(directory.rglob("*"))
    }


async def rows(db: Database) -> dict[str, list[Any]]:
    """Every row of every table (alembic's version included), through the test's own connection."""
    metadata = MetaData()
    async with db.engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        return {
            name: sorted(map(repr, (await conn.execute(select(table))).all()))
            for name, table in sorted(metadata.tables.items())
        }


async def test_verify_with_the_key_missing_fails_and_creates_nothing(fresh: Database, tmp_path: Path) -> None:
    await build(fresh)
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep").write_text("x")
    key_file = data / "audit.key"  # never written: the log was signed elsewhere
    config = write_config(tmp_path, fresh.url, key_file)
    before_files, before_rows = files(tmp_path), await rows(fresh)

    result = await cli("verify", "-c", str(config))
    assert result.exit_code == 2, result.output
    assert f"there is no audit signing key at {key_file}" in result.output
    assert not key_file.exists()
    result = await cli("checkpoint", "-c", str(config))
    assert result.exit_code == 2 and not key_file.exists()
    assert files(tmp_path) == before_files
    assert await rows(fresh) == before_rows

    # With the key given on the command line the log verifies, still without writing anything.
    result = await cli("verify", "-c", str(config), "--key", SIGNER.verifier().vkey())
    assert result.exit_code == 0, result.output
    assert files(tmp_path) == before_files and await rows(fresh) == before_rows


async def test_verify_never_creates_or_migrates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here" / "deputy.db"
    key_file = tmp_path / "audit.key"
    key_file.write_text(SIGNER.key_string() + "\n")
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{missing}", key_file)
    result = await cli("verify", "-c", str(config))
    assert result.exit_code == 1 and "there is no database at" in result.output
    assert not missing.parent.exists()


async def test_the_printed_checkpoint_is_a_trusted_anchor(fresh: Database, tmp_path: Path) -> None:
    await build(fresh)
    key_file = tmp_path / "audit.key"
    key_file.write_text(SIGNER.key_string() + "\n")
    config = write_config(tmp_path, fresh.url, key_file)

    result = await cli("checkpoint", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{ORIGIN}\n{N}\n")
    trusted = tmp_path / "kept.checkpoint"
    trusted.write_text(result.output)

    result = await cli("verify", "-c", str(config), "--trusted", str(trusted))
    assert result.exit_code == 0, result.output
    assert "1 of 1 are a prefix of the log" in result.output

    await edit(fresh, 23, b'"alice"', b'"mallory"')
    result = await cli("verify", "-c", str(config), "--trusted", str(trusted), "--allow-unsigned", str(N))
    assert result.exit_code == 1
    assert f"first bad index 20: trusted checkpoint {trusted} (size {N}) is not a prefix of the log" in result.output

    await truncate(fresh, 20)
    result = await cli("verify", "-c", str(config), "--trusted", str(trusted))
    assert result.exit_code == 1
    assert f"first bad index 20: trusted checkpoint {trusted} has size {N}, but the log has only 20 leaves" in (
        result.output
    )

    trusted.write_text(result.output)  # not a checkpoint
    result = await cli("verify", "-c", str(config), "--trusted", str(trusted))
    assert result.exit_code == 1 and "is not a signed checkpoint" in result.output
