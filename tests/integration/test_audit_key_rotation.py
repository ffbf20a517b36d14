"""Rotating the audit signing key (issue 11, finding 9), on both backends, with the real witness app.

The hand-over checkpoint is signed by the old and the new key and names the new one; a verifier starting from the
old key follows it, checkpoints before it stay verifiable with the old key, and after it only the new key is
accepted — by the verifier and by a witness configured with the old key, which follows the hand-over (and keeps
following it after a restart). The rotation is recorded in the log as ``key.rotated`` ("audit signing").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.abc import AbstractResolver
from starlette.types import ASGIApp
from typer.testing import CliRunner

from deputy.audit.checkpoint import Checkpoint, SignedCheckpoint
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.log import AuditLog
from deputy.audit.log_keys import HANDOVER, LogKeys
from deputy.audit.note import NoteError, NoteSigner, generate_signer_key, open_note
from deputy.audit.rotation import rotate
from deputy.audit.settings import AuditSettings, history_file, load_log_keys, load_signer
from deputy.audit.verify import verify_database
from deputy.audit.witness import WitnessStore, witness_app
from deputy.audit.witness_push import WitnessPusher, stored_cosignatures
from deputy.cli import app
from deputy.storage.db import Database
from tests.support.audit_build import ORIGIN, WITNESS_URL, build, clear, messages
from tests.support.audit_log import read_log
from tests.support.local_http import pointing, serving


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    await clear(db)
    yield db


@pytest.fixture
async def store(url: str) -> AsyncIterator[WitnessStore]:
    s = await WitnessStore.open(url)
    async with s.engine.begin() as conn:
        for table in ("witness_heads", "witness_checkpoints", "witness_log_keys"):
            await conn.exec_driver_sql(f"DELETE FROM {table}")
    yield s
    await s.close()


COSIGNER = CosignatureSigner.generate("witness.test/w1")
Serve = Callable[[ASGIApp], Awaitable[AbstractResolver]]


@pytest.fixture
async def served() -> AsyncIterator[Serve]:
    """Serves a witness app on loopback until the test ends; returns a resolver sending WITNESS_URL's host to it."""
    async with contextlib.AsyncExitStack() as stack:

        async def serve(app: ASGIApp) -> AbstractResolver:
            return pointing(WITNESS_URL, await stack.enter_async_context(serving(app)))

        yield serve


def settings_with(key_file: Path) -> AuditSettings:
    return AuditSettings(
        origin=ORIGIN,
        key_file=key_file,
        checkpoint_every=1000,
        checkpoint_interval_ms=3_600_000,
        witnesses=((WITNESS_URL, COSIGNER.verifier().vkey()),),
    )


def pushing(log: AuditLog, resolver: AbstractResolver) -> AuditLog:
    log.after_checkpoint.append(WitnessPusher(log, log.settings.witnesses, resolver=resolver))
    return log


async def test_rotation_hands_over_to_the_new_key_and_keeps_old_checkpoints_verifiable(
    fresh: Database, store: WitnessStore, tmp_path: Path, served: Serve
) -> None:
    old = NoteSigner.from_key(generate_signer_key(ORIGIN))
    settings = settings_with(tmp_path / "audit.key")
    settings.key_file.write_text(old.key_string() + "\n")
    # The witness is configured with the old key only.
    resolver = await served(witness_app(store, COSIGNER, {ORIGIN: [old.verifier()]}))
    log = pushing(AuditLog(fresh.engine, settings, old), resolver)
    await build(fresh, n=30, log=log)
    await log.stop()
    before = await log.checkpoint(10)
    assert before is not None

    done = await rotate(fresh.engine, settings, resolver=resolver)
    new = load_signer(settings)
    assert done.new_vkey == new.verifier().vkey() != done.old_vkey == old.verifier().vkey()
    assert history_file(settings).read_text().split() == [done.old_vkey, done.new_vkey]
    assert not settings.key_file.with_name("audit.key.next").exists()
    assert settings.key_file.stat().st_mode & 0o777 == 0o600
    # Recorded, and covered by the hand-over checkpoint, which both keys signed.
    rotated = (await read_log(fresh.url)).leaves[-1]
    assert (rotated.index, rotated.record["type"]) == (30, "key.rotated")
    assert rotated.record["keys"] == "audit signing (Ed25519)"
    assert (rotated.record["old"], rotated.record["new"]) == (done.old_vkey, done.new_vkey)
    assert done.handover.checkpoint.size == 31
    assert f"\n{HANDOVER} {done.new_vkey}\n" in done.handover.note
    assert open_note(done.handover.note, [old.verifier()]).names == (ORIGIN,)
    assert open_note(done.handover.note, [new.verifier()]).names == (ORIGIN,)
    # The witness followed: it cosigned the hand-over, and now cosigns checkpoints signed by the new key alone.
    assert [r.status for r in done.witnesses] == [200]
    assert await store.log_keys(ORIGIN) == [done.new_vkey]
    log = pushing(AuditLog(fresh.engine, settings, new), resolver)
    await build(fresh, n=20, log=log)
    await log.stop()
    assert await store.head(ORIGIN) == (51, (await log.root())[1])
    latest = await log.latest_checkpoint()
    assert latest is not None
    with pytest.raises(NoteError):
        open_note(latest.note, [old.verifier()])  # new checkpoints verify with the new key only

    # Old checkpoints stay verifiable with the old key; a verifier starting from it follows the hand-over.
    assert open_note(before.note, [old.verifier()]).names == (ORIGIN,)
    for start in (LogKeys([old.verifier()]), load_log_keys(settings)):
        report = await verify_database(fresh.engine, start, witnesses=[COSIGNER.verifier()])
        assert report.ok, messages(report)
        assert report.keys == (done.old_vkey, done.new_vkey)
        assert (report.checkpoints, report.checkpoints_ok, report.latest_signed) == (6, 6, 51)

    # After the hand-over the old key is retired: what it signs now is refused by the verifier and the witness.
    retired = pushing(AuditLog(fresh.engine, settings, old), resolver)
    await retired.append({"v": 1, "type": "admin.action", "id": "f" * 32, "time": 1})
    signed = await retired.sign_checkpoint()
    assert signed is not None
    results = await WitnessPusher(retired, settings.witnesses, resolver=resolver).push(signed)
    assert [r.status for r in results] == [403]
    report = await verify_database(fresh.engine, LogKeys([old.verifier()]))
    assert "checkpoint at size 52: signature does not verify: note has no signature from a known key" in messages(
        report
    )
    await retired.stop()

    # A restarted witness, still configured with the old key only, keeps the key it learned.
    restarted = httpx.ASGITransport(app=witness_app(store, COSIGNER, {ORIGIN: [old.verifier()]}))
    async with httpx.AsyncClient(transport=restarted, base_url=WITNESS_URL) as client:
        body = f"old 51\n\n{signed.note}"
        assert (await client.post("/add-checkpoint", content=body)).status_code == 403


async def test_a_handover_without_the_new_keys_signature_is_refused(store: WitnessStore) -> None:
    old = NoteSigner.from_key(generate_signer_key(ORIGIN))
    claimed = NoteSigner.from_key(generate_signer_key(ORIGIN))
    root = bytes(32)
    forged = old.sign(Checkpoint(ORIGIN, 5, root, (f"{HANDOVER} {claimed.verifier().vkey()}",)).body())
    with pytest.raises(NoteError, match="not signed by the new key"):
        LogKeys([old.verifier()]).follow(forged)
    transport = httpx.ASGITransport(app=witness_app(store, COSIGNER, {ORIGIN: [old.verifier()]}))
    async with httpx.AsyncClient(transport=transport, base_url=WITNESS_URL) as client:
        response = await client.post("/add-checkpoint", content=f"old 0\n\n{forged}")
    assert response.status_code == 403 and "not signed by the new key" in response.text
    assert await store.log_keys(ORIGIN) == [] and await store.head(ORIGIN) is None
    # A well-formed plain checkpoint from the old key is still fine.
    plain = SignedCheckpoint.sign(Checkpoint(ORIGIN, 5, root), old).note
    assert LogKeys([old.verifier()]).follow(plain).size == 5


async def cli(*args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, app, ["audit", *args])


async def test_cli_rotate_then_verify(fresh: Database, tmp_path: Path) -> None:
    old = NoteSigner.from_key(generate_signer_key(ORIGIN))
    key_file = tmp_path / "audit.key"
    key_file.write_text(old.key_string() + "\n")
    config = tmp_path / "deputy.toml"
    config.write_text(f'''public_url = "http://127.0.0.1:8000"
data_dir = "{tmp_path / "data"}"
database_url = "{fresh.url}"

[servers.demo]
url = "http://127.0.0.1:9000/mcp"

[audit]
origin = "{ORIGIN}"
key_file = "{key_file}"
''')
    await build(fresh, n=20, log=AuditLog(fresh.engine, settings_with(key_file), old))
    result = await cli("key", "rotate", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "hand-over checkpoint at size 21, signed by the old and the new key" in result.output
    new_vkey = result.output.strip().splitlines()[-1]
    result = await cli("key", "-c", str(config))
    assert result.exit_code == 0 and result.output.strip() == new_vkey
    result = await cli("key", "history", "-c", str(config))
    assert result.output.split() == [old.verifier().vkey(), new_vkey]
    result = await cli("verify", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "2 (followed through 1 hand-overs)" in result.output
    result = await cli("verify", "-c", str(config), "--key", old.verifier().vkey())
    assert result.exit_code == 0, result.output
    # Checkpoints from before the rotation still serve proofs; an export verifies offline from the first key.
    result = await cli("prove", "5", "--size", "10", "-c", str(config))
    assert result.exit_code == 0 and f"{ORIGIN}\n10\n" in result.output, result.output
    exported = tmp_path / "audit.jsonl"
    result = await cli("export", "-o", str(exported), "-c", str(config))
    assert result.exit_code == 0, result.output
    result = await cli("verify", "--file", str(exported), "--key", old.verifier().vkey())
    assert result.exit_code == 0 and "followed through 1 hand-overs" in result.output, result.output
    result = await cli("verify", "--file", str(exported), "--key", new_vkey)
    assert result.exit_code == 1 and "signature does not verify" in result.output
    checkpoint = await cli("checkpoint", "-c", str(config))
    assert checkpoint.exit_code == 0 and checkpoint.output.startswith(f"{ORIGIN}\n21\n")
    assert HANDOVER in checkpoint.output


async def test_a_witness_down_during_the_rotation_follows_the_handover_later(
    fresh: Database, store: WitnessStore, tmp_path: Path, served: Serve
) -> None:
    old = NoteSigner.from_key(generate_signer_key(ORIGIN))
    settings = settings_with(tmp_path / "audit.key")
    settings.key_file.write_text(old.key_string() + "\n")
    resolver = await served(witness_app(store, COSIGNER, {ORIGIN: [old.verifier()]}))
    log = pushing(AuditLog(fresh.engine, settings, old), resolver)
    await build(fresh, n=20, log=log)
    await log.stop()

    down = pointing(WITNESS_URL, OSError(errno.EHOSTUNREACH, "witness down"))
    done = await rotate(fresh.engine, settings, resolver=down)
    assert [r.status for r in done.witnesses] == [None]
    assert await store.log_keys(ORIGIN) == []  # it never saw the hand-over

    # Back up: the first checkpoint signed by the new key alone is refused (403), so the pusher sends the
    # hand-over it missed first, then the checkpoint again.
    log = pushing(AuditLog(fresh.engine, settings, load_signer(settings)), resolver)
    await build(fresh, n=10, log=log)
    await log.stop()
    assert await store.log_keys(ORIGIN) == [done.new_vkey]
    assert await store.head(ORIGIN) == (31, (await log.root())[1])
    assert [size for size in (21, 31) if await stored_cosignatures(fresh.engine, size)] == [21, 31]
