"""`run_authorization_scenarios` against a toy authorization server speaking Deputy's form contract.

This checks the harness itself (reading the suite's printed /authorize URL, driving the
login and consent forms, delivering the callback), so that the real test against Deputy
only has to supply an issuer, a client and credentials.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conformance.harness import (
    form_login_driver,
    free_port,
    require_conformance,
    run_authorization_scenarios,
    wait_for_port,
)

pytestmark = pytest.mark.conformance


def toy_authorization_server(issuer: str, client_id: str, redirect_uri: str) -> Starlette:
    pending: dict[str, dict[str, str]] = {}
    codes: dict[str, dict[str, str]] = {}

    def form(request_id: str, body: str) -> HTMLResponse:
        hidden = (
            '<input type="hidden" name="csrf_token" value="csrf">'
            f'<input type="hidden" name="request_id" value="{request_id}">'
        )
        return HTMLResponse(f'<form method="post" action="/authorize">{hidden}{body}</form>')

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "client_id_metadata_document_supported": True,
            }
        )

    async def authorize(request: Request) -> Response:
        if request.method == "GET":
            params = dict(request.query_params)
            assert params["client_id"] == client_id and params["redirect_uri"] == redirect_uri
            request_id = secrets.token_urlsafe(8)
            pending[request_id] = params
            return form(request_id, '<input name="username"><input type="password" name="password">')
        data = await request.form()
        assert request.cookies.get("sid") == "1" or "username" in data
        params = pending[str(data["request_id"])]
        if "username" in data:
            assert (data["username"], data["password"]) == ("alice", "pw")
            page = form(str(data["request_id"]), '<button name="decision" value="approve">Allow</button>')
            page.set_cookie("sid", "1")
            return page
        assert data["decision"] == "approve"
        code = secrets.token_urlsafe(8)
        codes[code] = params
        query = urlencode({"code": code, "state": params["state"], "iss": issuer})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", status_code=303)

    async def token(request: Request) -> JSONResponse:
        data = await request.form()
        params = codes.pop(str(data["code"]))
        digest = hashlib.sha256(str(data["code_verifier"]).encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == params["code_challenge"]
        return JSONResponse({"access_token": "at", "token_type": "Bearer"}, headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST"]),
        ]
    )


def test_authorization_scenarios_with_form_driver(tmp_path: Path) -> None:
    require_conformance("alpha")
    port, callback_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    app = toy_authorization_server(issuer, "toy-client", f"http://127.0.0.1:{callback_port}/callback")
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port)
        results = run_authorization_scenarios(
            issuer, "toy-client", callback_port, form_login_driver("alice", "pw"), out_dir=tmp_path
        )
    finally:
        server.should_exit = True
        thread.join(10)
    console = (tmp_path / "console.log").read_text()
    assert results == {"authorization-server-metadata-endpoint": True, "authorization-code-grant": True}, console
