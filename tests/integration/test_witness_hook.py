"""Issue 17, item 5: the audit log does not import its witness pusher; Deputy's services hand it over.

``deputy.audit.log`` used to import ``deputy.audit.witness_push`` inside ``AuditLog.start`` (which imports the log
back). The pusher is now added by :meth:`deputy.services.Services.open`; these tests keep what Deputy does the same:
configured witnesses get exactly one pusher, and none is added without witnesses.
"""

from __future__ import annotations

from pathlib import Path

from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.witness_push import WitnessPusher
from deputy.config import load_settings
from deputy.services import Services
from tests.support.config_files import offline_config

WITNESS = CosignatureSigner.generate("witness.example/w1").verifier()


def open_services(tmp_path: Path, audit_table: str) -> Services:
    return Services.open(load_settings(offline_config(tmp_path, audit_table), environ={}))


async def test_configured_witnesses_get_one_pusher_whatever_the_starts(tmp_path: Path) -> None:
    table = f'\n[audit]\nwitnesses = [{{ url = "https://witness.example/", vkey = "{WITNESS.vkey()}" }}]\n'
    services = open_services(tmp_path, table)
    try:
        await services.start()
        await services.audit.start()  # a second start adds nothing
        pushers = [c for c in services.audit.after_checkpoint if isinstance(c, WitnessPusher)]
        assert len(pushers) == 1
        assert pushers[0].log is services.audit
        assert [(w.url, w.name) for w in pushers[0].witnesses] == [("https://witness.example", WITNESS.name)]
    finally:
        await services.close()


async def test_without_witnesses_nothing_runs_after_a_checkpoint(tmp_path: Path) -> None:
    services = open_services(tmp_path, "")
    try:
        await services.start()
        assert services.audit.after_checkpoint == []
    finally:
        await services.close()
