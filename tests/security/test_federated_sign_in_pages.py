"""Issue 14, items 2 and 5: signing in through an identity provider on Deputy's real pages, attacked.

A real ``deputy serve`` (SQLite) has two hostile providers (:mod:`tests.support.hostile_idp`, served in this test's
event loop: their token endpoints return whatever ID token the test signed), ``alpha`` and ``beta``, and a third,
``gamma``, that is down. Browsers are cookie-keeping httpx clients walking the real forms. Every refusal must end on
a page naming the provider and the reason, write ``signin.failed`` with that reason, echo no token, and leave the
browser signed out.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.audit_log import read_log
from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy, running_deputy
from tests.support.hostile_idp import CLIENT_ID, CLIENT_SECRET, HostileIdp, hostile_idp, sent_parameters
from tests.support.idp import sign, unknown_key
from tests.support.sdk_client import page_text, parse_forms

HOSTILE_TITLE = 'Alpha <script>alert(1)</script> & "co"'


@pytest.fixture(scope="module")
def down_port() -> Iterator[int]:
    """A loopback port bound but not listening: the provider there is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture(scope="module")
async def idps() -> AsyncIterator[tuple[HostileIdp, HostileIdp]]:
    async with hostile_idp("alpha") as alpha, hostile_idp("beta") as beta:
        yield alpha, beta


def provider_entry(idp: HostileIdp, **more: Any) -> str:
    lines = [f'name = "{idp.name}"', f'issuer = "{idp.issuer}"', f'client_id = "{CLIENT_ID}"',
             f"client_secret = {json.dumps(CLIENT_SECRET)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in more.items()]
    return "\n[[identity_providers]]\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fed_deputy(idps: tuple[HostileIdp, HostileIdp], down_port: int, upstream_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    alpha, beta = idps
    directory = tmp_path_factory.mktemp("deputy-federated-pages")
    extra = (provider_entry(alpha, title=HOSTILE_TITLE, allowed_email_domains=["example.com"])
             + provider_entry(beta, title="Beta", required_groups=["staff", "admins"])
             + f'\n[[identity_providers]]\nname = "gamma"\ntitle = "Gamma"\nissuer = "http://127.0.0.1:{down_port}"\n'
               f'client_id = "x"\nclient_secret = "y"\n')
    # Deputy starts although gamma is down: providers are fetched when first used. local_users is false (the
    # default once a provider is configured): only the providers sign people in.
    with running_deputy(directory, f"sqlite+aiosqlite:///{directory / 'deputy.db'}", upstream_url,
                        extra) as running:
        yield running


@pytest.fixture(scope="module")
def single_deputy(idps: tuple[HostileIdp, HostileIdp], upstream_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """One provider and no local users."""
    directory = tmp_path_factory.mktemp("deputy-federated-single")
    with running_deputy(directory, f"sqlite+aiosqlite:///{directory / 'deputy.db'}", upstream_url,
                        provider_entry(idps[0])) as running:
        yield running


def authorize_url(deputy: RunningDeputy, **more: str) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return f"{deputy.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI, "state": "client-state",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": deputy.resource("demo"),
        "scope": "demo:tools", **more})


async def start(browser: httpx.AsyncClient, deputy: RunningDeputy, name: str, **more: str) -> dict[str, str]:
    """Open the login page, press provider ``name``'s button; the authentication request's parameters."""
    page = await browser.get(authorize_url(deputy, **more))
    assert page.status_code == 200, page.text
    [form] = [f for f in parse_forms(page.text) if f.action == f"/login/start/{name}"]
    assert form.method == "POST"
    sent = await browser.post(form.resolve_action(str(page.url)), data=form.data())
    assert sent.status_code == 303, sent.text
    return sent_parameters(sent.headers["location"])


async def callback(browser: httpx.AsyncClient, deputy: RunningDeputy, name: str,
                   query: list[tuple[str, str]]) -> httpx.Response:
    return await browser.get(f"{deputy.url}/login/callback/{name}?{urlencode(query)}")


def answer(idp: HostileIdp, sent: dict[str, str], **changes: str) -> list[tuple[str, str]]:
    values = {"code": "code-" + secrets.token_hex(4), "state": sent["state"], "iss": idp.issuer, **changes}
    return list(values.items())


def signed_in(browser: httpx.AsyncClient) -> bool:
    return any(cookie.name == "deputy_session" for cookie in browser.cookies.jar)


async def failures(deputy: RunningDeputy) -> list[dict[str, Any]]:
    return [dict(leaf.record) for leaf in (await read_log(deputy.database_url)).of_type("signin.failed")]


async def assert_refused(deputy: RunningDeputy, browser: httpx.AsyncClient, response: httpx.Response, idp: str,
                         reason: str, status: int, secrets_sent: tuple[str, ...] = ()) -> None:
    assert response.status_code == status, response.text
    assert reason in response.text and "Traceback" not in response.text
    for secret in secrets_sent:
        assert secret not in response.text
    assert "deputy_session" not in response.headers.get("set-cookie", "")
    assert not signed_in(browser)
    last = (await failures(deputy))[-1]  # written before the page was answered
    assert (last["reason"], last["idp"]) == (reason, idp)
    for secret in secrets_sent:
        assert secret not in json.dumps(last)


def valid_claims(idp: HostileIdp, sent: dict[str, str], **changes: Any) -> dict[str, Any]:
    return idp.claims(client_id=CLIENT_ID, **{"nonce": sent["nonce"], **changes})


# --- the login page -----------------------------------------------------------------------------------------------

async def test_login_page_offers_each_provider_as_a_post_button_with_its_title_escaped(
        fed_deputy: RunningDeputy) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorize_url(fed_deputy))
        assert page.status_code == 200
        assert "<script>alert(1)</script>" not in page.text
        assert "Alpha &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;co&#34;" in page.text
        forms = parse_forms(page.text)
        assert [(f.method, f.action) for f in forms if f.action.startswith("/login/start/")] == [
            ("POST", "/login/start/alpha"), ("POST", "/login/start/beta"), ("POST", "/login/start/gamma")]
        assert not any(f.has_password() for f in forms), "local_users = false: no password form"
        started = await browser.get(f"{fed_deputy.url}/login/start/alpha")
        assert started.status_code == 405, "no GET ever starts a sign-in"


async def test_start_without_the_forms_csrf_token_is_refused(fed_deputy: RunningDeputy,
                                                             idps: tuple[HostileIdp, HostileIdp]) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorize_url(fed_deputy))
        [form] = [f for f in parse_forms(page.text) if f.action == "/login/start/alpha"]
        for data, headers in [({**form.data(), "csrf_token": "forged"}, {}),
                              ({k: v for k, v in form.data().items() if k != "csrf_token"}, {}),
                              (form.data(), {"Origin": "https://attacker.example"})]:
            response = await browser.post(f"{fed_deputy.url}/login/start/alpha", data=data, headers=headers)
            await assert_refused(fed_deputy, browser, response, "alpha", "csrf", 403)
            assert "location" not in response.headers


async def test_with_local_users_off_the_password_endpoint_refuses(fed_deputy: RunningDeputy) -> None:
    """alice has a password (running_deputy added her); local_users = false refuses it all the same."""
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorize_url(fed_deputy))
        [form] = [f for f in parse_forms(page.text) if f.action == "/login/start/alpha"]
        response = await browser.post(f"{fed_deputy.url}/authorize/login",
                                      data={**form.data(), "username": "alice", "password": PASSWORD})
        assert response.status_code == 403 and "Password sign-in is off" in response.text
        assert not signed_in(browser)


async def test_one_provider_and_no_local_users_goes_straight_there(single_deputy: RunningDeputy,
                                                                   idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        response = await browser.get(authorize_url(single_deputy, prompt="login", max_age="60"))
        assert response.status_code == 303 and response.headers["location"].startswith(alpha.url("/authorize?"))
        sent = sent_parameters(response.headers["location"])
        assert (sent["prompt"], sent["max_age"]) == ("login", "60"), "passed on to the provider"
        assert sent["redirect_uri"] == f"{single_deputy.url}/login/callback/alpha"
        alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="single-1", auth_time=int(time.time())))
        back = await callback(browser, single_deputy, "alpha", answer(alpha, sent))
        assert back.status_code == 303, back.text
        consent = await browser.get(f"{single_deputy.url}{back.headers['location']}")
        assert consent.status_code == 200 and "Allow access?" in consent.text, "prompt=login satisfied: no loop"


async def test_an_approval_pages_sign_in_offers_the_providers_and_returns_there(
        fed_deputy: RunningDeputy, idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    for approval_id, expected in [("no-such-approval", "/approvals/no-such-approval"),
                                  ("//evil.example/x?y", "/approvals/%2F%2Fevil.example%2Fx%3Fy")]:
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await browser.get(f"{fed_deputy.url}/approvals/no-such-approval")
            assert page.status_code == 200 and not any(f.has_password() for f in parse_forms(page.text))
            [form] = [f for f in parse_forms(page.text) if f.action == "/login/start/alpha"]
            assert form.fields["approval_id"] == "no-such-approval"
            started = await browser.post(f"{fed_deputy.url}/login/start/alpha",
                                         data={**form.data(), "approval_id": approval_id})
            assert started.status_code == 303, started.text
            sent = sent_parameters(started.headers["location"])
            alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="approver-1", preferred_username="approver"))
            back = await callback(browser, fed_deputy, "alpha", answer(alpha, sent))
            assert back.status_code == 303 and back.headers["location"] == expected, "one path segment, never off"
            assert signed_in(browser)
            shown = await browser.get(f"{fed_deputy.url}/approvals/no-such-approval")
            assert shown.status_code == 404 and "no such approval" in shown.text, "signed in: the page, not a login"


# --- success ------------------------------------------------------------------------------------------------------

async def test_a_valid_sign_in_lands_on_consent_signed_in(fed_deputy: RunningDeputy,
                                                          idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        assert sent["code_challenge_method"] == "S256" and sent["redirect_uri"].endswith("/login/callback/alpha")
        alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="pages-alice"))
        back = await callback(browser, fed_deputy, "alpha", answer(alpha, sent))
        assert back.status_code == 303 and back.headers["location"].startswith("/authorize/consent?request_id=")
        assert signed_in(browser)
        consent = await browser.get(f"{fed_deputy.url}{back.headers['location']}")
        assert consent.status_code == 200 and "alice@alpha" in consent.text
        assert alpha.id_token not in consent.text
        again = await callback(browser, fed_deputy, "alpha", answer(alpha, sent))  # the same answer, replayed
        assert again.status_code == 400 and "state_unknown" in again.text
    records = (await read_log(fed_deputy.database_url)).of_type("signin.succeeded")
    assert records and records[-1].record["idp"] == "alpha" and records[-1].record["username"] == "alice@alpha"


# --- every refused ID token ---------------------------------------------------------------------------------------

def _forged(idp: HostileIdp, sent: dict[str, str], how: str) -> str:
    claims = valid_claims(idp, sent)
    if how == "alg_none":
        return sign({"alg": "none", "kid": idp.keys.ec_key.kid}, claims)
    if how == "hmac_public_key":
        return sign({"alg": "HS256", "kid": idp.keys.rsa_key.kid}, claims, idp.keys.rsa_key.as_pem(private=False))
    if how == "bad_signature":
        return idp.sign(claims, key=unknown_key("x"), kid=idp.keys.ec_key.kid)
    if how == "unknown_kid":
        return idp.sign(claims, key=unknown_key("never-published"), kid="never-published")
    every: dict[str, dict[str, Any]] = {
        "wrong_issuer": {"iss": "http://127.0.0.1:1"}, "wrong_audience": {"aud": "another-client"},
        "expired": {"exp": 1_000_000_000, "iat": 999_999_000}, "nonce_mismatch": {"nonce": "other"}}
    changes = every[how]
    return idp.sign(valid_claims(idp, sent, **changes))


@pytest.mark.parametrize(("how", "reason"), [
    ("alg_none", "alg_not_allowed"), ("hmac_public_key", "alg_not_allowed"), ("bad_signature", "bad_signature"),
    ("unknown_kid", "unknown_kid"), ("wrong_issuer", "wrong_issuer"), ("wrong_audience", "wrong_audience"),
    ("expired", "expired"), ("nonce_mismatch", "nonce_mismatch")])
async def test_a_refused_id_token_ends_on_a_page_and_a_record(fed_deputy: RunningDeputy,
                                                              idps: tuple[HostileIdp, HostileIdp],
                                                              how: str, reason: str) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        alpha.id_token = _forged(alpha, sent, how)
        query = answer(alpha, sent)
        response = await callback(browser, fed_deputy, "alpha", query)
        await assert_refused(fed_deputy, browser, response, "alpha", reason, 403,
                             (alpha.id_token, dict(query)["code"]))


@pytest.mark.parametrize(("name", "changes", "reason"), [
    ("alpha", {"email": "alice@evil.example"}, "email_domain_not_allowed"),
    ("alpha", {"email_verified": False}, "email_not_verified"),
    ("beta", {"groups": ["finance"]}, "not_in_required_groups"),
    ("beta", {"groups": [{"a": 1}]}, "bad_claims"),
])
async def test_a_user_outside_the_providers_rules_is_refused(fed_deputy: RunningDeputy,
                                                             idps: tuple[HostileIdp, HostileIdp], name: str,
                                                             changes: dict[str, Any], reason: str) -> None:
    idp = dict(zip(("alpha", "beta"), idps, strict=True))[name]
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, name)
        idp.id_token = idp.sign(valid_claims(idp, sent, sub=f"outsider-{reason}", **changes))
        response = await callback(browser, fed_deputy, name, answer(idp, sent))
        await assert_refused(fed_deputy, browser, response, name, reason, 403)


async def test_a_disabled_user_is_refused(fed_deputy: RunningDeputy, idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="to-disable", preferred_username="carol"))
        assert (await callback(browser, fed_deputy, "alpha", answer(alpha, sent))).status_code == 303
    disabled = fed_deputy.cli("users", "disable", "carol@alpha")
    assert disabled.returncode == 0, disabled.stderr
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="to-disable", preferred_username="carol"))
        response = await callback(browser, fed_deputy, "alpha", answer(alpha, sent))
        await assert_refused(fed_deputy, browser, response, "alpha", "user_disabled", 403)


# --- forged and replayed callbacks --------------------------------------------------------------------------------

async def test_an_unknown_state_is_refused(fed_deputy: RunningDeputy, idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        await start(browser, fed_deputy, "alpha")
        response = await callback(browser, fed_deputy, "alpha", answer(alpha, {"state": secrets.token_urlsafe(32)}))
        await assert_refused(fed_deputy, browser, response, "alpha", "state_unknown", 400)
        response = await callback(browser, fed_deputy, "alpha", [("code", "c"), ("iss", alpha.issuer)])
        await assert_refused(fed_deputy, browser, response, "alpha", "state_missing", 400)


async def test_a_state_from_another_browser_is_refused_and_stays_its_owners(
        fed_deputy: RunningDeputy, idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as victim, httpx.AsyncClient(timeout=30) as attacker:
        sent = await start(attacker, fed_deputy, "alpha")  # the attacker's own sign-in, its answer sent to victim
        alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="attacker-account"))
        response = await callback(victim, fed_deputy, "alpha", answer(alpha, sent))
        await assert_refused(fed_deputy, victim, response, "alpha", "state_foreign", 400)
        owner = await callback(attacker, fed_deputy, "alpha", answer(alpha, sent))
        assert owner.status_code == 303, "refusing the foreign browser does not spend the owner's sign-in"


async def test_the_same_answer_twice_at_once_signs_in_once(fed_deputy: RunningDeputy,
                                                           idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        alpha.id_token = alpha.sign(valid_claims(alpha, sent, sub="racer", preferred_username="racer"))
        query = answer(alpha, sent)
        tokens_before = alpha.hits["token"]
        first, second = await asyncio.gather(*(callback(browser, fed_deputy, "alpha", query) for _ in range(2)))
        assert sorted([first.status_code, second.status_code]) == [303, 400]
        assert "state_unknown" in (first if first.status_code == 400 else second).text
        assert alpha.hits["token"] == tokens_before + 1, "the code was redeemed once"


async def test_a_repeated_state_is_refused(fed_deputy: RunningDeputy, idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        alpha.id_token = alpha.sign(valid_claims(alpha, sent))
        query = [*answer(alpha, sent), ("state", sent["state"])]
        response = await callback(browser, fed_deputy, "alpha", query)
        await assert_refused(fed_deputy, browser, response, "alpha", "repeated_parameter", 400)


async def test_an_error_from_the_provider_is_refused(fed_deputy: RunningDeputy,
                                                     idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _ = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        query = [("error", "access_denied"), ("error_description", "<b>no</b>"), ("state", sent["state"]),
                 ("iss", alpha.issuer)]
        response = await callback(browser, fed_deputy, "alpha", query)
        await assert_refused(fed_deputy, browser, response, "alpha", "idp_error", 403)
        assert "<b>no</b>" not in response.text
        assert (await failures(fed_deputy))[-1]["error"] == "access_denied"


async def test_mix_up_alphas_answer_at_betas_callback_is_refused(fed_deputy: RunningDeputy,
                                                                 idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, _beta = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "alpha")
        alpha.id_token = alpha.sign(valid_claims(alpha, sent))
        tokens_before = alpha.hits["token"]
        response = await callback(browser, fed_deputy, "beta", answer(alpha, sent))
        await assert_refused(fed_deputy, browser, response, "beta", "wrong_callback", 400)
        assert alpha.hits["token"] == tokens_before, "the code went nowhere"


async def test_mix_up_alphas_iss_at_betas_sign_in_is_refused(fed_deputy: RunningDeputy,
                                                             idps: tuple[HostileIdp, HostileIdp]) -> None:
    alpha, beta = idps
    async with httpx.AsyncClient(timeout=30) as browser:
        sent = await start(browser, fed_deputy, "beta")
        tokens_before = (alpha.hits["token"], beta.hits["token"])
        response = await callback(browser, fed_deputy, "beta", answer(beta, sent, iss=alpha.issuer))
        await assert_refused(fed_deputy, browser, response, "beta", "issuer_mismatch", 400)
        assert (alpha.hits["token"], beta.hits["token"]) == tokens_before


async def test_a_provider_that_is_down_is_named_on_the_page(fed_deputy: RunningDeputy) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorize_url(fed_deputy))
        [form] = [f for f in parse_forms(page.text) if f.action == "/login/start/gamma"]
        response = await browser.post(f"{fed_deputy.url}/login/start/gamma", data=form.data())
        await assert_refused(fed_deputy, browser, response, "gamma", "discovery_failed", 502)
        assert "Gamma" in page_text(response.text)
        assert (await browser.get(f"{fed_deputy.url}/healthz")).status_code == 200


async def test_a_provider_that_is_down_at_start_is_a_warning(fed_deputy: RunningDeputy) -> None:
    """Deputy started (the fixture's health check answered) and says once that gamma was down."""
    log = fed_deputy.data_dir.parent / "deputy.log"
    for _ in range(300):  # the warm-up runs in the background after start: wait for its line, bounded
        if "identity provider gamma unusable at start (discovery_failed)" in log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.05)
    text = log.read_text(errors="replace")
    assert "identity provider gamma unusable at start (discovery_failed)" in text, text[-2000:]
    assert "Traceback" not in text
