"""Anchors: checkpoints a verifier trusts from outside the log, so that a rewrite of the database shows.

Whoever can write the database can rewrite records and recompute every tree node and the head without any key,
and delete the signed checkpoints above the change (or every row). The log alone then looks whole. What they cannot
rewrite is a checkpoint kept elsewhere:

- a *trusted checkpoint*: the C2SP signed note ``deputy audit checkpoint`` printed, kept by an auditor and given
  back with ``--trusted FILE`` (its signature is checked with the log's keys);
- a *witness's latest cosigned checkpoint*, fetched from the witness (``GET {url}/checkpoint?origin=...``, served by
  ``deputy witness serve``), with the witness's cosignature (C2SP tlog-cosignature) checked with its key.

Each anchor must be a prefix of the log (RFC 9162 §2.1.4): the log has at least its size, and the root recomputed
from the records at that size is its root (:class:`deputy.audit.verify.tree.Tree`).

A witness is asked through :mod:`deputy.outbound_http` (no redirect followed, at most ``MAX_NOTE`` bytes read).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from aiohttp.abc import AbstractResolver

from deputy.audit.checkpoint import Checkpoint, CheckpointError
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.note import NoteError, parse_note, verify_note
from deputy.audit.verify.report import VerifyError
from deputy.outbound_http import BodyTooLarge, NoAnswer, fetch, open_session, step_timeout

MAX_NOTE = 256 * 1024  # a checkpoint with many cosignatures is a few kB
TIMEOUT = 10.0  # each step: connecting, each read


class AnchorError(VerifyError):
    """An anchor that cannot be read at all (not a checkpoint, a witness that cannot be reached)."""


@dataclass(frozen=True)
class Anchor:
    label: str  # says where it came from, in messages
    note: str
    checkpoint: Checkpoint  # parsed, its log signature not yet checked (the log's keys are followed first)


def trusted_checkpoint(note: str, label: str) -> Anchor:
    """A kept checkpoint note (the output of ``deputy audit checkpoint``); raises ``AnchorError``."""
    try:
        checkpoint = Checkpoint.parse(parse_note(note).text)
    except (NoteError, CheckpointError) as exc:
        raise AnchorError(f"{label} is not a signed checkpoint: {exc}") from None
    return Anchor(label, note, checkpoint)


def witnessed_checkpoint(note: str, witness: CosignatureVerifier, label: str) -> Anchor:
    """A witness's cosigned checkpoint: the witness's own cosignature must verify; raises ``AnchorError``."""
    anchor = trusted_checkpoint(note, label)
    try:
        verify_note(parse_note(note), [witness])
    except NoteError as exc:
        raise AnchorError(f"{label} does not carry a valid cosignature of the witness: {exc}") from None
    return anchor


async def fetch_witnessed(
    url: str, witness: CosignatureVerifier, origin: str, *, resolver: AbstractResolver | None = None
) -> Anchor:
    """The latest checkpoint of ``origin`` that the witness at ``url`` cosigned; raises ``AnchorError``.

    ``resolver``: which addresses the witness's host name means (the system's when None)."""
    label = f"witness {witness.name}'s latest cosigned checkpoint"
    target = f"{url.rstrip('/')}/checkpoint?origin={quote(origin, safe='')}"
    try:
        async with open_session(step_timeout(TIMEOUT), resolver=resolver) as session:
            answer = await fetch(session, "GET", target, max_bytes=MAX_NOTE)
    except BodyTooLarge:
        raise AnchorError(f"{label}: the answer from {url} is larger than {MAX_NOTE} bytes") from None
    except NoAnswer as exc:
        raise AnchorError(f"{label}: cannot reach {url}: {exc.cause_name}") from None
    if answer.status == 404:
        raise AnchorError(f"{label}: {url} has no checkpoint of {origin} (never cosigned, or not its log)")
    if answer.status != 200:
        raise AnchorError(f"{label}: {url} answered HTTP {answer.status}")
    try:
        note = answer.body.decode("utf-8")
    except UnicodeDecodeError:
        raise AnchorError(f"{label}: the answer is not UTF-8") from None
    return witnessed_checkpoint(note, witness, label)
