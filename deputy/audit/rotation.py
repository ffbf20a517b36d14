"""Rotate the audit log's signing key: a recorded, signed hand-over that verifiers and witnesses follow.

Steps (each can be rerun after a crash; the new key is never lost once the log names it):

1. the new signer key is written to ``<key_file>.next`` (0600, created exclusively; reused if it is already there);
2. a ``key.rotated`` record (``keys: "audit signing (Ed25519)"``, the old and the new vkey) is appended, and the
   head, which now includes it, is signed as a *hand-over checkpoint* by the old and the new key
   (:mod:`deputy.audit.log_keys`: C2SP signed-note allows several signatures on one note);
3. the hand-over is pushed to the configured witnesses (C2SP tlog-witness ``add-checkpoint``): a witness that
   trusts the old key checks both signatures and from then on accepts only the new key for this origin;
4. the old vkey and the new one are added to ``<key_file>.history`` (oldest first, public keys only), then
   ``<key_file>.next`` replaces ``<key_file>``: the old private key is gone.

Checkpoints signed before the hand-over stay verifiable with the old key, which the history keeps; a verifier that
starts from the old key follows the hand-over to the new one. Every Deputy process must be stopped while this runs
and restarted after it: a process still holding the old key would sign checkpoints that nobody following the chain
accepts any more (which verification then reports).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aiohttp.abc import AbstractResolver
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.audit.checkpoint import Checkpoint, SignedCheckpoint
from deputy.audit.log import AuditLog
from deputy.audit.log_keys import HandOverSigner, handover_key
from deputy.audit.note import NoteError, NoteSigner, generate_signer_key, parse_note
from deputy.audit.records import new_record
from deputy.audit.settings import AuditSettings, history_file, load_signer
from deputy.audit.witness_push import PushResult, WitnessPusher

KEYS = "audit signing (Ed25519)"


class RotationError(RuntimeError):
    """The rotation cannot be done (no current key, a concurrent checkpoint); nothing was half applied."""


@dataclass(frozen=True)
class Rotation:
    old_vkey: str
    new_vkey: str
    handover: SignedCheckpoint
    witnesses: list[PushResult]


def next_key_file(settings: AuditSettings) -> Path:
    return settings.key_file.with_name(settings.key_file.name + ".next")


def _next_signer(settings: AuditSettings) -> NoteSigner:
    path = next_key_file(settings)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(generate_signer_key(settings.origin) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    try:
        signer = NoteSigner.from_key(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, NoteError) as exc:
        raise RotationError(f"cannot read the new key in {path}: {exc}") from None
    if signer.name != settings.origin:
        raise RotationError(f"the new key in {path} is not named {settings.origin!r}")
    return signer


async def _handover(log: AuditLog, old: NoteSigner, new: NoteSigner) -> SignedCheckpoint:
    latest = await log.latest_checkpoint()
    if latest is not None:
        named = handover_key(Checkpoint.parse(parse_note(latest.note).text))
        if named is not None and named == new.verifier():
            return latest  # a rerun after a crash: the hand-over is already stored
    await log.append(
        new_record("key.rotated", keys=KEYS, old=old.verifier().vkey(), new=new.verifier().vkey())
    )
    try:
        signed = await log.sign_checkpoint()
    finally:
        await log.stop()
    if signed is None:
        raise RotationError(
            "another process checkpointed the log first: stop every Deputy process, then run the rotation again"
        )
    return signed


def _write_history(settings: AuditSettings, vkeys: list[str]) -> None:
    path = history_file(settings)
    known = path.read_text(encoding="utf-8").split() if path.exists() else []
    lines = known + [v for v in vkeys if v not in known]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(f"{v}\n" for v in lines), encoding="utf-8")
    os.replace(temporary, path)


async def rotate(
    engine: AsyncEngine, settings: AuditSettings, *, resolver: AbstractResolver | None = None
) -> Rotation:
    """Rotate the key of the log in ``engine``'s (migrated) database; see the module docstring.

    ``resolver``: which addresses the witnesses' host names mean (the system's when None)."""
    try:
        old = load_signer(settings)
    except ValueError as exc:
        raise RotationError(str(exc)) from None
    new = _next_signer(settings)
    handover = HandOverSigner(old.name, old.private_key, new=new)
    log = AuditLog(engine, settings, handover)
    signed = await _handover(log, old, new)
    pusher = WitnessPusher(log, settings.witnesses, resolver=resolver)
    results = await pusher.push(signed) if settings.witnesses else []
    _write_history(settings, [old.verifier().vkey(), new.verifier().vkey()])
    os.replace(next_key_file(settings), settings.key_file)
    return Rotation(old.verifier().vkey(), new.verifier().vkey(), signed, results)
