"""Record checks of a verification, run in worker processes on large logs (module-level functions, picklable
arguments): each leaf's bytes must parse as a canonical version-1 record (:func:`deputy.audit.records.parse_record`,
RFC 8785), and its RFC 9162 §2.1.1 leaf hash is recomputed from them.

Record checks are the costly part (~20 µs a record, the JSON parse and re-serialisation); on large logs they run
in worker processes, while the calling process reads, folds the tree and compares nodes.
"""

from __future__ import annotations

import base64
import binascii
import json
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor

from deputy import bounded_json
from deputy.audit.merkle import leaf_hash
from deputy.audit.records import RECORD_TYPES, RECORD_VERSION, RecordError, canonical, parse_record
from deputy.canonical_json import INT_MAX, INT_MIN, fast_path_text

PARALLEL_FROM = 100_000  # below this many leaves, starting worker processes costs more than it saves



class _NotQuick(Exception):
    pass


def _quick_int(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _NotQuick
    return value


def _no_float(text: str) -> float:
    raise _NotQuick


# NaN and Infinity are no JSON, but Python's decoder reads them (parse_constant): no float of any kind here.
_DECODER = json.JSONDecoder(parse_int=_quick_int, parse_float=_no_float, parse_constant=_no_float)


def _quick_canonical(entry: bytes) -> bool:
    """True only if ``entry`` is certainly a canonical v1 record; False means "ask parse_record".

    With ASCII bytes, no floats and every integer within ±(2^53 - 1), a re-serialisation equal to the input proves
    every string was ASCII, so :func:`deputy.canonical_json.takes_fast_path` holds and its fast path gives these
    very bytes.
    """
    if not entry.isascii():
        return False
    try:
        text = entry.decode("ascii")
        bounded_json.check_depth(text)
        record = _DECODER.decode(text)
        return bool(
            type(record) is dict
            and record.get("v") == RECORD_VERSION
            and type(record.get("v")) is int
            and record.get("type") in RECORD_TYPES
            and fast_path_text(record).encode("ascii") == entry
        )
    except (_NotQuick, ValueError):
        return False


def record_problem(entry: bytes) -> str | None:
    """Why ``entry`` is not a canonical version-1 record, or None."""
    if _quick_canonical(entry):
        return None
    try:
        parse_record(entry)
    except RecordError as exc:
        return str(exc)
    return None


def digest_entries(entries: list[bytes]) -> tuple[list[bytes], list[tuple[int, str]]]:
    """Leaf hashes of stored entries, and (offset, problem) for those that are not canonical records."""
    problems: list[tuple[int, str]] = []
    for offset, entry in enumerate(entries):
        problem = record_problem(entry)
        if problem is not None:
            problems.append((offset, problem))
    return [leaf_hash(e) for e in entries], problems


LineResult = tuple[int | None, bytes | None, str | None]  # (claimed index, leaf hash, problem)


RECORD_LINE = frozenset({"index", "record"})
ENTRY_LINE = frozenset({"index", "entry", "problem"})


def digest_lines(lines: list[bytes]) -> list[LineResult]:
    """Leaf lines of an export file: exactly ``{"index": i, "record": {...}}``, or exactly ``{"index": i, "entry":
    <base64 bytes>, "problem": ...}`` for an entry that is not a canonical record. The leaf bytes are the canonical
    JSON of the record. Any other shape is a problem: a line carrying both would hash one and show the other."""
    results: list[LineResult] = []
    for line in lines:
        try:
            item = bounded_json.loads(line)
        except ValueError as exc:  # bounded_json.TooDeep included
            results.append((None, None, f"line is not JSON: {exc}"))
            continue
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or index < 0:
            results.append((None, None, "leaf line has no valid index"))
            continue
        if item.keys() != RECORD_LINE and item.keys() != ENTRY_LINE:
            results.append((index, None, f"leaf line has the members {sorted(item)}, not {sorted(RECORD_LINE)} "
                                         f"nor {sorted(ENTRY_LINE)}"))
            continue
        if "entry" in item:  # exported as raw bytes because they were not a canonical record
            try:
                entry = base64.b64decode(str(item["entry"]), validate=True)
            except (binascii.Error, ValueError):
                results.append((index, None, "entry is not base64"))
                continue
            problem = record_problem(entry)
            results.append((index, leaf_hash(entry), problem if problem is not None else
                            "entry holds a canonical record, which the export writes as \"record\""))
            continue
        record = item.get("record")
        try:
            entry = canonical(record)
        except RecordError as exc:
            results.append((index, None, f"record cannot be canonicalised: {exc}"))
            continue
        problem = None
        if not isinstance(record, dict) or record.get("v") != RECORD_VERSION or record.get("type") not in RECORD_TYPES:
            problem = "not a version 1 record of a known type"
        results.append((index, leaf_hash(entry), problem))
    return results




def executor(workers: int) -> Executor | None:
    if workers <= 0:
        return None
    # spawn: forking a process that runs an event loop and database threads is not safe.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def auto_workers(workers: int | None, expected: int) -> int:
    if workers is not None:
        return workers
    return (os.cpu_count() or 1) if expected >= PARALLEL_FROM else 0


