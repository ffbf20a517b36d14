"""Why a federated sign-in failed: a closed set of reasons, each a typed error naming the identity provider.

Every reason is a code (later the ``reason`` of a ``signin.failed`` audit record) and a short ``detail`` for the
operator's log and the error page; the detail never holds a token, a code or a secret, and text that came from
the provider is cut to :data:`MAX_DETAIL` characters of printable ASCII before it is put there.
"""

from __future__ import annotations

from typing import Literal

MAX_DETAIL = 200

# The provider could not be used: discovery, its keys or its token endpoint.
ProviderProblem = Literal["discovery_failed", "keys_unavailable", "token_request_failed"]
# OpenID Connect Core 1.0 §3.1.3.7: the ID token is not believed.
IdTokenProblem = Literal["bad_signature", "wrong_issuer", "wrong_audience", "expired", "issued_in_future",
                         "nonce_mismatch", "alg_not_allowed", "unknown_kid", "malformed", "authentication_too_old"]
# The authorization response (RFC 6749 §4.1.2, RFC 9207 §2.4) is not this browser's or says no.
CallbackProblem = Literal["state_mismatch", "state_expired", "issuer_mismatch", "issuer_missing", "idp_error",
                          "code_missing"]
# The user the provider names may not sign in here (deputy.federation.claims).
AdmissionProblem = Literal["no_username", "bad_claims", "email_not_verified", "email_domain_not_allowed",
                           "not_in_required_groups"]


def shown(text: object) -> str:
    """Outside text as a detail shows it: printable ASCII only (anything else as ``?``), bounded."""
    value = str(text)
    cut = value[:MAX_DETAIL]
    return "".join(c if " " <= c <= "~" else "?" for c in cut) + ("…" if len(value) > MAX_DETAIL else "")


class SignInFailed(Exception):
    """A federated sign-in through provider ``idp`` failed for ``reason`` (a code); ``detail`` says more."""

    reason: str

    def __init__(self, idp: str, reason: str, detail: str) -> None:
        super().__init__(f"sign-in through {idp} failed: {reason}: {detail}")
        self.idp = idp
        self.reason = reason
        self.detail = detail


class ProviderUnavailable(SignInFailed):
    """The provider's metadata, keys or token endpoint could not be used; tried again on the next sign-in."""

    def __init__(self, idp: str, reason: ProviderProblem, detail: str) -> None:
        super().__init__(idp, reason, detail)


class IdTokenRefused(SignInFailed):
    """The ID token failed validation (OpenID Connect Core 1.0 §3.1.3.7)."""

    def __init__(self, idp: str, reason: IdTokenProblem, detail: str) -> None:
        super().__init__(idp, reason, detail)


class CallbackRefused(SignInFailed):
    """The authorization response is not the one this sign-in waits for, or carries the provider's ``error``
    (then ``error`` is its code, printable ASCII and bounded)."""

    def __init__(self, idp: str, reason: CallbackProblem, detail: str, error: str | None = None) -> None:
        super().__init__(idp, reason, detail)
        self.error = error


class NotAdmitted(SignInFailed):
    """The provider signed the user in, but Deputy's rules for this provider do not let her in."""

    def __init__(self, idp: str, reason: AdmissionProblem, detail: str) -> None:
        super().__init__(idp, reason, detail)
