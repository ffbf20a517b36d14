"""``trusted_proxies``: which peers' ``X-Forwarded-For`` names the client (deputy.forwarded_client).

Abuse first: a client that reaches Deputy directly, or that writes its own entries in front of a proxy's, must
not choose the address its budgets are counted against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deputy.config_values import ConfigError
from deputy.forwarded_client import MAX_PROXIES, ForwardedClient, trusted_proxies

PROXY = ("10.0.0.7", 40000)
PROXIES = ("10.0.0.0/8", "2001:db8::/32")


async def client_seen(peer: tuple[str, int] | None, *forwarded: str, proto: str | None = None,
                      proxies: tuple[str, ...] = PROXIES) -> tuple[Any, str]:
    """The ``client`` and ``scheme`` the app behind :class:`ForwardedClient` sees for one request."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(client=scope.get("client"), scheme=scope["scheme"], keys=set(scope))

    headers = [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    scope = {"type": "http", "client": peer, "scheme": "http", "headers": headers, "path": "/register"}
    await ForwardedClient(app, proxies)(scope, None, None)  # type: ignore[arg-type]
    assert not any(str(key).startswith("deputy.") for key in seen["keys"]), "nothing of its own left in the scope"
    return seen["client"], seen["scheme"]


async def test_a_client_reaching_deputy_directly_cannot_name_its_address() -> None:
    client, _ = await client_seen(("203.0.113.9", 5555), "198.51.100.1")
    assert client == ("203.0.113.9", 5555)


async def test_entries_the_client_wrote_in_front_of_the_proxys_are_not_believed() -> None:
    """The proxy appends what it saw; everything to its left is the client's own text."""
    client, _ = await client_seen(PROXY, "198.51.100.1, 192.0.2.66", "203.0.113.5")
    assert client[0] == "203.0.113.5"


async def test_a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_address() -> None:
    client, _ = await client_seen(PROXY, "198.51.100.1, 203.0.113.5, 10.1.2.3, 10.9.9.9")
    assert client[0] == "203.0.113.5"
    ipv6, _ = await client_seen(("2001:db8::1", 443), "2001:db9::2, [2001:db9:aaaa::5]:1234, 2001:db8::9")
    assert ipv6[0] == "2001:db9:aaaa::5"


async def test_a_proxy_seen_through_a_dual_stack_socket_is_still_trusted() -> None:
    client, _ = await client_seen(("::ffff:10.0.0.7", 40000), "203.0.113.5")
    assert client[0] == "203.0.113.5"
    outsider, _ = await client_seen(("::ffff:11.0.0.7", 40000), "203.0.113.5")
    assert outsider == ("::ffff:11.0.0.7", 40000)


@pytest.mark.parametrize("garbage", ["unknown", "evil.example", "x" * 4000, "_hidden", "1.2.3.4.5", "", " , "])
async def test_what_is_not_an_ip_address_leaves_the_proxy_as_the_client(garbage: str) -> None:
    """A budget keyed by free text would let one client be as many clients as it likes."""
    client, _ = await client_seen(PROXY, garbage)
    assert client == PROXY


async def test_the_scheme_is_never_taken_from_a_forwarded_header() -> None:
    _, scheme = await client_seen(PROXY, "203.0.113.5", proto="https")
    assert scheme == "http"
    _, direct = await client_seen(("203.0.113.9", 1), proto="https")
    assert direct == "http"


async def test_no_peer_and_other_scopes_pass_untouched() -> None:
    assert (await client_seen(None, "203.0.113.5"))[0] is None
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await ForwardedClient(app, PROXIES)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


@pytest.mark.parametrize(("value", "message"), [
    (["*"], "trusting every peer"),
    ([" * "], "trusting every peer"),
    (["10.0.0.1/8"], "host bits set"),
    (["10.0.0.0/33"], "not an IP address or network"),
    (["proxy.internal"], "not an IP address or network"),
    (["10.0.0.0/8", ""], "must be a non-empty string"),
    ("10.0.0.0/8", "must be"),
    ([10], "must be a non-empty string"),
    ([f"10.0.{i // 256}.{i % 256}" for i in range(MAX_PROXIES + 1)], f"at most {MAX_PROXIES}"),
])
def test_trusted_proxies_are_refused_unless_each_is_an_address_or_network(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies") as refused:
        trusted_proxies({"trusted_proxies": value})
    assert message in str(refused.value), str(refused.value)


def test_trusted_proxies_are_read_canonical() -> None:
    assert trusted_proxies({}) == ()
    assert trusted_proxies({"trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "2001:DB8::/32", "127.0.0.1/32"]}) == (
        "127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32")


def test_the_configuration_reads_trusted_proxies(tmp_path: Path) -> None:
    from deputy.config import load_settings

    config = tmp_path / "deputy.toml"
    config.write_text('public_url = "http://127.0.0.1:8000"\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n'
                      f'data_dir = "{tmp_path}"\n[servers.demo]\nurl = "http://127.0.0.1:9/mcp"\n'
                      'scopes = ["demo:tools"]\n')
    assert load_settings(config, environ={}).trusted_proxies == ("10.0.0.0/8", "::1/128")
