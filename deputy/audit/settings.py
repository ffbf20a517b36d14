"""The ``[audit]`` settings and the audit log's signing key.

``origin`` is the log's identity: the first line of every checkpoint (C2SP tlog-checkpoint, "Note text") and the
name of the key that signs them (C2SP signed-note, "Signatures": a key is identified by name and key ID). It is
fixed when the log is created, as the name of its key: once ``key_file`` exists, an origin that is not set is the
key's name, so a Deputy restarted on another port or behind another public URL goes on with the same log. Before
that it defaults to ``<host[:port] of public_url>/deputy-audit``, the schema-less URL form tlog-checkpoint
recommends. An origin set explicitly that is not the key's name is refused (:class:`AuditOriginMismatch`): one
origin names one log for its whole life, and a log under a new name is a new log.

The key file holds the Ed25519 signer key in the ``PRIVATE+KEY+name+id+key`` encoding read by
:meth:`deputy.audit.note.NoteSigner.from_key`. It is created on first use (mode 0600, written to a temporary
file and hard-linked into place, so a concurrent starter either creates it whole or reads the one that won), and
loaded after. A key whose name is not the origin is refused: checkpoints signed under another name would not
verify against the log's published verifier key. Replicas sharing one PostgreSQL database must share the key
file too (the same key signs every checkpoint of the one log).

After a rotation (:mod:`deputy.audit.rotation`) the log's earlier verifier keys are listed, oldest first, one vkey
a line, in ``<key_file>.history``; :func:`load_log_keys` starts the key chain from the oldest one. Reading the keys
for a verifier (:func:`load_signer`, :func:`load_log_keys`) never creates a key: a verifier that made itself a new
key would verify nothing.

``witnesses`` are kept as (url, vkey) pairs, each vkey a C2SP tlog-cosignature (type 0x04) verifier key.

``append_timeout_ms`` bounds each append (and checkpoint) transaction: waiting for the sequencer lock, each of its
statements, and the time it may sit idle while open (:mod:`deputy.audit.sequencer`). An append past it fails, and
its call is refused (503) instead of waiting on a replica that holds the lock and does not go on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.log_keys import LogKeys
from deputy.audit.note import NoteError, NoteSigner, NoteVerifier, check_name, generate_signer_key
from deputy.audit.records import ARGUMENTS_MODES, ArgumentsMode
from deputy.config_values import (
    ConfigError,
    Entries,
    Table,
    as_table,
    at,
    check_http_url,
    check_known,
    read_choice,
    read_int,
    read_str,
)

SECTION = "audit"
ORIGIN_SUFFIX = "/deputy-audit"
KNOWN_KEYS = frozenset(
    {"origin", "key_file", "checkpoint_every", "checkpoint_interval_ms", "arguments", "witnesses", "batch_max",
     "append_timeout_ms"}
)
# (min, max) of each integer setting: below the minimum a checkpoint or a commit per record would swamp the log;
# above the maximum a verifier waits too long for a checkpoint, or one transaction grows too large. An append
# timeout below 100 ms would fail appends that merely queue behind another replica's commit; above 10 minutes a
# stalled lock holder would hold every call that long.
RANGES = {
    "checkpoint_every": (1, 10_000_000),
    "checkpoint_interval_ms": (10, 3_600_000),
    "batch_max": (1, 10_000),
    "append_timeout_ms": (100, 600_000),
}
MAX_WITNESSES = 32
WITNESS = Table(frozenset({"url", "vkey"}))
AUDIT = Table(KNOWN_KEYS, {"witnesses": Entries(WITNESS)})


class AuditOriginMismatch(ValueError):
    """``[audit] origin`` is set, and is not the name of the data directory's audit key (the log's origin)."""


@dataclass(frozen=True)
class AuditSettings:
    origin: str
    key_file: Path
    checkpoint_every: int = 1000
    checkpoint_interval_ms: int = 1000
    arguments: ArgumentsMode = "store"
    witnesses: tuple[tuple[str, str], ...] = ()  # (url, cosigner vkey)
    batch_max: int = 512
    append_timeout_ms: int = 5000


def default_origin(public_url: str) -> str:
    parts = urlsplit(public_url)
    if not parts.hostname:
        raise ConfigError(at(SECTION, "origin"), f"cannot derive a default from public_url {public_url!r}")
    host = parts.hostname
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return f"{host}:{parts.port}{ORIGIN_SUFFIX}" if parts.port is not None else f"{host}{ORIGIN_SUFFIX}"


def _int(raw: Mapping[str, Any], key: str, default: int) -> int:
    return read_int(raw, key, SECTION, default, *RANGES[key])


def key_name(key_file: Path) -> str | None:
    """The name of the signer key in ``key_file`` (the log's origin), or None when there is no readable key."""
    try:
        return NoteSigner.from_key(key_file.read_text(encoding="utf-8").strip()).name
    except (OSError, UnicodeDecodeError, NoteError):
        return None  # no log yet; or a key load_signer will refuse, saying why


def _origin(raw: Mapping[str, Any], public_url: str, key_file: Path) -> str:
    """``origin``: as set, else the existing key's name, else derived from ``public_url``; a note key name."""
    origin = raw.get("origin", None)
    if origin is None:
        origin = key_name(key_file) or default_origin(public_url)
    if not isinstance(origin, str):
        raise ConfigError(at(SECTION, "origin"), f"must be a string, got {origin!r}")
    try:
        check_name(origin)
    except NoteError as exc:
        raise ConfigError(at(SECTION, "origin"), str(exc)) from None
    return origin


def _witnesses(raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    where = at(SECTION, "witnesses")
    value = raw.get("witnesses", [])
    if not isinstance(value, list):
        raise ConfigError(where, "must be a list of tables with url and vkey")
    if len(value) > MAX_WITNESSES:
        raise ConfigError(where, f"at most {MAX_WITNESSES} witnesses")
    result: list[tuple[str, str]] = []
    names: set[str] = set()
    for index, entry in enumerate(value):
        url, vkey, name = _witness(entry, at(where, index))
        if name in names:
            raise ConfigError(at(at(where, index), "vkey"), f"two witnesses are named {name}")
        names.add(name)
        result.append((url, vkey))
    return tuple(result)


def _witness(entry: Any, where: str) -> tuple[str, str, str]:
    """One witness: its URL, its cosignature (type 0x04) verifier key, and the name that key carries."""
    if isinstance(entry, dict):
        check_known(entry, where, WITNESS.keys)
    if not isinstance(entry, Mapping) or set(entry) != WITNESS.keys:
        raise ConfigError(where, "must be a table with exactly url and vkey")
    url = check_http_url(entry["url"], at(where, "url"))
    vkey = entry["vkey"]
    if not isinstance(vkey, str):
        raise ConfigError(at(where, "vkey"), "must be a string")
    try:
        verifier = CosignatureVerifier.from_vkey(vkey)
    except NoteError as exc:
        raise ConfigError(at(where, "vkey"), f"is not a cosignature (type 0x04) verifier key: {exc}") from None
    return url, vkey, verifier.name


def audit_settings(raw: Any, data_dir: Path, public_url: str) -> AuditSettings:
    """Validate an ``[audit]`` table; errors are :class:`ConfigError` naming ``audit.<key>``."""
    table = as_table(raw, SECTION)
    check_known(table, SECTION, KNOWN_KEYS)
    # An absolute key_file replaces data_dir.
    key_file = data_dir / Path(read_str(table, "key_file", SECTION, "audit.key")).expanduser()
    return AuditSettings(
        origin=_origin(table, public_url, key_file),
        key_file=key_file,
        checkpoint_every=_int(table, "checkpoint_every", 1000),
        checkpoint_interval_ms=_int(table, "checkpoint_interval_ms", 1000),
        arguments=read_choice(table, "arguments", SECTION, "store", ARGUMENTS_MODES),
        witnesses=_witnesses(table),
        batch_max=_int(table, "batch_max", 512),
        append_timeout_ms=_int(table, "append_timeout_ms", 5000),
    )


def load_or_create_signer(settings: AuditSettings) -> NoteSigner:
    """The log's checkpoint signer: read from ``key_file``, which is created (0600) on first use."""
    path = settings.key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_key_file(path, generate_signer_key(settings.origin))
    return load_signer(settings)


def load_signer(settings: AuditSettings) -> NoteSigner:
    """The log's checkpoint signer, read from ``key_file``; raises ``ValueError`` if it is missing or not valid."""
    path = settings.key_file
    if not path.exists():
        raise ValueError(f"audit.key_file: there is no audit signing key at {path}")
    try:
        signer = NoteSigner.from_key(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, NoteError) as exc:
        raise ValueError(f"audit.key_file: cannot read the signer key in {path}: {exc}") from None
    if signer.name != settings.origin:
        raise AuditOriginMismatch(
            f"audit.origin is {settings.origin!r} but the audit log in this data directory is {signer.name!r} (the "
            f"name of its key, {path}): an origin is fixed when its log is created; remove audit.origin, or set it "
            f"to {signer.name!r} (a log under a new origin is a new log: README, \"Moving Deputy\")"
        )
    return signer


def history_file(settings: AuditSettings) -> Path:
    return settings.key_file.with_name(settings.key_file.name + ".history")


def retired_keys(settings: AuditSettings) -> list[NoteVerifier]:
    """The verifier keys in the history file (the log's keys before its rotations, and the current one)."""
    path = history_file(settings)
    try:
        return [NoteVerifier.from_vkey(v) for v in path.read_text(encoding="utf-8").split()] if path.exists() else []
    except (OSError, UnicodeDecodeError, NoteError) as exc:
        raise ValueError(f"audit.key_file: cannot read the key history {path}: {exc}") from None


def load_log_keys(settings: AuditSettings) -> LogKeys:
    """The key chain's start — the oldest key in the history file, else the current key's verifier key — and the
    whole chain the files state (:attr:`LogKeys.expected`): the history's keys, then the current key."""
    history = retired_keys(settings)
    if history and history[0].name != settings.origin:
        raise ValueError(f"audit.key_file: the first key in {history_file(settings)} is not named {settings.origin!r}")
    # The history ends at the current key (a rotation writes both); without it the private key file names it.
    current = [] if history and not settings.key_file.exists() else [load_signer(settings).verifier()]
    chain = [*history, *current]
    keys = LogKeys(chain[:1])
    keys.expected = tuple(dict.fromkeys(key.vkey() for key in chain))
    return keys


def _create_key_file(path: Path, key: str) -> None:
    # Written whole to a private temporary name, then linked into place: link() fails if the name exists, so
    # two processes starting together never see a half-written key, and the first one's key wins.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
