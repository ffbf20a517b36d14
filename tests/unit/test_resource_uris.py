"""Resource URIs decided only in the one spelling every reader reads alike (deputy.gateway.resource_uris).

Abuse first: each refused URI is one an upstream reads as another (a template variable percent-decodes, the
TypeScript SDK's URL parser lower-cases and removes dot-segments), so a forbid written on one spelling would not
see the other.
"""

from __future__ import annotations

import pytest

from deputy.gateway.jsonrpc import JsonRpcRefused, classify
from deputy.gateway.resource_uris import uri_problem


@pytest.mark.parametrize(("uri", "why"), [
    ("demo://users/%31", "stands for itself"),          # the digit 1: demo://users/1 upstream
    ("demo://users/%41da", "stands for itself"),
    ("demo://users/%7E", "stands for itself"),
    ("demo://users/%211", "stands for itself"),         # "!" may stand raw in a segment: both decode to "!1"
    ("demo://users/%40x", "stands for itself"),
    ("demo://users/a%2fb", "lower-case"),
    ("demo://users/%2", "two hexadecimal digits"),
    ("demo://users/%zz", "two hexadecimal digits"),
    ("demo://users/%", "two hexadecimal digits"),
    ("Demo://users/1", "upper-case scheme"),
    ("demo://Users/1", "upper-case host"),
    ("https://user@Example.com/x", "upper-case host"),
    ("file:///srv/./secret", "path segment"),
    ("file:///srv/public/../secret", "path segment"),
    ("demo://users/../admin", "path segment"),
    ("demo://users/1 ", "whitespace"),
    ("demo://users/\t1", "whitespace"),
    ("demo://users/ü", "non-ASCII"),
    ("demo://users/\u202e1", "non-ASCII"),
    ("http://[::1/x", "not a URI"),
])
def test_a_uri_an_upstream_could_read_as_another_is_refused(uri: str, why: str) -> None:
    problem = uri_problem(uri)
    assert problem is not None and why in problem, problem
    with pytest.raises(JsonRpcRefused) as refused:
        classify("resources/read", {"uri": uri}, 3)
    assert (refused.value.code, refused.value.request_id) == (-32602, 3)
    assert "normal form" in refused.value.message


@pytest.mark.parametrize("uri", [
    "demo://readme", "demo://users/1", "file:///srv/data/report.txt", "https://example.com/a/b?c=d&e=f#g",
    "repo://owner%2Fname",        # an encoded "/" is not a "/": one reading
    "notes://a%20b", "notes://100%25", "notes://caf%C3%A9",
    "urn:isbn:0451450523", "mailto:alice@example.com", "https://[2001:db8::1]:8443/x", "demo://users/..x",
])
def test_uris_in_their_one_spelling_pass(uri: str) -> None:
    assert uri_problem(uri) is None
    assert classify("resources/read", {"uri": uri}).uri == uri


def test_a_completion_of_a_resource_is_held_to_the_same_spelling_a_template_to_its_text() -> None:
    with pytest.raises(JsonRpcRefused):
        classify("completion/complete", {"ref": {"type": "ref/resource", "uri": "demo://users/%31"}})
    template = classify("completion/complete", {"ref": {"type": "ref/resource", "uri": "demo://users/{id}"}})
    assert template.uri == "demo://users/{id}"
