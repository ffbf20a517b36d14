"""The witness's state, per log origin: the latest tree head it cosigned, that checkpoint as it cosigned it, and
the log keys it learned from a hand-over (SQLite or PostgreSQL; tables created on first use).

- ``witness_heads``: (origin, size, root), what C2SP tlog-witness requires a witness to keep;
- ``witness_checkpoints``: the cosigned note (the log's checkpoint with the witness's cosignature line), served to
  monitors and verifiers (``GET /checkpoint``) so that a log truncated or rewritten after it shows;
- ``witness_log_keys``: the log's current verifier keys after a key hand-over (:mod:`deputy.audit.log_keys`),
  which replace the configured ones for that origin.

``advance`` reads the head, runs the caller's checks, then writes with a conditional ``UPDATE ... WHERE origin = ?
AND size = ? AND root = ?`` (or an ``INSERT`` relying on the primary key for a first checkpoint), and the note and
keys in the same transaction; a writer that lost a race changes no row (or hits the key) and gets a ``Conflict``,
so two requests from one old size can never both be cosigned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, Text, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from deputy.storage.db import Database

metadata = MetaData()
witness_heads = Table(
    "witness_heads",
    metadata,
    Column("origin", String(1024), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
)
witness_checkpoints = Table(
    "witness_checkpoints",
    metadata,
    Column("origin", String(1024), primary_key=True),
    Column("note", Text, nullable=False),
)
witness_log_keys = Table(
    "witness_log_keys",
    metadata,
    Column("origin", String(1024), primary_key=True),
    Column("vkeys", Text, nullable=False),  # one vkey a line
)

Check = Callable[[int, bytes | None], None]
"""``check(stored_size, stored_root)``: raise to refuse (the witness raises ``Inconsistent``)."""


class Conflict(Exception):
    """``old`` is not the stored size; carries the stored size for the 409 body."""

    def __init__(self, stored_size: int) -> None:
        super().__init__(f"stored size is {stored_size}")
        self.stored_size = stored_size


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

    async def advance(
        self,
        origin: str,
        old_size: int,
        new_size: int,
        new_root: bytes,
        check: Check,
        *,
        note: str | None = None,
        keys: Sequence[str] = (),
    ) -> None:
        """Store (new_size, new_root) — and the cosigned ``note``, and the log's new ``keys`` after a hand-over —
        if the head is still what ``check`` approved.

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
                await self._keep(conn, origin, note, keys)
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

    @staticmethod
    async def _keep(conn: AsyncConnection, origin: str, note: str | None, keys: Sequence[str]) -> None:
        # Replaced inside the head's transaction: a lost race rolls these back with it.
        if note is not None:
            await conn.execute(delete(witness_checkpoints).where(witness_checkpoints.c.origin == origin))
            await conn.execute(insert(witness_checkpoints).values(origin=origin, note=note))
        if keys:
            await conn.execute(delete(witness_log_keys).where(witness_log_keys.c.origin == origin))
            await conn.execute(insert(witness_log_keys).values(origin=origin, vkeys="".join(f"{k}\n" for k in keys)))

    async def latest_note(self, origin: str) -> str | None:
        """The latest checkpoint of ``origin`` as cosigned (log signatures and this witness's cosignature)."""
        async with self.engine.connect() as conn:
            note = (
                await conn.execute(select(witness_checkpoints.c.note).where(witness_checkpoints.c.origin == origin))
            ).scalar()
        return None if note is None else str(note)

    async def log_keys(self, origin: str) -> list[str]:
        """The log's keys learned from a hand-over (empty: none learned, the configured keys apply)."""
        async with self.engine.connect() as conn:
            vkeys = (
                await conn.execute(select(witness_log_keys.c.vkeys).where(witness_log_keys.c.origin == origin))
            ).scalar()
        return str(vkeys).split() if vkeys else []


class _LostRace(Exception):
    pass
