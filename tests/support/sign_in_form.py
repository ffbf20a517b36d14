"""Deputy's sign-in form as a browser first meets it: opened by an authorization request of the public client."""

from __future__ import annotations

from urllib.parse import urlencode, urljoin

import httpx

from tests.support.deputy_process import PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import Pkce
from tests.support.sdk_client import parse_form


async def sign_in_form(http: httpx.AsyncClient, deputy: RunningDeputy) -> tuple[str, dict[str, str]]:
    """The form's action URL and its fields (hidden ones filled in) for the ``demo`` resource."""
    query = urlencode({"response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI,
                       "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
                       "resource": deputy.resource("demo"), "state": "s"})
    page = await http.get(f"{deputy.url}/authorize?{query}")
    assert page.status_code == 200, page.text
    form = parse_form(page.text)
    return urljoin(f"{deputy.url}/authorize", form.action), form.data()
