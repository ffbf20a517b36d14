"""``deputy audit verify`` and ``deputy audit checkpoint`` from the command line, on both backends (issue 11,
finding 1): verifying creates and changes nothing — no key made up when ``audit.key`` is missing, no migration, no
row — and the checkpoint printed for an auditor to keep is exactly what ``--trusted`` takes back, which passes on the
honest log and fails once the log is cut back or rewritten.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.log import AuditLog
from deputy.audit.witness_push import WitnessPusher
from deputy.storage.db import Database
from tests.support.audit_build import ORIGIN, SIGNER, N, build, clear, cli, make_settings, write_config
from tests.support.audit_tamper import edit, truncate
from tests.support.deputy_process import _wait_http
from tests.support.sdk_client import free_port


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    await clear(db)
    yield db


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


@contextmanager
def running_witness(tmp_path: Path, cosigner: CosignatureSigner) -> Iterator[str]:
    """A real ``deputy witness serve`` process trusting the test log's key; yields its URL. A free port can be
    taken by another process before the witness binds it (tests run in parallel): then it starts on another."""
    key = tmp_path / "witness.key"
    key.write_text(cosigner.key_string() + "\n")
    for attempt in range(3):
        port = free_port()
        command = ["-m", "deputy", "witness", "serve", "--db", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"]
        command += ["--key", str(key), "--log", SIGNER.verifier().vkey(), "--port", str(port)]
        with (tmp_path / f"witness-{attempt}.log").open("wb") as output:
            process = subprocess.Popen([sys.executable, *command], stdout=output, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                try:
                    _wait_http(f"{url}/checkpoint", process, "deputy witness serve")
                except RuntimeError:
                    if "address already in use" in (tmp_path / f"witness-{attempt}.log").read_text():
                        continue
                    raise
                yield url
                return
            finally:
                process.terminate()
                process.wait(timeout=30)
    raise RuntimeError("deputy witness serve found no free port in 3 attempts")


async def test_verify_fetches_each_witness_latest_checkpoint(fresh: Database, tmp_path: Path) -> None:
    """Truncated to a size the witness cosigned, with the later checkpoint and cosignature deleted: the log's own
    copy of the cosignatures still meets the quorum, but the witness's latest does not fit."""
    cosigner = CosignatureSigner.generate("witness.test/w1")
    wvkey = cosigner.verifier().vkey()
    key_file = tmp_path / "audit.key"
    key_file.write_text(SIGNER.key_string() + "\n")
    config = write_config(tmp_path, fresh.url, key_file)
    with running_witness(tmp_path, cosigner) as witness_url:
        log = AuditLog(fresh.engine, make_settings(), SIGNER)
        log.after_checkpoint.append(WitnessPusher(log, [(witness_url, wvkey)]))
        await build(fresh, n=N + 10, log=log)
        await log.stop()

        named = ["--witness", f"{witness_url} {wvkey}", "--quorum", "1"]
        result = await cli("verify", "-c", str(config), *named)
        assert result.exit_code == 0, result.output
        assert "1 of 1 are a prefix of the log" in result.output

        await truncate(fresh, N)
        result = await cli("verify", "-c", str(config), "--witness", wvkey, "--quorum", "1")
        assert result.exit_code == 0, "without the witness's URL only the stored cosignatures count"
        result = await cli("verify", "-c", str(config), *named)
        assert result.exit_code == 1
        assert (
            f"first bad index {N}: witness {cosigner.name}'s latest cosigned checkpoint has size {N + 10}, but the "
            f"log has only {N} leaves" in result.output
        )
        # With the witness in [audit] witnesses, verify asks it without being told to.
        configured = tmp_path / "configured.toml"
        configured.write_text(config.read_text() + f'witnesses = [{{url = "{witness_url}", vkey = "{wvkey}"}}]\n')
        result = await cli("verify", "-c", str(configured))
        assert result.exit_code == 1
        assert f"witness {cosigner.name}'s latest cosigned checkpoint has size {N + 10}" in result.output
    result = await cli("verify", "-c", str(config), *named)  # the witness is gone: fail closed
    assert result.exit_code == 1 and "cannot reach" in result.output
