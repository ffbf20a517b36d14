"""``deputy witness``: run a C2SP tlog-witness, or make its cosigning key.

tlog-witness: "Each witness is configured with a list of supported log public keys",
each log "uniquely identified by its origin line". ``--log VKEY`` trusts a log key for
the origin named like the key (tlog-checkpoint: the key name SHOULD match the origin);
``--log "ORIGIN VKEY"`` trusts it for another origin (a vkey never contains a space, so
everything before the last space is the origin). Repeat ``--log`` for more keys or logs.

The key file holds one ``PRIVATE+KEY+name+keyid+base64(0x04 || seed)`` line, as written
by ``deputy witness keygen NAME --out FILE``.

Besides ``POST /add-checkpoint`` the witness serves ``GET /checkpoint?origin=ORIGIN``: the
latest checkpoint it cosigned for a log, which ``deputy audit verify --witness 'URL VKEY'``
fetches as an anchor. A log's key hand-over is followed without changing ``--log``
(:mod:`deputy.audit.witness`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deputy.cli.common import console, err
from deputy.cli.terminal_text import line

if TYPE_CHECKING:
    from deputy.audit.note import Verifier

witness_app_cli = typer.Typer(help="A transparency log witness (C2SP tlog-witness).", no_args_is_help=True)


def parse_logs(values: list[str]) -> dict[str, list[Verifier]]:
    """``VKEY`` or ``ORIGIN VKEY`` values to origin → log keys; raises ``NoteError``."""
    from deputy.audit.note import NoteVerifier

    logs: dict[str, list[Verifier]] = {}
    for value in values:
        origin, sep, vkey = value.rpartition(" ")
        verifier = NoteVerifier.from_vkey(vkey)
        logs.setdefault(origin if sep else verifier.name, []).append(verifier)
    return logs


@witness_app_cli.command("serve")
def serve(
    db: Annotated[str, typer.Option("--db", help="database URL (sqlite+aiosqlite:///... or postgresql+asyncpg://...)")],
    key: Annotated[Path, typer.Option("--key", help="file holding the witness's signer key")],
    log: Annotated[list[str], typer.Option("--log", help="a log's vkey, or 'ORIGIN VKEY'; repeatable")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
) -> None:
    """Serve POST /add-checkpoint and GET /checkpoint?origin=ORIGIN."""
    import uvicorn

    from deputy.audit.cosignature import CosignatureSigner
    from deputy.audit.note import NoteError
    from deputy.audit.witness import WitnessStore, witness_app

    try:
        signer = CosignatureSigner.from_key(key.read_text().strip())
        logs = parse_logs(log)
    except OSError as exc:
        err.print(line(f"cannot read {key}: {exc.strerror}", style="red"))
        raise typer.Exit(2) from None
    except NoteError as exc:  # it may quote the key or --log value
        err.print(line(str(exc), style="red"))
        raise typer.Exit(2) from None
    if not logs:
        err.print("[red]at least one --log is required[/red]")
        raise typer.Exit(2)
    try:
        app = witness_app(WitnessStore(db), signer, logs)
    except ValueError as exc:
        err.print(line(str(exc), style="red"))
        raise typer.Exit(2) from None
    console.print(
        line(f"witness {signer.verifier().vkey()} on http://{host}:{port} (/add-checkpoint, /checkpoint) for ",
             ", ".join(sorted(logs))),
        soft_wrap=True,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        server_header=False,
        proxy_headers=False,
    )
    asyncio.run(uvicorn.Server(config).serve())


@witness_app_cli.command("keygen")
def keygen(
    name: Annotated[str, typer.Argument(help="the witness name, e.g. witness.example.com/w1")],
    out: Annotated[Path | None, typer.Option("--out", help="write the signer key here (mode 0600)")] = None,
) -> None:
    """Make a cosigning key; print its vkey (and the signer key, unless --out is given)."""
    from deputy.audit.cosignature import CosignatureSigner
    from deputy.audit.note import NoteError

    try:
        signer = CosignatureSigner.generate(name)
    except NoteError as exc:
        err.print(line(str(exc), style="red"))
        raise typer.Exit(2) from None
    if out is None:
        console.print(line(signer.key_string()), soft_wrap=True)
    else:
        try:
            # O_EXCL: never overwrite a key, which would orphan every cosignature made with it.
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            err.print(line(f"cannot create {out}: {exc.strerror}", style="red"))
            raise typer.Exit(1) from None
        with os.fdopen(fd, "w") as f:
            f.write(signer.key_string() + "\n")
    console.print(line(signer.verifier().vkey()), soft_wrap=True)
