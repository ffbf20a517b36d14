"""A transparency log witness: the ``add-checkpoint`` call of C2SP tlog-witness.

``POST /add-checkpoint`` (section "add-checkpoint") takes ``old <size>\\n``, up to 63
base64 consistency proof lines, an empty line and a checkpoint note
(c2sp.org/tlog-checkpoint). The witness answers:

- 400: a malformed body, or an old size larger than the checkpoint size;
- 404: a checkpoint origin it is not configured for;
- 403: no valid signature from a trusted key of that origin, or a trusted key's
  signature that does not verify;
- 409 (``Content-Type: text/x.tlog.size``, body ``<stored size>\\n``): ``old`` is not the
  size of the latest checkpoint it cosigned for the origin (0 if none);
- 422: a size-0 checkpoint without the empty-tree root, a proof sent with old size 0,
  a failing RFC 6962 consistency proof, or the same size with a different root;
- 200: the cosignature line(s) (c2sp.org/tlog-cosignature, cosignature/v1), sent only
  after the new tree head is stored.

A checkpoint that hands the log over to a new key (:mod:`deputy.audit.log_keys`: an extension
line naming the new vkey, signed by a trusted key and by the new one) is cosigned like any
other; from then on only the new key is trusted for that origin (kept in the store, so a
restart keeps it). A hand-over without a valid signature from the new key is a 403.

``GET /checkpoint?origin=ORIGIN`` (Deputy's read endpoint, for verifiers and monitors) answers
the latest checkpoint it cosigned for the origin, as a note carrying the log's signatures and
this witness's cosignature line; 404 if none.

The spec requires checking ``old`` against the stored size and storing the new head
atomically (:class:`deputy.audit.witness_store.WitnessStore`).

Not implemented: ``sign-subtree`` (OPTIONAL).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from deputy.audit.checkpoint import Checkpoint, CheckpointError, parse_decimal
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.log_keys import open_checkpoint
from deputy.audit.merkle import EMPTY_ROOT, ProofError, verify_consistency
from deputy.audit.note import (
    NoteError,
    NoteFormatError,
    NoteVerifier,
    ParsedNote,
    Verifier,
    b64decode_strict,
    parse_note,
)
from deputy.audit.witness_store import Check, Conflict, WitnessStore
from deputy.clock import wall

__all__ = ["SIZE_CONTENT_TYPE", "Check", "Conflict", "WitnessStore", "witness_app"]

log = logging.getLogger(__name__)

MAX_PROOF_LINES = 63  # "The client MUST NOT send more than 63 consistency proof lines."
# A note with 16 post-quantum signatures is under 100 kB; anything far larger is not a request.
MAX_BODY = 256 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"

class Inconsistent(Exception):
    """The new checkpoint is not consistent with the stored one (422)."""


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` request body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Split the body into old size, proof hashes and checkpoint note; raises ``BadRequest``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    pos = 0

    def next_line() -> str:
        nonlocal pos
        end = text.find("\n", pos)
        if end < 0:
            raise BadRequest("body ends before the empty line that precedes the checkpoint")
        line, pos = text[pos:end], end + 1
        return line

    first = next_line()
    if not first.startswith("old "):
        raise BadRequest("first line must be 'old <size>'")
    try:
        old_size = parse_decimal(first[4:], "old size")
    except CheckpointError as exc:
        raise BadRequest(str(exc)) from None
    proof: list[bytes] = []
    while (line := next_line()) != "":
        if len(proof) == MAX_PROOF_LINES:
            raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
        try:
            node = b64decode_strict(line, "consistency proof line")
        except NoteError as exc:
            raise BadRequest(str(exc)) from None
        if len(node) != 32:
            raise BadRequest("consistency proof line is not a 32-byte hash")
        proof.append(node)
    return AddCheckpoint(old_size, tuple(proof), text[pos:])


def _text(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


async def _read_body(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def witness_app(
    store: WitnessStore,
    signer: CosignatureSigner,
    logs: Mapping[str, Sequence[Verifier]],
    *,
    clock: Callable[[], float] = wall,
) -> Starlette:
    """The witness's ASGI app; ``logs`` maps each accepted origin to its log's verifier keys.

    Its lifespan creates the table and disposes the store's engine; a caller that does
    not run the lifespan (an ASGI test transport) calls ``store.create()`` itself.
    """
    for origin, keys in logs.items():
        if not keys:
            raise ValueError(f"log {origin} has no keys")
        ids = [(k.name, k.key_id) for k in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"log {origin} has two keys with the same name and key ID")
    trusted = {origin: tuple(keys) for origin, keys in logs.items()}

    async def add_checkpoint(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return _text(413, f"body larger than {MAX_BODY} bytes")
        try:
            req = parse_add_checkpoint(body)
            parsed = parse_note(req.note)
            checkpoint = Checkpoint.parse(parsed.text)
        except (BadRequest, NoteFormatError, CheckpointError) as exc:
            return _text(400, f"malformed request: {exc}")
        keys = trusted.get(checkpoint.origin)
        if keys is None:
            return _text(404, "unknown log origin")
        try:
            learned = [NoteVerifier.from_vkey(v) for v in await store.log_keys(checkpoint.origin)]
            log_keys = learned or keys
            _, new_key = open_checkpoint(parsed, log_keys)
        except NoteFormatError as exc:
            return _text(400, f"malformed checkpoint: {exc}")
        except NoteError as exc:
            return _text(403, f"checkpoint not signed by the log: {exc}")
        if req.old_size > checkpoint.size:
            return _text(400, f"old size {req.old_size} is larger than the checkpoint size {checkpoint.size}")
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            return _text(422, "a checkpoint of size 0 must have the empty tree's root")
        if req.old_size == 0 and req.proof:
            return _text(422, "old size 0 needs no consistency proof")

        def check(stored_size: int, stored_root: bytes | None) -> None:
            if stored_root is None:
                return  # never cosigned: old is 0, and the empty tree is consistent with any tree
            try:
                verify_consistency(stored_size, checkpoint.size, stored_root, checkpoint.root, req.proof)
            except ProofError as exc:
                raise Inconsistent(str(exc)) from None

        # Signed now, sent only once the head is stored: the cosigned note is kept in the same transaction.
        line = signer.cosign(parsed.text, max(1, int(clock())))
        try:
            await store.advance(
                checkpoint.origin,
                req.old_size,
                checkpoint.size,
                checkpoint.root,
                check,
                note=_served_note(parsed, [*log_keys, *([new_key] if new_key is not None else [])], line),
                keys=[new_key.vkey()] if new_key is not None else [],
            )
        except Conflict as exc:
            # Exactly the spec's media type: Starlette would append "; charset=utf-8" to a text/* media_type.
            return Response(
                f"{exc.stored_size}\n".encode(), status_code=409, headers={"content-type": SIZE_CONTENT_TYPE}
            )
        except Inconsistent as exc:
            log.warning("inconsistent checkpoint for %s at size %d: %s", checkpoint.origin, checkpoint.size, exc)
            return _text(422, f"checkpoint is not consistent with the stored one: {exc}")
        if new_key is not None:
            log.warning("log %s handed over to key %s at size %d", checkpoint.origin, new_key.vkey(), checkpoint.size)
        # Stored and committed: only now may the cosignature leave the witness.
        return PlainTextResponse(line)

    async def latest_checkpoint(request: Request) -> Response:
        origin = request.query_params.get("origin", "")
        note = await store.latest_note(origin) if origin in trusted else None
        if note is None:
            return _text(404, "no checkpoint cosigned for this origin")
        return PlainTextResponse(note)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await store.create()
        try:
            yield
        finally:
            await store.close()

    routes = [
        Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
        Route("/checkpoint", latest_checkpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _served_note(parsed: ParsedNote, log_keys: Sequence[Verifier], cosignature: str) -> str:
    """The note kept and served at ``GET /checkpoint``: the text, the log keys' signatures (each verified by
    :func:`open_checkpoint`) and this witness's new cosignature — nothing else the sender put there. A replayed note
    carrying the witness's earlier cosignature, or a junk line under its name, would otherwise be served, and a
    verifier refuses a note with two lines from one key: anyone could spoil the anchor until the next push."""
    known = {(key.name, key.key_id) for key in log_keys}
    kept = "".join(sig.line for sig in parsed.signatures if (sig.name, sig.key_id) in known)
    return parsed.text + "\n" + kept + cosignature
