"""The closed set of OAuth error responses, mapped to HTTP in one place.

Codes from OAuth 2.1 §3.2.4 / §4.1.2.1 (RFC 6749 §5.2, §4.1.2.1), RFC 7591 §3.2.2 and
RFC 8707 §2 (``invalid_target``). One class per wire code: Deputy raises the class, never
a code string, so a misspelt error is a name that mypy and the import refuse, not a
lookup that fails at run time. The description is written by Deputy, never ``str(exc)`` of
something unexpected.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    code = "server_error"
    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="deputy"'
        return JSONResponse({"error": self.code, "error_description": self.description},
                            status_code=self.status, headers=headers)


class InvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    code = "invalid_client"
    status = 401


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class UnauthorizedClient(OAuthError):
    code = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    code = "unsupported_response_type"


class InvalidScope(OAuthError):
    code = "invalid_scope"


class InvalidTarget(OAuthError):
    code = "invalid_target"


class AccessDenied(OAuthError):
    code = "access_denied"
    status = 403


class InvalidRedirectUri(OAuthError):
    code = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    code = "invalid_client_metadata"


class TemporarilyUnavailable(OAuthError):
    """The server cannot answer now (OAuth 2.1 §4.1.2.1): 503, and when to ask again (RFC 9110 §10.2.3)."""

    code = "temporarily_unavailable"
    status = 503

    def response(self) -> JSONResponse:
        answer = super().response()
        answer.headers["Retry-After"] = "5"
        return answer


class InvalidSoftwareStatement(OAuthError):
    code = "invalid_software_statement"


class UnapprovedSoftwareStatement(OAuthError):
    code = "unapproved_software_statement"


class InvalidRegistrationToken(OAuthError):
    """A missing or wrong initial or registration access token (RFC 7591 §3, RFC 7592 §2; RFC 6750 §3.1)."""

    code = "invalid_token"
    status = 401

    def response(self) -> JSONResponse:
        answer = super().response()
        answer.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return answer
