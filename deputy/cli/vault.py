"""``deputy vault rotate-key``: seal every stored upstream token and client secret under a new vault key.

The vault (:mod:`deputy.connections.vault`) takes its keys from ``DEPUTY_VAULT_KEY`` or from ``vault.key`` in the
data directory; the first key seals, every key opens.

- Key file: a new key is put first in the file (the old one kept after it), every value is sealed again under it,
  then the old key is dropped. Running Deputy processes read the file again when it changes. Stopped midway (a
  crash, Ctrl-C), the file still holds both keys and the next run finishes the same rotation instead of starting
  another; two rotations at once wait for each other (a lock file).
- ``DEPUTY_VAULT_KEY`` with one key: a new key is printed (alone on standard output), to be put first —
  ``DEPUTY_VAULT_KEY=NEW,OLD`` — on every replica; with several, every value is sealed again under the first and
  the operator is told to drop the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from deputy.cli.common import ConfigOption, console, err, fail, settings_or_exit, with_services
from deputy.cli.failures import EXIT_CONFIG
from deputy.cli.terminal_text import line
from deputy.services import Services

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.connections.vault import Resealed, Vault

vault_app = typer.Typer(help="The vault of users' upstream tokens (AES-256-GCM).", no_args_is_help=True)


def _reseal(settings: Settings, vault: Vault) -> Resealed:
    from deputy.connections.vault import reseal_all
    from deputy.storage.connections import ConnectionRepository

    async def work(services: Services) -> Resealed:
        done = await reseal_all(vault, ConnectionRepository(services.database.engine))
        await services.record("admin.action", action="vault.rotate-key", key_id=(vault.current_key_id or b"").hex(),
                              connections=done.connections, clients=done.clients, unreadable=done.unreadable)
        return done

    return with_services(settings, work)


def _report(done: Resealed, kid: bytes) -> None:
    console.print(f"re-sealed {done.connections} connection(s) and {done.clients} client secret(s) under key "
                  f"{kid.hex()}; {done.already_current} already were")
    if done.unreadable:
        err.print(line(f"{done.unreadable} row(s) open with no key the vault holds: they stay as they are; `deputy "
                       "connections revoke` them, and their users connect again", style="yellow"), soft_wrap=True)


@vault_app.command("rotate-key")
def rotate_key(config: ConfigOption = None) -> None:
    """Seal every stored upstream token and client secret under a new key (see `deputy vault --help`)."""
    from deputy.config_values import ConfigError

    settings = settings_or_exit(config)
    try:
        if settings.connections.vault_key is not None:
            _rotate_environment(settings, settings.connections.vault_key)
        else:
            _rotate_file(settings)
    except ConfigError as exc:  # a malformed DEPUTY_VAULT_KEY or key file: nothing was changed
        fail(EXIT_CONFIG, str(exc))


def _rotate_environment(settings: Settings, value: str) -> None:
    from deputy.connections.vault import ENVIRONMENT, Vault, environment_keys, key_id, new_key

    keys = environment_keys(value)
    if len(keys) == 1:
        console.print(new_key(), soft_wrap=True, highlight=False)
        err.print(f"a new vault key is above. Set {ENVIRONMENT} to it, a comma, then the current key (NEW,OLD) on "
                  "every Deputy replica, restart them, then run `deputy vault rotate-key` again with that value to "
                  "seal everything under the new key", soft_wrap=True)
        return
    done = _reseal(settings, Vault(keys))
    _report(done, key_id(keys[0]))
    if not done.settled:
        fail(1, "connections kept changing while they were re-sealed; run `deputy vault rotate-key` again")
    console.print(f"now keep only the first key in {ENVIRONMENT} on every replica (drop the other "
                  f"{len(keys) - 1}), and restart them")


def _rotate_file(settings: Settings) -> None:
    from deputy.connections.vault import KEY_FILE, KeyFile, Vault, new_key, parse_key

    key_file = KeyFile(settings.data_dir / KEY_FILE)
    with key_file.locked():
        keys = key_file.read()
        if not keys:
            console.print(f"no vault key yet in {key_file.path} (nothing has been sealed): nothing to rotate")
            return
        if len(keys) == 1:
            fresh = parse_key(new_key())
            if fresh is None:  # pragma: no cover - new_key() always parses
                raise RuntimeError("a new vault key did not parse")
            key_file.write([fresh, *keys])
        else:
            err.print(f"{key_file.path} holds {len(keys)} keys: finishing the rotation that was stopped",
                      soft_wrap=True)
        vault = Vault([], key_file)
        current = vault.current_key_id
        done = _reseal(settings, vault)
        _report(done, current or b"")
        if not done.settled:
            fail(1, "connections kept changing while they were re-sealed; the old key stays in the key file: run "
                    "`deputy vault rotate-key` again")
        key_file.write(key_file.read()[:1])
    console.print(f"old vault key dropped; {key_file.path} holds the new one only")
