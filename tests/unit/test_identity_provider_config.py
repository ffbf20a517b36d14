"""Issue 14, item 1: ``[[identity_providers]]`` and ``local_users``, checked at start like every other key.

Abuse first: names that would break a URL, issuers that are not one exact https string, two entries a response
could not tell apart (RFC 9207), client authentication that is ambiguous or a key that is not a private
asymmetric one, claim names and lists out of bounds, typos (the strict configuration). Then what a good entry
reads as.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, OctKey, RSAKey

from deputy.config_values import UnknownKey
from tests.support.config_files import config_error, load, offline_config

ISSUER = "https://login.example.com"
ENTRY = f'[[identity_providers]]\nname = "corp"\nissuer = "{ISSUER}"\nclient_id = "deputy"\nclient_secret = "s"\n'


def provider_error(tmp_path: Path, entry: str, environ: dict[str, str] | None = None) -> tuple[str, str]:
    error = config_error(tmp_path, offline_config(tmp_path, entry).read_text(), environ)
    return error.key, error.problem


def entry(**values: str) -> str:
    """One entry: the defaults of :data:`ENTRY` with ``values`` (TOML value texts) replacing or adding keys; a
    value of ``""`` drops the key."""
    keys = {"name": '"corp"', "issuer": f'"{ISSUER}"', "client_id": '"deputy"', "client_secret": '"s"', **values}
    return "[[identity_providers]]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v)


# --- abuse -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ['"Corp"', '"corp/x"', '"../x"', '"a b"', f'"{"x" * 33}"', '""', "1",
                                  '"corp\\n"', '"c\\u00f6rp"'])
def test_a_name_that_is_not_a_url_token_is_refused(tmp_path: Path, name: str) -> None:
    assert provider_error(tmp_path, entry(name=name))[0] == "identity_providers[0].name"


@pytest.mark.parametrize("issuer", ['"http://login.example.com"', '"https://login.example.com?tenant=1"',
                                    '"https://login.example.com#x"', '"login.example.com"', '"ftp://x.example"',
                                    f'"https://{"x" * 250}.example"', "7"])
def test_an_issuer_that_is_not_an_https_identifier_is_refused(tmp_path: Path, issuer: str) -> None:
    assert provider_error(tmp_path, entry(issuer=issuer))[0] == "identity_providers[0].issuer"


def test_plain_http_is_allowed_on_loopback_only(tmp_path: Path) -> None:
    for issuer in ("http://127.0.0.1:9000", "http://localhost:9000/realms/x", "http://[::1]:9000"):
        settings = load(tmp_path, offline_config(tmp_path, entry(issuer=f'"{issuer}"')).read_text())
        assert settings.identity_providers[0].issuer == issuer  # exactly as written


def test_two_entries_with_one_name_or_one_issuer_are_refused(tmp_path: Path) -> None:
    other = entry(issuer='"https://other.example.com"')
    assert provider_error(tmp_path, ENTRY + other) == ("identity_providers[1].name", "corp is used twice")
    assert provider_error(tmp_path, ENTRY + entry(name='"other"'))[0] == "identity_providers[1].issuer"


@pytest.mark.parametrize(("values", "key"), [
    ({"client_secret": ""}, "identity_providers[0]"),  # neither
    ({"private_key_file": '"k.pem"'}, "identity_providers[0]"),  # both
    ({"client_secret": '""'}, "identity_providers[0].client_secret"),
    ({"client_secret": '{env = "DEPUTY_TEST_UNSET_SECRET"}'}, "identity_providers[0].client_secret"),
    ({"client_secret": '{file = "secret.txt"}'}, "identity_providers[0].client_secret.file"),  # env only here
    ({"client_id": '""'}, "identity_providers[0].client_id"),
    ({"scopes": '["email", "profile"]'}, "identity_providers[0].scopes"),
    ({"scopes": '["openid", "bad scope"]'}, "identity_providers[0].scopes[1]"),
    ({"groups_claim": '"grou ps"'}, "identity_providers[0].groups_claim"),
    ({"username_claim": '"https://x/claims/name"'}, "identity_providers[0].username_claim"),
    ({"extra_claims": '["a","b","c","d","e","f","g","h","i"]'}, "identity_providers[0].extra_claims"),
    ({"extra_claims": '["dept", "1abc"]'}, "identity_providers[0].extra_claims[1]"),
    ({"allowed_email_domains": '["@example.com"]'}, "identity_providers[0].allowed_email_domains[0]"),
    ({"allowed_email_domains": '["*.example.com"]'}, "identity_providers[0].allowed_email_domains[0]"),
    ({"required_groups": '["ok", 3]'}, "identity_providers[0].required_groups[1]"),
    ({"title": '"line\\nbreak"'}, "identity_providers[0].title"),
])
def test_a_bad_value_is_named_by_its_path(tmp_path: Path, values: dict[str, str], key: str) -> None:
    assert provider_error(tmp_path, entry(**values))[0] == key


def test_a_secret_is_never_in_the_settings_repr(tmp_path: Path) -> None:
    text = offline_config(tmp_path, entry(client_secret='{env = "IDP_SECRET"}')).read_text()
    settings = load(tmp_path, text, {"IDP_SECRET": "hunter2-very-secret"})
    assert settings.identity_providers[0].client_secret == "hunter2-very-secret"
    assert "hunter2" not in repr(settings)


def private_key_error(tmp_path: Path, content: bytes) -> tuple[str, str]:
    (tmp_path / "key").write_bytes(content)
    return provider_error(tmp_path, entry(client_secret="", private_key_file='"key"'))


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
@pytest.mark.parametrize("content", [
    "public_ec_pem", "public_rsa_jwk", "p521", "rsa1024", "oct_jwk", "garbage", "empty", "okp",
])
def test_a_key_file_without_an_acceptable_private_key_is_refused(tmp_path: Path, content: str) -> None:
    makers: dict[str, Callable[[], bytes]] = {
        "public_ec_pem": lambda: ECKey.generate_key("P-256", private=True).as_pem(private=False),
        "public_rsa_jwk": lambda: json.dumps(RSAKey.generate_key(2048, private=True).as_dict(private=False)).encode(),
        "p521": lambda: ECKey.generate_key("P-521", private=True).as_pem(private=True),
        "rsa1024": lambda: RSAKey.generate_key(1024, private=True, auto_kid=True).as_pem(private=True),
        "oct_jwk": lambda: json.dumps(OctKey.generate_key(256).as_dict()).encode(),
        "garbage": lambda: b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
        "empty": lambda: b"",
        "okp": lambda: b'{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"}',
    }
    assert private_key_error(tmp_path, makers[content]())[0] == "identity_providers[0].private_key_file"


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    key, problem = provider_error(tmp_path, entry(client_secret="", private_key_file='"nowhere.pem"'))
    assert key == "identity_providers[0].private_key_file" and "cannot read" in problem


@pytest.mark.parametrize(("top", "table", "key", "meant"), [
    ("", entry(issur='"x"'), "identity_providers[0].issur", "issuer"),
    ("", entry(client_secret='{env = "X", file = "y"}'), "identity_providers[0].client_secret.file", None),
    ("", entry(requred_groups='["x"]'), "identity_providers[0].requred_groups", "required_groups"),
    ("local_user = false\n", ENTRY, "local_user", "local_users"),
])
def test_a_typo_is_refused_before_anything_is_read(tmp_path: Path, top: str, table: str, key: str,
                                                   meant: str | None) -> None:
    """Strict configuration (issue 13, item 4): the key probably meant, not what its absence causes."""
    error = config_error(tmp_path, top + offline_config(tmp_path, table).read_text())
    assert isinstance(error, UnknownKey)
    assert (error.key, error.suggestion) == (key, meant)


def test_local_users_cannot_be_off_without_a_provider(tmp_path: Path) -> None:
    path = offline_config(tmp_path, "")
    text = "local_users = false\n" + path.read_text()
    assert config_error(tmp_path, text).key == "local_users"


# --- what a good entry reads as ----------------------------------------------------------------------------------

def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, offline_config(tmp_path, ENTRY).read_text())
    [provider] = settings.identity_providers
    assert (provider.name, provider.title, provider.issuer, provider.client_id, provider.client_secret) == (
        "corp", "corp", ISSUER, "deputy", "s")
    assert provider.redirect_uri == "https://deputy.example.com/login/callback/corp"
    assert provider.scopes == ("openid", "email", "profile")
    assert provider.username_claims == ("preferred_username", "email", "sub")
    assert (provider.groups_claim, provider.extra_claims, provider.allowed_email_domains,
            provider.required_groups, provider.client_key) == ("groups", (), (), (), None)
    assert settings.local_users is False  # a provider is configured: local users off unless asked for


def test_local_users_default_on_without_providers_and_on_request_with_them(tmp_path: Path) -> None:
    assert load(tmp_path, offline_config(tmp_path, "").read_text()).local_users is True
    path = offline_config(tmp_path, ENTRY)
    settings = load(tmp_path, "local_users = true\n" + path.read_text())
    assert settings.local_users is True and len(settings.identity_providers) == 1


def test_a_full_entry(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", private=True)
    (tmp_path / "idp.pem").write_bytes(key.as_pem(private=True))
    text = entry(title='"Sign in with Corp"', client_secret="", private_key_file='"idp.pem"',
                 scopes='["openid", "email", "groups"]', username_claim='"email"', groups_claim='"roles"',
                 extra_claims='["department", "cost_center"]',
                 allowed_email_domains='["Example.com", "corp.example"]', required_groups='["staff"]')
    [provider] = load(tmp_path, offline_config(tmp_path, text).read_text()).identity_providers
    assert provider.client_key is not None and provider.client_secret is None
    assert (provider.client_key.algorithm, provider.client_key.kid) == ("ES384", key.thumbprint())
    assert provider.username_claims == ("email",) and provider.groups_claim == "roles"
    assert provider.allowed_email_domains == ("example.com", "corp.example")
    assert provider.extra_claims == ("department", "cost_center") and provider.required_groups == ("staff",)
    assert "PRIVATE" not in repr(provider) and str(key.as_dict(private=True)["d"]) not in repr(provider)


def test_rsa_key_from_a_jwk_keeps_its_kid_and_ps256(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "PS256"}, private=True)
    (tmp_path / "k.json").write_text(json.dumps(key.as_dict(private=True)))
    [provider] = load(tmp_path, offline_config(tmp_path, entry(client_secret="", private_key_file='"k.json"'))
                      .read_text()).identity_providers
    assert provider.client_key is not None
    assert (provider.client_key.algorithm, provider.client_key.kid) == ("PS256", "k1")
