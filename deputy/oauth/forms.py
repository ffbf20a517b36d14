"""The request body of the token, revocation and introspection endpoints (RFC 6749 §3.2, RFC 7009 §2.1,
RFC 7662 §2.1): ``application/x-www-form-urlencoded``, each parameter at most once.

RFC 8707 §2 and RFC 8693 §2.1 let a client repeat ``resource`` (and ``audience``) to ask
for several targets; a Deputy token is for exactly one server, so that is refused as
``invalid_target`` rather than as a malformed request."""

from __future__ import annotations

from starlette.requests import Request

from deputy.oauth.errors import InvalidRequest, InvalidTarget

TARGETS = ("resource", "audience")


async def read_form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    raw = await request.form()
    form: dict[str, str] = {}
    for key, value in raw.multi_items():
        if key in form:
            if key in TARGETS:
                raise InvalidTarget(f"a token is for exactly one server; {key} may appear once")
            raise InvalidRequest(f"{key} is repeated")  # RFC 6749 §3.2
        if not isinstance(value, str):
            raise InvalidRequest("file uploads are not accepted")
        form[key] = value
    return form
