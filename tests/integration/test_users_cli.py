"""Issue 14, item 3: ``deputy users list | disable | enable`` on both backends.

The list shows each user's source, e-mail, groups and whether she is disabled; what an identity provider stated
is outside text (shown, never obeyed; bounded). Disabling revokes every grant she holds and is recorded
(``user.disabled``); enabling is recorded (``user.enabled``) and brings no grant back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deputy.services import Services
from tests.support.cli_deployment import ACTING, HOSTILE, Deployment, records, widen_consoles
from tests.support.config_files import config_file
from tests.support.databases import database_url

REDIRECT = "http://127.0.0.1:33418/callback"


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    widen_consoles(monkeypatch)


@pytest.fixture
def deployment(backend: str, tmp_path: Path) -> Iterator[Deployment]:
    with database_url(backend, tmp_path) as url:
        yield Deployment(config_file(tmp_path, (
            f'public_url = "https://deputy.example.com"\ndata_dir = "{tmp_path / "data"}"\n'
            f'database_url = "{url}"\n\n[servers.demo]\nurl = "http://127.0.0.1:9/mcp"\nscopes = ["demo:tools"]\n')))


def test_list_shows_hostile_profile_as_text_and_bounded(deployment: Deployment) -> None:
    """An identity provider's e-mail and groups reach the terminal as escapes, and a thousand groups as a few."""
    async def plant(services: Services) -> None:
        await services.users.add("olga", "olga's passphrase")
        groups = [f":warning:{HOSTILE}", *(f"g{i}" for i in range(500))]  # listed first
        await services.users.upsert_federated("okta", "https://okta.example.com", "00u1", HOSTILE,
                                              "[conceal]mail[/conceal]@example.com", HOSTILE, groups, {})
    deployment.run(plant)
    listed = deployment.cli("users", "list")
    assert listed.exit_code == 0, listed.output
    assert not ACTING.search(listed.output), repr(ACTING.findall(listed.output))
    assert "x[/][conceal]secret" in listed.output and ":warning:" in listed.output  # never markup, never emoji
    assert "[conceal]mail[/conceal]@example.com" in listed.output
    assert "okta" in listed.output and "local" in listed.output and "olga" in listed.output
    assert "more)" in listed.output and "g499" not in listed.output  # bounded
    assert "x-conceal-secret-conceal" in listed.output  # her username: the label rule's, not her words


def test_disable_revokes_grants_records_and_enable_restores_only_sign_in(deployment: Deployment) -> None:
    async def plant(services: Services) -> tuple[str, str]:
        await services.clients.put(client_id="agent", client_name="agent", redirect_uris=[REDIRECT],
                                   token_endpoint_auth_method="none", source="cli")
        olga = await services.users.add("olga", "olga's passphrase")
        fed = await services.users.upsert_federated("kc", "https://kc.example.com", "s-1", "fay", None, None, [], {})
        grant = await services.grants.create(client_id="agent", user_id=fed.user_id, resource="r", scope="s",
                                             auth_time=1)
        kept = await services.grants.create(client_id="agent", user_id=olga.user_id, resource="r", scope="s",
                                            auth_time=1)
        return grant.grant_id, kept.grant_id

    grant_id, kept_id = deployment.run(plant)
    disabled = deployment.cli("users", "disable", "fay@kc")
    assert disabled.exit_code == 0, disabled.output
    assert "revoked 1 grant" in disabled.output
    assert "yes" in deployment.cli("users", "list").output
    unknown = deployment.cli("users", "disable", "nobody\x1b[2J")
    assert unknown.exit_code == 1 and "\x1b" not in unknown.output

    async def after_disable(services: Services) -> None:
        revoked = {r.grant_id for r in await services.grants.revocations_since(0)}
        assert grant_id in revoked and kept_id not in revoked  # what the gateway's revocation view reads
        [record] = await records(services, "user.disabled")
        assert record["username"] == "fay@kc" and record["revoked_grants"] == 1
        with pytest.raises(Exception, match="disabled"):
            await services.users.upsert_federated("kc", "https://kc.example.com", "s-1", "fay", None, None, [], {})
    deployment.run(after_disable)

    enabled = deployment.cli("users", "enable", "fay@kc")
    assert enabled.exit_code == 0, enabled.output

    async def after_enable(services: Services) -> None:
        [record] = await records(services, "user.enabled")
        assert record["username"] == "fay@kc"
        user = await services.users.upsert_federated("kc", "https://kc.example.com", "s-1", "fay", None, None, [], {})
        assert not user.disabled
        assert (await services.grants.get(grant_id)).revoked_at is not None  # type: ignore[union-attr]
    deployment.run(after_enable)


def test_add_refuses_a_federated_form_name(deployment: Deployment) -> None:
    added = deployment.cli("users", "add", "alice@okta", "--password", "pw")
    assert added.exit_code == 2 and "@" in added.output


def test_show_gives_a_federated_users_identity_for_approver_subjects(deployment: Deployment) -> None:
    """Her username is a first-come label; `users show` gives what names her: issuer and sub, ready to paste."""
    async def plant(services: Services) -> None:
        await services.users.add("olga", "olga's passphrase")
        await services.users.upsert_federated("okta", "https://okta.example.com", '00u"1[conceal]s[/conceal]', "Bob!",
                                              "bob@example.com", HOSTILE, ["oncall", f"g{HOSTILE}"], {})
    deployment.run(plant)
    shown_user = deployment.cli("users", "show", "bob@okta")
    assert shown_user.exit_code == 0, shown_user.output
    assert not ACTING.search(shown_user.output), repr(ACTING.findall(shown_user.output))
    assert "https://okta.example.com" in shown_user.output and "oncall" in shown_user.output
    assert "x[/][conceal]secret" in shown_user.output  # a group, as text, never markup
    assert '00u"1[conceal]s[/conceal]' in shown_user.output  # the sub (printable, Deputy's bound) likewise
    hint = next(row for row in shown_user.output.splitlines() if "approver_subjects" in row)
    assert 'approver_subjects = { okta = ["00u\\"1' in hint, hint  # a TOML string: the quote escaped
    local = deployment.cli("users", "show", "olga")
    assert local.exit_code == 0 and "local" in local.output
    assert "issuer" not in local.output and "approver_subjects" not in local.output
    missing = deployment.cli("users", "show", "nobody\x1b[2J")
    assert missing.exit_code == 1 and "\x1b" not in missing.output
