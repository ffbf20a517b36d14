"""Which budget a peer counts against (:func:`deputy.rate_limit.address_key`): an IPv6 peer by its /64, so an
attacker holding a whole network (RFC 4291 §2.5.4: 2^64 interface identifiers) gets one budget, not 2^64."""

from __future__ import annotations

import pytest

from deputy.rate_limit import address_key


@pytest.mark.parametrize(("host", "key"), [
    ("127.0.0.1", "127.0.0.1"),
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),  # an IPv4 peer on a dual-stack socket is that IPv4 address
    (None, "unknown"),
    ("testclient", "testclient"),  # not an address (a test transport's name): itself
])
def test_address_key(host: str | None, key: str) -> None:
    assert address_key(host) == key


def test_two_networks_are_two_budgets() -> None:
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
