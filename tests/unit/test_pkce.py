"""PKCE S256 (RFC 7636): the Appendix B vector, verifier syntax, challenge syntax."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deputy.oauth.pkce import is_valid_challenge, s256, verifier_matches

# RFC 7636 Appendix B: the verifier is base64url of these 32 octets.
RFC_OCTETS = bytes([116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
                    22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121])
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
UNRESERVED = string.ascii_letters + string.digits + "-._~"

verifiers = st.text(alphabet=UNRESERVED, min_size=43, max_size=128)


def test_rfc7636_appendix_b() -> None:
    assert base64.urlsafe_b64encode(RFC_OCTETS).rstrip(b"=").decode() == RFC_VERIFIER
    assert s256(RFC_VERIFIER) == RFC_CHALLENGE
    assert verifier_matches(RFC_VERIFIER, RFC_CHALLENGE) is True
    assert is_valid_challenge(RFC_CHALLENGE) is True


def test_wrong_verifier() -> None:
    wrong = RFC_VERIFIER[:-1] + ("x" if RFC_VERIFIER[-1] != "x" else "y")
    assert verifier_matches(wrong, RFC_CHALLENGE) is False


def test_plain_method_is_not_accepted() -> None:
    # A "plain" challenge equals the verifier; S256 never matches it.
    assert verifier_matches(RFC_VERIFIER, RFC_VERIFIER) is False


@pytest.mark.parametrize("length", [0, 1, 42])
def test_short_verifier(length: int) -> None:
    verifier = ("a" * 128)[:length]
    assert verifier_matches(verifier, s256(verifier)) is False


@pytest.mark.parametrize("length", [129, 200])
def test_long_verifier(length: int) -> None:
    verifier = "a" * length
    assert verifier_matches(verifier, s256(verifier)) is False


@pytest.mark.parametrize("length", [43, 128])
def test_boundary_lengths(length: int) -> None:
    verifier = "A" * length
    assert verifier_matches(verifier, s256(verifier)) is True


@pytest.mark.parametrize("bad", [" ", "+", "/", "=", "%", "!", "\t", "\n", "\u00e9", "\u0661"])
def test_illegal_character_in_verifier(bad: str) -> None:
    for verifier in ("a" * 42 + bad, bad + "a" * 42, "a" * 21 + bad + "a" * 21):
        if bad.isascii():
            assert verifier_matches(verifier, s256(verifier)) is False, repr(verifier)
        else:
            assert verifier_matches(verifier, RFC_CHALLENGE) is False, repr(verifier)


def test_trailing_newline_in_verifier() -> None:
    """RFC 7636 §4.1: a verifier is 43-128 unreserved characters; a trailing LF is not one of them."""
    verifier = "a" * 43 + "\n"
    assert verifier_matches(verifier, s256(verifier)) is False
    verifier = "a" * 128 + "\n"  # 129 characters
    assert verifier_matches(verifier, s256(verifier)) is False


@pytest.mark.parametrize("challenge", [
    "",
    RFC_CHALLENGE[:-1],
    RFC_CHALLENGE + "A",
    RFC_CHALLENGE + "=",
    RFC_CHALLENGE[:-1] + "+",
    RFC_CHALLENGE[:-1] + "/",
    RFC_CHALLENGE[:-1] + ".",
    RFC_CHALLENGE + "\n",
    " " + RFC_CHALLENGE[1:],
])
def test_invalid_challenge(challenge: str) -> None:
    assert is_valid_challenge(challenge) is False


@given(verifiers)
def test_any_valid_verifier_matches_its_challenge(verifier: str) -> None:
    challenge = s256(verifier)
    assert is_valid_challenge(challenge) is True
    assert verifier_matches(verifier, challenge) is True


@given(verifiers, verifiers)
def test_a_different_verifier_does_not_match(verifier: str, other: str) -> None:
    if other != verifier:
        assert verifier_matches(other, s256(verifier)) is False
