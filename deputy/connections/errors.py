"""Why connecting to, or calling, an upstream with the user's own token failed: a closed set of typed reasons.

Each reason is a code (the ``reason`` of a ``connection.*`` audit record and of the page or log line that reports
it) and a short ``detail`` for the operator's log and the user's page. A detail never holds a token, a code, a
secret or a ``state``; text that came from the upstream is cut to printable ASCII by :func:`shown` first.
"""

from __future__ import annotations

from typing import Literal

from deputy.federation.errors import shown as shown

# The upstream's authorization side could not be found or is not one Deputy may use (deputy.connections.discovery).
DiscoveryProblem = Literal["discovery_failed", "resource_mismatch", "issuer_mismatch", "pkce_unsupported",
                           "endpoint_refused", "authorization_server_not_allowed", "fetch_refused"]
# Deputy could not get a client identity at that authorization server (deputy.connections.registration).
RegistrationProblem = Literal["registration_failed", "no_client_authentication"]
# The authorization response is not the one a started connection waits for, or says no (RFC 6749 §4.1.2).
# wrong_callback: it arrived at another redirect URI than its flow's (RFC 9700 §4.4.2, mix-up).
CallbackProblem = Literal["state_unknown", "state_foreign", "wrong_callback", "issuer_mismatch", "issuer_missing",
                          "authorization_denied", "code_missing"]
# The token endpoint refused or answered something Deputy will not keep (RFC 6749 §5).
TokenProblem = Literal["token_request_failed", "token_response_invalid", "refresh_refused", "upstream_unavailable"]
# A sealed token could not be opened: the vault key is not the one it was sealed with (deputy.connections.vault).
VaultProblem = Literal["vault_key"]
Problem = DiscoveryProblem | RegistrationProblem | CallbackProblem | TokenProblem | VaultProblem


class ConnectionFailed(Exception):
    """Connecting to, or using a connection to, upstream ``server`` failed for ``reason``; ``detail`` says more.

    ``error`` is the upstream's own OAuth error code when it gave one (printable ASCII, bounded)."""

    def __init__(self, server: str, reason: Problem, detail: str, error: str | None = None) -> None:
        super().__init__(f"connection to {server} failed: {reason}: {detail}")
        self.server = server
        self.reason: Problem = reason
        self.detail = detail
        self.error = shown(error) if error is not None else None
