"""The test-support form parser and driver understand login/consent pages like a browser."""

from __future__ import annotations

import httpx
import pytest

from tests.support.sdk_client import FormDriver, FormDriverError, parse_form, parse_forms, parse_redirect

LOGIN_PAGE = """<!doctype html>
<html><head><title>Sign in</title><style>body { color: red }</style></head>
<body>
  <h1>Sign in to Deputy</h1>
  <form method="post" action="/authorize/login?x=1&amp;y=2">
    <input type="hidden" name="csrf_token" value="c&quot;sr&amp;f">
    <input type="hidden" name="request_id" value="req-123">
    <label>User <input name="username" autocomplete="username"></label>
    <label>Password <input type="password" name="password"></label>
    <input type="checkbox" name="remember" value="yes">
    <input type="checkbox" name="agree" value="1" checked>
    <button type="submit">Sign in</button>
  </form>
</body></html>"""

CONSENT_PAGE = """<html><body>
<p>Allow <b>Some client</b> to use <i>demo</i>?</p>
<form method="POST" action="http://127.0.0.1:9/authorize/consent">
  <input type="hidden" name="csrf_token" value="tok">
  <input type="hidden" name="request_id" value="req-123">
  <select name="duration">
    <option value="once">Once</option><option value="always" selected>Always</option>
  </select>
  <button name="decision" value="approve">Allow</button>
  <button name="decision" value="deny" type="submit">Deny</button>
  <button type="button" name="help" value="x">?</button>
</form>
<form action="/logout"><input type="submit" name="logout" value="Log out"></form>
</body></html>"""


def test_parse_login_form() -> None:
    form = parse_form(LOGIN_PAGE)
    assert form.method == "POST"
    assert form.action == "/authorize/login?x=1&y=2"
    assert form.fields == {
        "csrf_token": 'c"sr&f',
        "request_id": "req-123",
        "username": "",
        "password": "",
        "agree": "1",
    }
    assert form.input_types["password"] == "password"
    assert form.has_password()
    assert form.buttons == []
    assert form.resolve_action("http://127.0.0.1:8000/authorize?client_id=a") == (
        "http://127.0.0.1:8000/authorize/login?x=1&y=2"
    )


def test_parse_consent_form_buttons_and_second_form() -> None:
    forms = parse_forms(CONSENT_PAGE)
    assert len(forms) == 2
    consent = parse_form(CONSENT_PAGE)
    assert consent is not None and consent.action == "http://127.0.0.1:9/authorize/consent"
    assert consent.fields == {"csrf_token": "tok", "request_id": "req-123", "duration": "always"}
    assert consent.buttons == [("decision", "approve"), ("decision", "deny")]
    assert consent.data(("decision", "deny"), csrf_token="forged") == {
        "csrf_token": "forged",
        "request_id": "req-123",
        "duration": "always",
        "decision": "deny",
    }
    logout = forms[1]
    assert logout.method == "GET"
    assert logout.buttons == [("logout", "Log out")]


def test_parse_form_without_form_reports_page_text() -> None:
    with pytest.raises(FormDriverError, match="Unknown client"):
        parse_form("<html><body><h1>Error</h1><p>Unknown client</p></body></html>")


def test_parse_redirect() -> None:
    redirect = parse_redirect("http://127.0.0.1:5/callback?code=abc&state=s%20t&iss=http%3A%2F%2Fh")
    assert (redirect.code, redirect.state, redirect.iss, redirect.error) == ("abc", "s t", "http://h", None)
    with pytest.raises(FormDriverError):
        parse_redirect("http://127.0.0.1:5/callback?code=a&code=b")


def _fake_authorization_server(decision_seen: list[dict[str, str]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/authorize" and request.method == "GET":
            return httpx.Response(
                200,
                html=LOGIN_PAGE.replace("/authorize/login?x=1&amp;y=2", "/login"),
                headers={"set-cookie": "sid=1; Path=/"},
            )
        if path == "/login" and request.method == "POST":
            body = dict(httpx.QueryParams(request.content.decode()))
            assert request.headers.get("cookie") == "sid=1"
            if body != {
                "csrf_token": 'c"sr&f',
                "request_id": "req-123",
                "username": "alice",
                "password": "pw",
                "agree": "1",
            }:
                return httpx.Response(200, html=LOGIN_PAGE)  # shown again: rejected
            return httpx.Response(303, headers={"location": "/consent?r=req-123"})
        if path == "/consent" and request.method == "GET":
            return httpx.Response(200, html=CONSENT_PAGE.replace("http://127.0.0.1:9/authorize/consent", ""))
        if path == "/consent" and request.method == "POST":
            body = dict(httpx.QueryParams(request.content.decode()))
            decision_seen.append(body)
            if body["decision"] == "approve":
                return httpx.Response(
                    303, headers={"location": "http://127.0.0.1:7/cb?code=c1&state=s&iss=x"}
                )
            return httpx.Response(
                303, headers={"location": "http://127.0.0.1:7/cb?error=access_denied&state=s"}
            )
        return httpx.Response(404, html="<p>Nope</p>")

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_form_driver_walks_login_and_consent(decision: str) -> None:
    seen: list[dict[str, str]] = []
    async with httpx.AsyncClient(transport=_fake_authorization_server(seen), base_url="http://as") as client:
        driver = FormDriver(client, "alice", "pw", decision=decision)
        final = await driver.authorize("http://as/authorize?client_id=c", "http://127.0.0.1:7/cb")
    redirect = parse_redirect(final)
    if decision == "approve":
        assert redirect.code == "c1" and redirect.error is None
    else:
        assert redirect.error == "access_denied" and redirect.code is None
    assert seen == [
        {"csrf_token": "tok", "request_id": "req-123", "duration": "always", "decision": decision}
    ]
    assert [r.status_code for r in driver.history] == [200, 303, 200, 303]


async def test_form_driver_reports_rejected_login() -> None:
    async with httpx.AsyncClient(transport=_fake_authorization_server([]), base_url="http://as") as client:
        driver = FormDriver(client, "alice", "wrong")
        with pytest.raises(FormDriverError, match=r"login form shown again.*Sign in to Deputy"):
            await driver.authorize("http://as/authorize", "http://127.0.0.1:7/cb")


async def test_form_driver_reports_error_page() -> None:
    async with httpx.AsyncClient(transport=_fake_authorization_server([]), base_url="http://as") as client:
        driver = FormDriver(client, "alice", "pw")
        with pytest.raises(FormDriverError, match=r"HTTP 404.*Nope"):
            await driver.authorize("http://as/elsewhere", "http://127.0.0.1:7/cb")
