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

The spec requires checking ``old`` against the stored size and storing the new head
atomically. ``WitnessStore.advance`` reads the head, runs the caller's checks, then writes
with a conditional ``UPDATE ... WHERE origin = ? AND size = ? AND root = ?`` (or an
``INSERT`` relying on the primary key for a first checkpoint); a writer that lost a race
changes no row (or hits the key) and gets a 409, so two requests from one old size can
never both be cosigned.

Not implemented: ``sign-subtree`` (OPTIONAL) and the monitoring ``GET
<origin hash>/checkpoint`` (SHOULD), which would need the whole cosigned note stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from deputy.audit.checkpoint import Checkpoint, CheckpointError, parse_decimal
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.merkle import EMPTY_ROOT, ProofError, verify_consistency
from deputy.audit.note import NoteError, NoteFormatError, Verifier, b64decode_strict, parse_note, verify_note
from deputy.storage.db import Database

log = logging.getLogger(__name__)

MAX_PROOF_LINES = 63  # "The client MUST NOT send more than 63 consistency proof lines."
# A note with 16 post-quantum signatures is under 100 kB; anything far larger is not a request.
MAX_BODY = 256 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"

metadata = MetaData()
witness_heads = Table(
    "witness_heads",
    metadata,
    Column("origin", String(1024), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
)


class Conflict(Exception):
    """``old`` is not the stored size; carries the stored size for the 409 body."""

    def __init__(self, stored_size: int) -> None:
        super().__init__(f"stored size is {stored_size}")
        self.stored_size = stored_size


class Inconsistent(Exception):
    """The new checkpoint is not consistent with the stored one (422)."""


Check = Callable[[int, bytes | None], None]
"""``check(stored_size, stored_root)``: raise ``Conflict`` or ``Inconsistent`` to refuse."""


class WitnessStore:
    """The latest cosigned tree head per origin, in ``witness_heads`` (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        # Database gives SQLite its WAL mode and busy timeout, PostgreSQL its pool.
        self.database = Database(url)
        self.engine = self.database.engine
        self._created = False

    @classmethod
    async def open(cls, url: str) -> WitnessStore:
        store = cls(url)
        await store.create()
        return store

    async def create(self) -> None:
        """Create the table if missing (idempotent)."""
        if not self._created:
            async with self.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            self._created = True

    async def close(self) -> None:
        await self.database.dispose()

    async def head(self, origin: str) -> tuple[int, bytes] | None:
        async with self.engine.connect() as conn:
            return await self._read(conn, origin)

    async def _read(self, conn: AsyncConnection, origin: str) -> tuple[int, bytes] | None:
        row = (
            await conn.execute(
                select(witness_heads.c.size, witness_heads.c.root).where(witness_heads.c.origin == origin)
            )
        ).first()
        return None if row is None else (int(row.size), bytes(row.root))

    async def advance(self, origin: str, old_size: int, new_size: int, new_root: bytes, check: Check) -> None:
        """Store (new_size, new_root) if the head is still what ``check`` approved.

        Raises ``Conflict`` when the stored size is not ``old_size`` — including when a
        concurrent request changed it between the read and the write.
        """
        try:
            async with self.engine.begin() as conn:
                current = await self._read(conn, origin)
                stored_size, stored_root = current if current is not None else (0, None)
                if stored_size != old_size:
                    raise Conflict(stored_size)
                check(stored_size, stored_root)
                if current is None:
                    # The primary key makes a concurrent first insert for this origin fail.
                    await conn.execute(insert(witness_heads).values(origin=origin, size=new_size, root=new_root))
                    return
                result = await conn.execute(
                    update(witness_heads)
                    .where(
                        witness_heads.c.origin == origin,
                        witness_heads.c.size == stored_size,
                        witness_heads.c.root == stored_root,
                    )
                    .values(size=new_size, root=new_root)
                )
                if result.rowcount != 1:
                    raise _LostRace
        except (_LostRace, IntegrityError):
            # Another request moved the head after our read; report what is stored now.
            now = await self.head(origin)
            raise Conflict(now[0] if now is not None else 0) from None


class _LostRace(Exception):
    pass


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
    clock: Callable[[], float] = time.time,
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
            verify_note(parsed, keys)
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

        try:
            await store.advance(checkpoint.origin, req.old_size, checkpoint.size, checkpoint.root, check)
        except Conflict as exc:
            # Exactly the spec's media type: Starlette would append "; charset=utf-8" to a text/* media_type.
            return Response(
                f"{exc.stored_size}\n".encode(), status_code=409, headers={"content-type": SIZE_CONTENT_TYPE}
            )
        except Inconsistent as exc:
            log.warning("inconsistent checkpoint for %s at size %d: %s", checkpoint.origin, checkpoint.size, exc)
            return _text(422, f"checkpoint is not consistent with the stored one: {exc}")
        # Stored and committed: only now may the cosignature leave the witness.
        line = signer.cosign(parsed.text, max(1, int(clock())))
        return PlainTextResponse(line)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await store.create()
        try:
            yield
        finally:
            await store.close()

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])], lifespan=lifespan)
