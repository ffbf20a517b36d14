"""Property: registration metadata of any JSON shape is either accepted or refused as
``invalid_client_metadata`` / ``invalid_redirect_uri`` (RFC 7591 §3.2.2) — never another exception, which the
endpoint would answer with a 500 and a traceback."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deputy.oauth.client_metadata import parse_client_metadata
from deputy.oauth.errors import InvalidClientMetadata, InvalidRedirectUri

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
urlish = st.sampled_from(["https://[", "https://[x", "https://a.example:99999/", "http://[::1", "https://@/",
                          "https://example.com/#f", "http://localhost:1/cb", "https://x.example/cb", "", "//"])
FIELDS = ("redirect_uris", "application_type", "token_endpoint_auth_method", "grant_types", "response_types",
          "client_name", "jwks", "jwks_uri", "client_uri", "logo_uri", "tos_uri", "policy_uri", "contacts", "scope")


@st.composite
def metadata(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=8)):
        raw[name] = draw(json_values | urlish | st.lists(urlish | json_values, max_size=3))
    return raw


@settings(max_examples=400, deadline=None)
@given(metadata())
def test_any_metadata_is_accepted_or_refused_with_an_oauth_error(raw: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidClientMetadata, InvalidRedirectUri):
        parse_client_metadata(raw)


@pytest.mark.parametrize("raw", [
    {"redirect_uris": ["http://localhost:5555/cb"], "grant_types": [[1]]},
    {"redirect_uris": ["http://localhost:5555/cb"], "client_uri": "https://["},
    {"redirect_uris": ["http://localhost:5555/cb"], "jwks_uri": "https://[x"},
    {"redirect_uris": ["http://localhost:5555/cb"], "logo_uri": "https://a.example:99999/"},
])
def test_malformed_fields_found_by_review_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidClientMetadata):
        parse_client_metadata(raw)
