"""Issue 15, items 2 and 3: ``deputy connections list | revoke`` and ``deputy vault rotate-key``, on both backends.

Abuse first: the list never shows a token, and an upstream's words (issuer, scope) reach the terminal as text;
revoking needs a filter and says when it found nothing; a key file others may read, or a malformed
``DEPUTY_VAULT_KEY``, stops the rotation with the fix and changes nothing; a rotation stopped midway is finished
by the next run, not restarted under a third key. Then the happy paths: filters, revoking by user, server or both
(recorded, the token as a digest only), rotation of the key file and of ``DEPUTY_VAULT_KEY``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from deputy.clock import now
from deputy.connections.vault import KEY_FILE, KeyFile, Vault, VaultKeyError, key_id, new_key, parse_key
from deputy.services import Services
from deputy.storage.connections import ConnectionRepository, StoredConnection, token_context
from tests.support.cli_deployment import ACTING, HOSTILE, Deployment, records, widen_consoles
from tests.support.config_files import config_file
from tests.support.databases import database_url

OLD_KEY, NEW_KEY = bytes(range(32)), bytes(range(32, 64))


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    widen_consoles(monkeypatch)
    monkeypatch.delenv("DEPUTY_VAULT_KEY", raising=False)


class VaultDeployment(Deployment):
    """A deployment whose connections' tokens are sealed by the vault key in ``key_file``."""

    def __init__(self, config: Path) -> None:
        super().__init__(config)
        self.key_file = KeyFile(self.settings.data_dir / KEY_FILE)

    def plant(self, vault: Vault, *rows: tuple[str, str, str], status: str = "active", issuer: str = "https://as",
              scope: str | None = "repo") -> dict[str, str]:
        """Users (by name) and their connections (user, server, access token) sealed by ``vault``; their ids."""
        async def work(services: Services) -> dict[str, str]:
            ids: dict[str, str] = {}
            for name, server, token in rows:
                found = await services.users.find(name) or await services.users.add(name, "pw")
                ids[name] = found.user_id
                await ConnectionRepository(services.database.engine).put(StoredConnection(
                    user_id=found.user_id, server=server, status=status, issuer=issuer, client_id="deputy",
                    scope=scope, wanted_scope=None,
                    access_token=vault.seal(token, token_context(found.user_id, server, "access_token")),
                    refresh_token=vault.seal(token + "-r", token_context(found.user_id, server, "refresh_token")),
                    expires_at=now() + 3600, created_at=now(), refreshed_at=None, token_digest="ab" * 32))
            return ids
        return self.run(work)

    def connections(self) -> list[StoredConnection]:
        return self.run(lambda s: ConnectionRepository(s.database.engine).list())


@pytest.fixture
def deployment(backend: str, tmp_path: Path) -> Iterator[VaultDeployment]:
    with database_url(backend, tmp_path) as url:
        yield VaultDeployment(config_file(tmp_path, (
            f'public_url = "https://deputy.example.com"\ndata_dir = "{tmp_path / "data"}"\n'
            f'database_url = "{url}"\n\n'
            '[servers.github]\nurl = "http://127.0.0.1:9/mcp"\ncredentials = "oauth"\n'
            '[servers.github.oauth]\ntrusted_hosts = ["127.0.0.1"]\n\n'
            '[servers.linear]\nurl = "http://127.0.0.1:9/linear"\ncredentials = "oauth"\n')))


def opens(vault: Vault, row: StoredConnection) -> str:
    return vault.unseal(row.access_token, token_context(row.user_id, row.server, "access_token"))


# -- connections list / revoke --------------------------------------------------------------------------------------

def test_list_never_shows_a_token_and_shows_upstream_words_as_text(deployment: VaultDeployment) -> None:
    vault = Vault([OLD_KEY])
    deployment.plant(vault, ("alice", "github", "gho_ALICE-SECRET"), issuer=f"https://as/{HOSTILE}", scope=HOSTILE)
    deployment.plant(vault, ("bob", "linear", "lin_BOB-SECRET"), status="broken")
    result = deployment.cli("connections", "list")
    assert result.exit_code == 0, result.output
    assert "SECRET" not in result.output and "ab" * 32 not in result.output
    assert not ACTING.search(result.output) and "[conceal]" in result.output
    alice_line = next(line for line in result.output.splitlines() if "alice" in line)
    assert "github" in alice_line and "active" in alice_line
    assert "broken" in next(line for line in result.output.splitlines() if "bob" in line)


def test_list_filters_and_refuses_what_names_nothing(deployment: VaultDeployment) -> None:
    vault = Vault([OLD_KEY])
    deployment.plant(vault, ("alice", "github", "a1"), ("alice", "linear", "a2"), ("bob", "github", "b1"))
    only_bob = deployment.cli("connections", "list", "--user", "bob").output
    assert "bob" in only_bob and "alice" not in only_bob
    linear = deployment.cli("connections", "list", "--server", "linear").output
    assert "linear" in linear and "github" not in linear
    assert deployment.cli("connections", "list", "--user", "carol").exit_code == 1
    assert deployment.cli("connections", "list", "--server", "Not A Name").exit_code == 2
    assert "no connections" in deployment.cli("connections", "list", "--user", "bob", "--server", "linear").output


def test_revoke_needs_a_filter_and_says_when_nothing_matched(deployment: VaultDeployment) -> None:
    deployment.plant(Vault([OLD_KEY]), ("alice", "github", "a1"))
    assert deployment.cli("connections", "revoke").exit_code == 2
    assert deployment.cli("connections", "revoke", "--server", "../etc").exit_code == 2
    assert deployment.cli("connections", "revoke", "--user", "carol").exit_code == 1
    nothing = deployment.cli("connections", "revoke", "--user", "alice", "--server", "linear")
    assert nothing.exit_code == 1 and "no connection" in nothing.output
    assert len(deployment.connections()) == 1


def test_revoke_by_user_server_or_both_deletes_and_records(deployment: VaultDeployment) -> None:
    vault = Vault([OLD_KEY])
    ids = deployment.plant(vault, ("alice", "github", "SECRET-a1"), ("alice", "linear", "SECRET-a2"),
                           ("bob", "github", "SECRET-b1"), ("carol", "linear", "SECRET-c1"))
    both = deployment.cli("connections", "revoke", "--user", "alice", "--server", "github")
    assert both.exit_code == 0 and "revoked 1 connection(s)" in both.output
    assert deployment.cli("connections", "revoke", "--server", "github").output.startswith("revoked 1")
    assert deployment.cli("connections", "revoke", "--user", "alice").output.startswith("revoked 1")
    assert [(c.user_id, c.server) for c in deployment.connections()] == [(ids["carol"], "linear")]
    recorded = deployment.run(lambda s: records(s, "connection.revoked"))
    assert sorted((r["user"], r["server"]) for r in recorded) == sorted(
        [(ids["alice"], "github"), (ids["bob"], "github"), (ids["alice"], "linear")])
    assert all(r["reason"] == "cli" and r["token_sha256"] == "ab" * 32 for r in recorded)
    assert "SECRET" not in json.dumps(recorded)


# -- vault rotate-key -----------------------------------------------------------------------------------------------

def test_key_file_others_may_read_stops_the_rotation(deployment: VaultDeployment) -> None:
    deployment.key_file.write([OLD_KEY])
    deployment.key_file.path.chmod(0o644)
    result = deployment.cli("vault", "rotate-key")
    assert result.exit_code == 2 and "chmod 600" in result.output
    deployment.key_file.path.chmod(0o600)
    assert deployment.key_file.read() == [OLD_KEY]


# A fixed key: parameters are the same on every xdist worker.
@pytest.mark.parametrize("value", ("not-a-key", "c2hvcnQ", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8,"))
def test_malformed_environment_key_stops_the_rotation(deployment: VaultDeployment, value: str) -> None:
    result = deployment.cli("vault", "rotate-key", env={"DEPUTY_VAULT_KEY": value})
    assert result.exit_code == 2 and "DEPUTY_VAULT_KEY" in result.output
    assert value.strip(",") not in result.output


def test_no_key_yet_means_nothing_to_rotate(deployment: VaultDeployment) -> None:
    result = deployment.cli("vault", "rotate-key")
    assert result.exit_code == 0 and "nothing to rotate" in result.output
    assert not deployment.key_file.path.exists()


def test_rotate_key_file_reseals_everything_and_drops_the_old_key(deployment: VaultDeployment) -> None:
    deployment.key_file.write([OLD_KEY])
    deployment.plant(Vault([OLD_KEY]), ("alice", "github", "a1"), ("bob", "linear", "b1"))
    result = deployment.cli("vault", "rotate-key")
    assert result.exit_code == 0, result.output
    assert "re-sealed 2 connection(s)" in result.output
    keys = deployment.key_file.read()
    assert len(keys) == 1 and keys != [OLD_KEY]
    assert stat.S_IMODE(os.stat(deployment.key_file.path).st_mode) == 0o600
    new, old = Vault(keys), Vault([OLD_KEY])
    assert sorted(opens(new, c) for c in deployment.connections()) == ["a1", "b1"]
    with pytest.raises(VaultKeyError):
        opens(old, deployment.connections()[0])
    recorded = deployment.run(lambda s: records(s, "admin.action"))
    assert recorded[-1]["action"] == "vault.rotate-key" and recorded[-1]["key_id"] == key_id(keys[0]).hex()


def test_rotation_stopped_midway_is_finished_not_restarted(deployment: VaultDeployment) -> None:
    """The file already holds NEW, OLD (the first run put the new key first, re-sealed one row, then stopped): the
    next run re-seals the rest under NEW and drops OLD; no third key."""
    deployment.key_file.write([OLD_KEY])
    deployment.plant(Vault([OLD_KEY]), ("alice", "github", "a1"))
    deployment.plant(Vault([NEW_KEY]), ("bob", "linear", "b1"))
    deployment.key_file.write([NEW_KEY, OLD_KEY])
    result = deployment.cli("vault", "rotate-key")
    assert result.exit_code == 0, result.output
    assert "finishing" in result.output and "re-sealed 1 connection(s)" in result.output
    assert "1 already were" in result.output
    assert deployment.key_file.read() == [NEW_KEY]
    assert sorted(opens(Vault([NEW_KEY]), c) for c in deployment.connections()) == ["a1", "b1"]


def test_rotate_environment_key(deployment: VaultDeployment) -> None:
    """One key in DEPUTY_VAULT_KEY: a new one is printed, nothing changes; NEW,OLD: everything under NEW."""
    old, new = new_key(), new_key()
    deployment.plant(Vault([parse_key(old) or b""]), ("alice", "github", "a1"))
    first = deployment.cli("vault", "rotate-key", env={"DEPUTY_VAULT_KEY": old})
    assert first.exit_code == 0
    printed = first.stdout.strip().splitlines()[0]
    assert parse_key(printed) is not None and printed != old
    assert not deployment.key_file.path.exists()
    assert opens(Vault([parse_key(old) or b""]), deployment.connections()[0]) == "a1"
    second = deployment.cli("vault", "rotate-key", env={"DEPUTY_VAULT_KEY": f"{new},{old}"})
    assert second.exit_code == 0, second.output
    assert "re-sealed 1 connection(s)" in second.output and "keep only the first key" in second.output
    assert opens(Vault([parse_key(new) or b""]), deployment.connections()[0]) == "a1"
    assert not deployment.key_file.path.exists()
