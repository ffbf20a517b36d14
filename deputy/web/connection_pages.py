"""STUB (issue 15, helper H5 replaces this file): the pages where a user connects her account at an upstream.

Routes (wired in :mod:`deputy.app`): ``GET /connect/{name}`` (the connect page), ``POST /connect/{name}`` (starts
the upstream flow), ``GET /connect/callback`` (the upstream authorization server's answer), ``GET /connections``
(her connections), ``POST /connections/{name}/disconnect``, ``GET /connect/client-metadata.json`` (Deputy's client
ID metadata document, https only).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from deputy.services import Services
from deputy.web.sign_in import SignIn


class ConnectionPages:
    def __init__(self, services: Services, sign_in: SignIn) -> None:
        self.services = services
        self.sign_in = sign_in

    async def connect_page(self, request: Request) -> Response:
        raise NotImplementedError

    async def start(self, request: Request) -> Response:
        raise NotImplementedError

    async def callback(self, request: Request) -> Response:
        raise NotImplementedError

    async def connections_page(self, request: Request) -> Response:
        raise NotImplementedError

    async def disconnect(self, request: Request) -> Response:
        raise NotImplementedError

    async def metadata_document(self, request: Request) -> Response:
        raise NotImplementedError
