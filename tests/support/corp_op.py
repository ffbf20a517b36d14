"""The organisation's identity provider ``corp`` as the end-to-end tests run it (issue 14, issue 15): panva's
``oidc-provider`` (:mod:`tests.support.oidc_op`) with one confidential client, Deputy, whose redirect URI is
``/login/callback/corp`` on a port chosen before Deputy starts (the OP must know it first).

:func:`deputy_port` and :func:`op` are module-scope pytest fixtures; a test module imports them by name and
configures Deputy with :func:`corp_provider_toml` and ``port=deputy_port``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.oidc_op import OpClient, OpenIdProvider, openid_provider
from tests.support.sdk_client import free_port

CORP_CLIENT_ID = "deputy-e2e"
CORP_CLIENT_SECRET = "op-client-secret-for-tests-0123456789"


@pytest.fixture(scope="module")
def deputy_port() -> int:
    return free_port()


@contextmanager
def corp_openid_provider(deputy_port: int, accounts: Mapping[str, Mapping[str, Any]] | None = None
                         ) -> Iterator[OpenIdProvider]:
    """The OP with Deputy (on ``deputy_port``) as its client; ``accounts`` as :func:`openid_provider` takes them."""
    client = OpClient(CORP_CLIENT_ID, (f"http://127.0.0.1:{deputy_port}/login/callback/corp",), CORP_CLIENT_SECRET)
    with openid_provider([client], accounts=accounts) as running:
        yield running


@pytest.fixture(scope="module")
def op(deputy_port: int) -> Iterator[OpenIdProvider]:
    with corp_openid_provider(deputy_port) as running:
        yield running


def corp_provider_toml(op: OpenIdProvider, scopes: Sequence[str], required_groups: Sequence[str] = ()) -> str:
    """Deputy's ``[[identity_providers]]`` entry for ``op``, asking for ``scopes``."""
    required = f"required_groups = {toml_list(required_groups)}\n" if required_groups else ""
    return f'''
[[identity_providers]]
name = "corp"
title = "Corp sign-in"
issuer = "{op.issuer}"
client_id = "{CORP_CLIENT_ID}"
client_secret = "{CORP_CLIENT_SECRET}"
scopes = {toml_list(scopes)}
{required}'''


def toml_list(strings: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{string}"' for string in strings) + "]"
