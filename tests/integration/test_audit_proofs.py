"""Offline proofs, exports and the command line on both backends: a record's tlog-proof and the consistency proof
between two checkpoints verify offline and fail when tampered; an export verifies offline with only the public key
and each tampering with it is located; ``deputy audit verify``, ``prove``, ``check-proof``, ``consistency``,
``export`` and ``tail`` end to end.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from deputy.audit.bundle import BundleError, check_bundle, check_consistency, consistency, make_bundle
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.verify import verify_file
from deputy.storage.db import Database
from tests.support.audit_build import (
    ORIGIN,
    SIGNER,
    VKEY,
    N,
    build,
    cli,
    entry,
    export_to,
    fresh,
    messages,
    set_entry,
    write_config,
)

__all__ = ["fresh"]


# Offline proofs


async def test_a_bundle_verifies_offline_and_fails_when_tampered(fresh: Database) -> None:
    log = await build(fresh)
    bundle = (await make_bundle(log, 23)).text()
    assert bundle.startswith("c2sp.org/tlog-proof@v1\nextra ")
    checked = check_bundle(bundle, VKEY)
    assert checked.index == 23 and checked.record["decision_id"] == "d0023" and checked.checkpoint.size == N
    lines = bundle.split("\n")
    # Another record in the extra line.
    other = base64.b64encode(await entry(fresh, 24)).decode()
    with pytest.raises(BundleError, match="not included"):
        check_bundle("\n".join([lines[0], f"extra {other}", *lines[2:]]), VKEY)
    # Another index.
    with pytest.raises(BundleError, match="not included"):
        check_bundle("\n".join([lines[0], lines[1], "index 22", *lines[3:]]), VKEY)
    # A changed proof hash.
    forged = base64.b64encode(b"\x00" * 32).decode()
    with pytest.raises(BundleError, match="not included"):
        check_bundle("\n".join([*lines[:3], forged, *lines[4:]]), VKEY)
    # Another log's key, and a quorum the bundle cannot meet.
    with pytest.raises(BundleError, match="not signed by the log"):
        check_bundle(bundle, NoteSigner.from_key(generate_signer_key(ORIGIN)).verifier().vkey())
    with pytest.raises(BundleError, match="0 valid cosignatures"):
        check_bundle(bundle, VKEY, [CosignatureSigner.generate("w.test/x").verifier().vkey()], quorum=1)
    with pytest.raises(BundleError, match="not in the checkpoint"):
        await make_bundle(log, N)


async def test_consistency_between_checkpoints(fresh: Database) -> None:
    log = await build(fresh)
    proof = await consistency(log, 10, 40)
    old, new = check_consistency(proof.text(), VKEY)
    assert (old.size, new.size) == (10, 40)
    lines = proof.text().split("\n")
    lines[3] = base64.b64encode(b"\x01" * 32).decode()
    with pytest.raises(BundleError, match="not consistent"):
        check_consistency("\n".join(lines), VKEY)
    with pytest.raises(BundleError, match="no checkpoint of size 15"):
        await consistency(log, 15, 40)


# Export


async def test_export_verifies_offline_and_tampering_fails(fresh: Database, tmp_path: Path) -> None:
    log = await build(fresh)
    path = tmp_path / "audit.jsonl"
    await export_to(log, path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header == {"format": "deputy-audit-export/v1", "origin": ORIGIN, "vkey": VKEY, "size": N}
    assert len(lines) == 1 + N + 5
    report = verify_file(path, SIGNER.verifier())
    assert report.ok, messages(report)
    assert (report.leaves, report.checkpoints_ok, report.consistency_proofs) == (N, 5, 4)
    assert verify_file(path, SIGNER.verifier(), workers=2, batch=9).ok

    def tampered(change: Any) -> Path:
        out = tmp_path / "tampered.jsonl"
        out.write_text("\n".join(change(list(lines))) + "\n")
        return out

    def edit_record(ls: list[str]) -> list[str]:
        position = next(i for i, line in enumerate(ls) if line.startswith('{"index":23,'))
        item = json.loads(ls[position])
        item["record"]["user"] = "mallory"
        ls[position] = json.dumps(item)  # respelled, too: only the canonical bytes count
        return ls

    report = verify_file(tampered(edit_record), SIGNER.verifier())
    assert (
        "checkpoint at size 30: root differs from the records (first divergence at or before leaf 29, after leaf "
        "19)" in messages(report)
    )
    assert report.checkpoints_ok == 4 - 2  # 10 and 20

    report = verify_file(
        tampered(lambda ls: [line for line in ls if not line.startswith('{"index":17,')]), SIGNER.verifier()
    )
    assert report.first_problem is not None and report.first_problem.message == "leaf index 17 missing"
    assert "header says size 50, the file has 49 leaves" in messages(report)

    def break_proof(ls: list[str]) -> list[str]:
        position = max(i for i, line in enumerate(ls) if line.startswith('{"checkpoint"'))
        item = json.loads(ls[position])
        item["consistency"]["proof"][0] = base64.b64encode(b"\x02" * 32).decode()
        ls[position] = json.dumps(item)
        return ls

    report = verify_file(tampered(break_proof), SIGNER.verifier())
    assert [p.kind for p in report.problems] == ["consistency"]
    assert "checkpoints at sizes 40 and 50 are not consistent" in report.problems[0].message

    report = verify_file(tampered(lambda ls: ls[:-6]), SIGNER.verifier())  # the tail cut off (and checkpoint 50)
    assert [p.kind for p in report.problems] == ["unsigned", "head"]
    assert report.problems[0].message.startswith("leaves 40..44 (5 records) are not covered by a signed checkpoint")
    assert report.problems[1].message == "header says size 50, the file has 45 leaves"


# The command line


@pytest.fixture
def config(fresh: Database, tmp_path: Path) -> Path:
    key_file = tmp_path / "audit.key"
    key_file.write_text(SIGNER.key_string() + "\n")
    return write_config(tmp_path, fresh.url, key_file)


async def test_cli_verify_prove_check_proof_export(fresh: Database, config: Path, tmp_path: Path) -> None:
    log = await build(fresh)
    result = await cli("key", "-c", str(config))
    assert result.exit_code == 0 and result.output.strip() == VKEY

    result = await cli("verify", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "5 of 5 match the records" in result.output

    result = await cli("prove", "23", "-c", str(config))
    assert result.exit_code == 0, result.output
    proof = tmp_path / "23.tlog-proof"
    proof.write_text(result.output)
    result = await cli("check-proof", str(proof), "--key", VKEY)
    assert result.exit_code == 0, result.output
    assert "proof OK: record 23 (decision" in result.output and f"checkpoint 50 of {ORIGIN}" in result.output
    proof.write_text((await make_bundle(log, 23)).text().replace("index 23", "index 24"))
    result = await cli("check-proof", str(proof), "--key", VKEY)
    assert result.exit_code == 1 and "proof FAILED: record 24 is not included" in result.output

    result = await cli("consistency", "10", "30", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "deputy.audit/consistency@v1\nold 10\nnew 30\n" in result.output
    assert "consistent: checkpoint 10 is a prefix of checkpoint 30" in result.output

    exported = tmp_path / "audit.jsonl"
    result = await cli("export", "--format", "jsonl", "--output", str(exported), "-c", str(config))
    assert result.exit_code == 0, result.output
    result = await cli("verify", "--file", str(exported), "--key", VKEY)
    assert result.exit_code == 0, result.output
    assert "50" in result.output and "OK" in result.output
    result = await cli(
        "verify",
        "--file",
        str(exported),
        "--key",
        VKEY,
        "--witness",
        CosignatureSigner.generate("w.test/x").verifier().vkey(),
    )
    assert result.exit_code == 1 and "0 valid cosignatures from the given witnesses, 1 required" in result.output

    result = await cli("tail", "-n", "3", "--tool", "add", "-c", str(config))
    assert result.exit_code == 0, result.output
    shown = result.output.strip().splitlines()
    assert len(shown) == 3 and all("tool=add" in line and "decision" in line for line in shown)
    assert "decision=d0048" in shown[-1] and "#48" in shown[-1]

    # Tampered: exit 1, naming the first bad index.
    await set_entry(fresh, 23, (await entry(fresh, 23)).replace(b'"alice"', b'"mallory"'))
    result = await cli("verify", "-c", str(config))
    assert result.exit_code == 1
    assert "first bad index 22: leaf 22 or 23: record bytes do not match" in result.output
