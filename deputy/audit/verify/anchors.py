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
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx

from deputy.audit.checkpoint import Checkpoint, CheckpointError
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.note import NoteError, parse_note, verify_note
from deputy.audit.verify.report import VerifyError

MAX_NOTE = 256 * 1024  # a checkpoint with many cosignatures is a few kB
TIMEOUT = 10.0


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
    url: str, witness: CosignatureVerifier, origin: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> Anchor:
    """The latest checkpoint of ``origin`` that the witness at ``url`` cosigned; raises ``AnchorError``."""
    label = f"witness {witness.name}'s latest cosigned checkpoint"
    target = f"{url.rstrip('/')}/checkpoint?origin={quote(origin, safe='')}"
    try:
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, transport=transport) as client,
            client.stream("GET", target) as response,
        ):
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_NOTE:
                    raise AnchorError(f"{label}: the answer from {url} is larger than {MAX_NOTE} bytes")
    except httpx.HTTPError as exc:
        raise AnchorError(f"{label}: cannot reach {url}: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise AnchorError(f"{label}: {url} has no checkpoint of {origin} (never cosigned, or not its log)")
    if response.status_code != 200:
        raise AnchorError(f"{label}: {url} answered HTTP {response.status_code}")
    try:
        note = body.decode("utf-8")
    except UnicodeDecodeError:
        raise AnchorError(f"{label}: the answer is not UTF-8") from None
    return witnessed_checkpoint(note, witness, label)
