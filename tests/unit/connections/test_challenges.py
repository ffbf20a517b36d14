"""RFC 9110 §11.6.1 / RFC 6750 §3: reading an upstream's ``WWW-Authenticate`` (resource_metadata, scope, error)."""

from __future__ import annotations

import pytest

from deputy.connections.upstream_http import Challenge, parse_challenge, parse_challenges


@pytest.mark.parametrize(("header", "expected"), [
    # A comma or an escaped quote inside a quoted string is part of the value.
    ('Bearer scope="a, b", resource_metadata="https://x/prm"', Challenge("https://x/prm", "a, b", None)),
    ('Bearer error="insufficient_scope", scope="say \\"hi\\""', Challenge(None, 'say "hi"', "insufficient_scope")),
    # A Basic challenge before and after: only Bearer's parameters count.
    ('Basic realm="scope=evil", Bearer scope=read', Challenge(None, "read", None)),
    ('Bearer realm="r", Basic scope="evil", resource_metadata="https://evil/prm"', Challenge()),
    # Scheme and parameter names are case-insensitive; a repeated parameter keeps its first value.
    ('bEaReR SCOPE="one" , scope="two"', Challenge(None, "one", None)),
    # A parameter whose name merely ends with another's is not that one.
    ('Bearer xscope="evil", scope="good"', Challenge(None, "good", None)),
    ('Bearer', Challenge()),
    ('', Challenge()),
    ('Bearer scope="unterminated', Challenge()),
    ('Bearer abc123==', Challenge()),
    ('DPoP algs="ES256", Bearer resource_metadata="https://x/prm"', Challenge("https://x/prm", None, None)),
    # A URL is not a token (RFC 9110 §5.6.2): unquoted, it is not read (discovery falls back to well-known URLs).
    ('Bearer resource_metadata=https://x/prm', Challenge()),
])
def test_only_the_bearer_challenges_parameters_are_read(header: str, expected: Challenge) -> None:
    assert parse_challenge(header) == expected


def test_several_challenges_are_read_in_order() -> None:
    assert parse_challenges('Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"') == [
        ("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        ("basic", {"realm": "simple"}),
    ]
