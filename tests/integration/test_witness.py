"""The tlog-witness add-checkpoint call, driven through the real Starlette app on SQLite and PostgreSQL.

Every status code of C2SP tlog-witness "add-checkpoint" is provoked, the 200 cosignatures
are verified as tlog-cosignature v1, and the check-and-store is shown atomic both by
concurrent requests and by a write that loses a race forced between read and update.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deputy.audit.checkpoint import Checkpoint
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.merkle import EMPTY_ROOT, MemoryTree, leaf_hash
from deputy.audit.note import NoteSigner, NoteVerifier, Verifier, open_note
from deputy.audit.witness import SIZE_CONTENT_TYPE, Conflict, WitnessStore, witness_app
from tests.integration.conftest import unique

NOW = 1_700_000_000


class Log:
    """A log under test: its own origin, key and in-memory Merkle tree."""

    def __init__(self, origin: str | None = None) -> None:
        self.origin = origin or unique("example.com/log")
        self.signer = NoteSigner(self.origin, Ed25519PrivateKey.generate())
        self.tree = MemoryTree()

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.tree.append(leaf_hash(f"{self.origin} entry {self.tree.size}".encode()))

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = self.tree.size if size is None else size
        return Checkpoint(self.origin, size, self.tree.root(size))

    def note(self, size: int | None = None, signer: NoteSigner | None = None) -> str:
        return (signer or self.signer).sign(self.checkpoint(size).body())

    def body(self, old: int, size: int | None = None, proof: Sequence[bytes] | None = None, note: str = "") -> str:
        size = self.tree.size if size is None else size
        if proof is None:
            proof = self.tree.consistency_proof(old, size) if old else []
        lines = "".join(base64.b64encode(p).decode() + "\n" for p in proof)
        return f"old {old}\n{lines}\n{note or self.note(size)}"


@pytest.fixture(scope="module")
async def store(url: str) -> AsyncIterator[WitnessStore]:
    s = await WitnessStore.open(url)
    yield s
    await s.close()


@pytest.fixture(scope="module")
def cosigner() -> CosignatureSigner:
    return CosignatureSigner.generate("witness.example.com/w1")


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
async def client(store: WitnessStore, cosigner: CosignatureSigner, log: Log) -> AsyncIterator[httpx.AsyncClient]:
    other = Log("example.com/other")
    logs: dict[str, list[Verifier]] = {log.origin: [log.signer.verifier()], other.origin: [other.signer.verifier()]}
    app = witness_app(store, cosigner, logs, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://witness") as c:
        yield c


async def post(client: httpx.AsyncClient, body: str | bytes) -> httpx.Response:
    return await client.post("/add-checkpoint", content=body.encode() if isinstance(body, str) else body)


def assert_cosigned(response: httpx.Response, log: Log, cosigner: CosignatureSigner, size: int) -> None:
    assert response.status_code == 200, response.text
    body = log.checkpoint(size).body()
    assert cosigner.verifier().verify_line(body, response.text) == NOW
    # As tlog-witness suggests clients do: append the response to the note and open it with the witness key.
    assert open_note(log.note(size) + response.text, [cosigner.verifier()]).names == (cosigner.name,)


async def test_first_checkpoint_is_cosigned_and_stored(
    client: httpx.AsyncClient, log: Log, store: WitnessStore, cosigner: CosignatureSigner
) -> None:
    log.grow(5)
    r = await post(client, log.body(0))
    assert_cosigned(r, log, cosigner, 5)
    assert await store.head(log.origin) == (5, log.tree.root())


async def test_growth_with_consistency_proofs(
    client: httpx.AsyncClient, log: Log, store: WitnessStore, cosigner: CosignatureSigner
) -> None:
    log.grow(3)
    assert (await post(client, log.body(0))).status_code == 200
    for grow in (1, 4, 9, 16):
        old = log.tree.size
        log.grow(grow)
        assert len(log.tree.consistency_proof(old)) > 0
        assert_cosigned(await post(client, log.body(old)), log, cosigner, log.tree.size)
    # Re-submitting the same head (same size, same root) is cosigned again.
    assert_cosigned(await post(client, log.body(log.tree.size)), log, cosigner, log.tree.size)
    assert await store.head(log.origin) == (33, log.tree.root())


async def test_empty_tree_then_growth(client: httpx.AsyncClient, log: Log, store: WitnessStore) -> None:
    assert (await post(client, log.body(0, 0))).status_code == 200
    assert await store.head(log.origin) == (0, EMPTY_ROOT)
    log.grow(2)
    assert (await post(client, log.body(0))).status_code == 200


async def test_wrong_old_size_is_409_with_stored_size(client: httpx.AsyncClient, log: Log) -> None:
    log.grow(7)
    assert (await post(client, log.body(0))).status_code == 200
    log.grow(3)
    for old in (0, 5, 8):
        r = await post(client, log.body(old))
        assert r.status_code == 409
        assert r.headers["content-type"] == SIZE_CONTENT_TYPE
        assert r.text == "7\n"


async def test_old_zero_against_unknown_log_state_is_409_with_zero(client: httpx.AsyncClient, log: Log) -> None:
    log.grow(4)
    r = await post(client, log.body(2))
    assert (r.status_code, r.text) == (409, "0\n")


async def test_old_larger_than_size_is_400(client: httpx.AsyncClient, log: Log) -> None:
    log.grow(4)
    r = await post(client, log.body(5, 4, proof=[]))
    assert r.status_code == 400


async def test_bad_proof_is_422(client: httpx.AsyncClient, log: Log, store: WitnessStore) -> None:
    log.grow(6)
    assert (await post(client, log.body(0))).status_code == 200
    log.grow(5)
    proof = log.tree.consistency_proof(6)
    tampered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    for bad in (tampered, proof[:-1], [*proof, proof[0]], []):
        assert (await post(client, log.body(6, proof=bad))).status_code == 422
    assert await store.head(log.origin) == (6, log.tree.root(6))  # nothing stored on failure
    assert (await post(client, log.body(6))).status_code == 200


async def test_fork_is_422(client: httpx.AsyncClient, log: Log) -> None:
    """A second tree from the same log, diverging after the stored size, has no valid proof."""
    log.grow(4)
    assert (await post(client, log.body(0))).status_code == 200
    fork = Log(log.origin)
    fork.signer = log.signer
    fork.tree = MemoryTree(log.tree.subtree_root(i, i + 1) for i in range(3))
    fork.tree.append(leaf_hash(b"forked"))
    fork.grow(4)
    assert (await post(client, fork.body(4, proof=fork.tree.consistency_proof(4)))).status_code == 422


async def test_same_size_different_root_is_422(client: httpx.AsyncClient, log: Log) -> None:
    log.grow(4)
    assert (await post(client, log.body(0))).status_code == 200
    other = Checkpoint(log.origin, 4, hashlib.sha256(b"other").digest())
    r = await post(client, f"old 4\n\n{log.signer.sign(other.body())}")
    assert r.status_code == 422


async def test_size_zero_needs_empty_root_and_old_zero_needs_no_proof(client: httpx.AsyncClient, log: Log) -> None:
    bogus = Checkpoint(log.origin, 0, hashlib.sha256(b"x").digest())
    assert (await post(client, f"old 0\n\n{log.signer.sign(bogus.body())}")).status_code == 422
    log.grow(3)
    assert (await post(client, log.body(0, proof=[hashlib.sha256(b"p").digest()]))).status_code == 422


async def test_unsigned_or_wrong_key_is_403(client: httpx.AsyncClient, log: Log, store: WitnessStore) -> None:
    log.grow(3)
    impostor = NoteSigner(log.origin, Ed25519PrivateKey.generate())
    assert (await post(client, log.body(0, note=log.note(signer=impostor)))).status_code == 403
    # A line claiming the trusted key's name and ID with a bad signature is 403 even next to a good one.
    key_id = log.signer.verifier().key_id
    bad_line = f"— {log.origin} " + base64.b64encode(key_id + b"\x01" * 64).decode() + "\n"
    assert (await post(client, log.body(0, note=log.note() + bad_line))).status_code == 403
    text = log.checkpoint().body()
    assert (await post(client, f"old 0\n\n{text}\n{bad_line}")).status_code == 403
    assert await store.head(log.origin) is None


async def test_extra_unknown_signatures_are_ignored(
    client: httpx.AsyncClient, log: Log, cosigner: CosignatureSigner
) -> None:
    log.grow(2)
    stranger = NoteSigner("someone.else", Ed25519PrivateKey.generate()).signature_line(log.checkpoint().body())
    assert_cosigned(await post(client, log.body(0, note=log.note() + stranger)), log, cosigner, 2)


async def test_unknown_origin_is_404(client: httpx.AsyncClient) -> None:
    stranger = Log()
    stranger.grow(2)
    assert (await post(client, stranger.body(0))).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"old 0\n",
        b"old 0",
        b"new 0\n\n",
        b"old\n\n",
        b"old -1\n\n",
        b"old 01\n\n",
        b"old  1\n\n",
        b"old 1 \n\n",
        b"old 99999999999999999999999\n\n",
        b"old 0\nnot base64!\n\n",
        b"old 0\nAAAA\n\n",  # a 3-byte "hash"
        b"old 0\n\nnot a note\n",
        b"old 0\n\no\n1\nAAAA\n\n\xe2\x80\x94 k AAAAAAAA\n",
        b"old 0\n\norigin only\n\n\xe2\x80\x94 k AAAAAAAA\n",
        b"old 0\r\n\r\n",
    ],
)
async def test_malformed_bodies_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    r = await post(client, body)
    assert r.status_code == 400, r.text


async def test_malformed_checkpoint_notes_are_400(client: httpx.AsyncClient, log: Log) -> None:
    log.grow(3)
    note = log.note()
    for bad in (note[:-1], note.replace("\n\n", "\n"), note.replace("\n", "\r\n"), note.replace("— ", "-- ")):
        r = await post(client, f"old 0\n\n{bad}")
        assert r.status_code == 400, r.text
    lines = "".join(base64.b64encode(bytes(32)).decode() + "\n" for _ in range(64))
    assert (await post(client, f"old 1\n{lines}\n{note}")).status_code == 400  # > 63 proof lines


async def test_oversized_body_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert (await post(client, b"x" * (300 * 1024))).status_code == 413
    assert (await client.get("/add-checkpoint")).status_code == 405


async def test_concurrent_requests_from_one_old_size(client: httpx.AsyncClient, log: Log, store: WitnessStore) -> None:
    log.grow(4)
    assert (await post(client, log.body(0))).status_code == 200
    log.grow(12)
    bodies = [log.body(4, size) for size in range(5, 17)]
    responses = await asyncio.gather(*(post(client, b) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == len(bodies) - 1, statuses
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    assert await store.head(log.origin) == (5 + winner, log.tree.root(5 + winner))
    for r in responses:
        if r.status_code == 409:
            assert r.text == f"{5 + winner}\n"


async def test_concurrent_first_checkpoints(client: httpx.AsyncClient, log: Log, store: WitnessStore) -> None:
    log.grow(8)
    responses = await asyncio.gather(*(post(client, log.body(0, size)) for size in range(1, 9)))
    assert sorted(r.status_code for r in responses).count(200) == 1


async def test_lost_race_between_read_and_write_is_a_conflict(
    store: WitnessStore, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Force another writer in after our read: the conditional write must change nothing."""
    log.grow(10)
    await store.advance(log.origin, 0, 4, log.tree.root(4), lambda *_: None)
    real_read = store._read
    raced = False

    async def read_then_let_a_rival_in(conn: Any, origin: str) -> tuple[int, bytes] | None:
        nonlocal raced
        current = await real_read(conn, origin)
        if not raced:
            raced = True
            await store.advance(origin, 4, 7, log.tree.root(7), lambda *_: None)  # a separate connection
        return current

    monkeypatch.setattr(store, "_read", read_then_let_a_rival_in)
    with pytest.raises(Conflict) as exc:
        await store.advance(log.origin, 4, 10, log.tree.root(10), lambda *_: None)
    assert exc.value.stored_size == 7
    monkeypatch.undo()
    assert await store.head(log.origin) == (7, log.tree.root(7))


async def test_lost_race_on_first_insert_is_a_conflict(
    store: WitnessStore, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.grow(10)
    real_read = store._read
    raced = False

    async def read_then_let_a_rival_in(conn: Any, origin: str) -> tuple[int, bytes] | None:
        nonlocal raced
        current = await real_read(conn, origin)
        if not raced:
            raced = True
            await store.advance(origin, 0, 3, log.tree.root(3), lambda *_: None)
        return current

    monkeypatch.setattr(store, "_read", read_then_let_a_rival_in)
    with pytest.raises(Conflict) as exc:
        await store.advance(log.origin, 0, 10, log.tree.root(10), lambda *_: None)
    assert exc.value.stored_size == 3
    monkeypatch.undo()
    assert await store.head(log.origin) == (3, log.tree.root(3))


def test_witness_app_refuses_bad_configuration(store: WitnessStore, cosigner: CosignatureSigner) -> None:
    verifier = Log().signer.verifier()
    with pytest.raises(ValueError, match="no keys"):
        witness_app(store, cosigner, {"o": []})
    with pytest.raises(ValueError, match="same name"):
        witness_app(store, cosigner, {"o": [verifier, NoteVerifier.from_vkey(verifier.vkey())]})


async def test_the_latest_cosigned_checkpoint_is_served(
    client: httpx.AsyncClient, log: Log, cosigner: CosignatureSigner
) -> None:
    assert (await client.get("/checkpoint", params={"origin": log.origin})).status_code == 404  # nothing yet
    log.grow(5)
    await post(client, log.body(0))
    log.grow(3)
    first = await post(client, log.body(5))
    await post(client, log.body(5))  # a 409: the stored one stays
    served = await client.get("/checkpoint", params={"origin": log.origin})
    assert served.status_code == 200
    assert served.text == log.note(8) + first.text
    assert open_note(served.text, [log.signer.verifier()]).text == log.checkpoint(8).body()
    assert open_note(served.text, [cosigner.verifier()]).names == (cosigner.name,)
    log.grow(1)
    refused = await post(client, log.body(8, proof=[bytes(32)]))  # not consistent: not stored
    assert refused.status_code == 422
    assert (await client.get("/checkpoint", params={"origin": log.origin})).text == served.text
    for params in ({"origin": "example.com/unknown"}, {}):
        assert (await client.get("/checkpoint", params=params)).status_code == 404
