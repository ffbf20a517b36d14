"""The request body of the token, revocation and introspection endpoints (RFC 6749 §3.2, RFC 7009 §2.1,
RFC 7662 §2.1): ``application/x-www-form-urlencoded`` in UTF-8 (RFC 6749 Appendix B), each parameter
at most once.

RFC 8707 §2 and RFC 8693 §2.1 let a client repeat ``resource`` (and ``audience``) to ask
for several targets; a Deputy token is for exactly one server, so that is refused as
``invalid_target`` rather than as a malformed request.

The body's bytes are capped while they arrive (:mod:`deputy.request_limits`); here the form itself
is bounded: at most :data:`MAX_FIELDS` fields of at most :data:`MAX_FIELD` characters each, which
no request of these endpoints comes near.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from deputy.oauth.errors import InvalidRequest, InvalidTarget

TARGETS = ("resource", "audience")
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 32
MAX_FIELD = 16 * 1024


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    if _media_type(content_type) != FORM_TYPE:  # refused before a byte of the body is read
        raise InvalidRequest(f"the body must be {FORM_TYPE}")
    return parse_form(content_type, await request.body())


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """The parameters of a form body; anything else raises :class:`InvalidRequest` (or ``InvalidTarget``)."""
    if _media_type(content_type) != FORM_TYPE:
        raise InvalidRequest(f"the body must be {FORM_TYPE}")
    if body.count(b"&") >= MAX_FIELDS:  # counted before parsing, so a flood of fields is never materialised
        raise InvalidRequest(f"the form has more than {MAX_FIELDS} fields")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except ValueError:  # UnicodeDecodeError included: RFC 6749 Appendix B says UTF-8
        raise InvalidRequest("the form is not UTF-8") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if len(key) > MAX_FIELD or len(value) > MAX_FIELD:
            raise InvalidRequest(f"a form field is longer than {MAX_FIELD} characters")
        if key in form:
            if key in TARGETS:
                raise InvalidTarget(f"a token is for exactly one server; {key} may appear once")
            raise InvalidRequest(f"{key} is repeated")  # RFC 6749 §3.2
        form[key] = value
    return form


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()
