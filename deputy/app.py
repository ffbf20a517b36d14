"""Builds Deputy's ASGI application from its parts; nothing else lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import cast

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from deputy import worker_identity
from deputy.audit.log import AuditUnavailable
from deputy.config import Settings
from deputy.cors import McpCors, PublicCors
from deputy.forwarded_client import ForwardedClient
from deputy.gateway.audit_stage import AuditStage
from deputy.gateway.bearer import BearerAuthenticator
from deputy.gateway.exchange import Upstream
from deputy.gateway.http_upstream import HttpUpstream
from deputy.gateway.origin_check import OriginCheck
from deputy.gateway.policy_lifecycle import PolicyLifecycle
from deputy.gateway.policy_stage import PolicyStage
from deputy.gateway.proxy import PREFIX, Gateway
from deputy.gateway.resource_metadata import WELL_KNOWN, ResourceMetadataEndpoint
from deputy.gateway.revocations import RevocationList, RevocationsUnavailable
from deputy.gateway.sessions import SessionBinder
from deputy.gateway.stdio_upstream import StdioUpstream
from deputy.gateway.stream_caps import CallCaps, StreamCaps
from deputy.gateway.upstream_credentials import upstream_credentials
from deputy.gateway.upstream_pool import UpstreamPool
from deputy.gateway.worker_routing import WorkerRouting
from deputy.oauth.access_tokens import AccessTokenValidator
from deputy.oauth.authorize import AuthorizationEndpoint
from deputy.oauth.errors import OAuthError, TemporarilyUnavailable
from deputy.oauth.introspection import IntrospectionEndpoint
from deputy.oauth.metadata import MetadataEndpoint
from deputy.oauth.registration import RegistrationEndpoint
from deputy.oauth.revocation import RevocationEndpoint
from deputy.oauth.token import TokenEndpoint
from deputy.page_paths import (
    APPROVAL_PAGE,
    CLIENT_METADATA_DOCUMENT,
    CONNECT_CALLBACK,
    CONNECT_PAGE,
    CONNECTIONS_PAGE,
)
from deputy.policy.user_attributes import configured_claims
from deputy.request_limits import RequestLimits, RequestRefused
from deputy.services import Services
from deputy.telemetry.metrics_listener import MetricsListener
from deputy.telemetry.tracing import Tracing
from deputy.web.approvals import ApprovalPages
from deputy.web.connection_pages import ConnectionPages
from deputy.web.federated_pages import CALLBACK_PATH, START_PATH, FederatedPages
from deputy.web.sign_in import SignIn

log = logging.getLogger(__name__)
STORAGE_WARNING_INTERVAL = 60.0  # seconds between two warnings that storage is unavailable


class DeputyApp:
    """Sends ``/mcp/NAME`` straight to the gateway and everything else to the Starlette routes."""

    def __init__(self, routes: ASGIApp, gateway: Gateway, mcp: ASGIApp | None = None) -> None:
        self.routes = routes
        self.gateway = gateway
        self.mcp = mcp if mcp is not None else gateway  # the gateway behind its CORS answers (deputy.cors)

    def end_streams(self) -> None:
        """The server begins to shut down: end the open GET streams (see :meth:`StreamCaps.end_all`)."""
        self.gateway.streams.end_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.mcp(scope, receive, send)
        else:
            await self.routes(scope, receive, send)


def create_app(settings: Settings, services: Services | None = None) -> DeputyApp:
    services = services or Services.open(settings)
    revocations = RevocationList(services.grants, settings.revocation_max_staleness)
    validator = AccessTokenValidator(services.keyring, settings.issuer, settings.clock_leeway,
                                     revocations.is_revoked)
    pool = UpstreamPool(streams=settings.limits.upstream_streams)
    credentials = {name: upstream_credentials(server, services.keyring, settings.issuer)
                   for name, server in settings.servers.items()}
    upstreams: dict[str, Upstream] = {
        name: HttpUpstream(server, pool, credentials[name]) if server.url is not None
        else StdioUpstream(server, settings.limits, services.metrics)
        for name, server in settings.servers.items()
    }
    policy = PolicyStage({name: PolicyLifecycle(server, credentials[name], settings.issuer, configured_claims(settings),
                                                 connections=services.connections)  # oauth: read with hers
                          for name, server in settings.servers.items() if server.policies is not None},
                         services.approvals, settings.public_url, settings.policy_watch_seconds,
                         services.clients.get)
    tracing = Tracing(settings.tracing)  # off (and free) unless an OTLP endpoint is configured
    gateway = Gateway(
        servers=settings.servers,
        authenticator=BearerAuthenticator(settings, validator),
        upstreams=upstreams,
        sessions=SessionBinder.from_data_dir(settings.data_dir),
        origin_check=OriginCheck(settings.public_url, settings.allowed_origins),
        policy=policy if policy.policies else None,
        audit=AuditStage(services.audit, settings.audit.arguments),
        body_timeout=settings.limits.body_timeout,
        tracing=tracing,
        metrics=services.metrics,
        connections=services.connections,  # each user's own token for credentials = "oauth" servers
        streams=StreamCaps.from_limits(settings.limits),
        calls=CallCaps(settings.limits.calls_per_user),
    )
    mcp: ASGIApp = McpCors(gateway, settings.allowed_origins)
    routing = _worker_routing(settings, mcp)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        listen = settings.telemetry.metrics_listen
        metrics = MetricsListener(services.metrics, *listen) if listen is not None else None
        if metrics is not None:
            await metrics.start()  # an address that cannot be listened on stops start-up here, first
        try:
            await services.start()
            if gateway.policy is not None:
                await gateway.policy.start()  # an unusable policy set stops start-up here
            await revocations.start()
            services.metrics.revocation_staleness.set_function(revocations.staleness)
            warm_up = asyncio.create_task(federated.warm_up())  # a provider that is down only warns
            try:
                yield
            finally:
                warm_up.cancel()
                await revocations.stop()
                if gateway.policy is not None:
                    await gateway.policy.stop()
                for upstream in upstreams.values():
                    await upstream.close()
                await pool.close()
                if routing is not None:
                    await routing.close()
                await services.close()
                await tracing.shutdown()  # the last requests' spans, flushed (bounded by OTEL_BSP_EXPORT_TIMEOUT)
        finally:
            if metrics is not None:
                await metrics.stop()

    async def jwks(_request: Request) -> Response:
        return JSONResponse(services.keyring.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})  # the process answers: liveness

    async def ready(_request: Request) -> Response:
        # Readiness: the database takes writes (every call's audit record is one), the revocation view is fresh,
        # and an audit append would get the sequencer lock within its bound (a replica stopped while holding it
        # makes every append fail: issue 12), i.e. calls would be served.
        try:
            await services.database.check_writable()
            revocations.check_fresh()
            await services.audit.check_appendable()
        except (SQLAlchemyError, RevocationsUnavailable, AuditUnavailable):  # StorageUnavailable is a SQLAlchemyError
            return JSONResponse({"status": "unavailable"}, status_code=503, headers={"Cache-Control": "no-store"})
        return JSONResponse({"status": "ready"}, headers={"Cache-Control": "no-store"})

    async def request_refused(_request: Request, exc: Exception) -> Response:
        return cast(RequestRefused, exc).response()  # a body too large or too slow (deputy.request_limits)

    async def client_gone(_request: Request, _exc: Exception) -> Response:
        # The client left while its body was read: nobody is there to answer, and it is not a fault of ours.
        return Response(status_code=400)

    async def oauth_error(_request: Request, exc: Exception) -> Response:
        # One place maps the closed set of OAuth errors to the wire (see deputy.oauth.errors).
        return cast(OAuthError, exc).response()

    storage_refusals = {"since_warning": 0, "warned_at": -STORAGE_WARNING_INTERVAL}

    async def storage_unavailable(_request: Request, exc: Exception) -> Response:
        # Fail closed with a clear answer: nothing is decided without the database. What reaches here is the
        # database's failing (every one a SQLAlchemyError: a DB-API error, or StorageUnavailable for a driver
        # socket that failed) or the audit log's; any other OSError (a missing template, say) is a bug: 500.
        # A lost database fails every request: one warning a minute says so, not one line per request.
        storage_refusals["since_warning"] += 1
        now = time.monotonic()
        if now - storage_refusals["warned_at"] >= STORAGE_WARNING_INTERVAL:
            log.warning("storage unavailable (%s): answering 503; %d requests refused since the last warning "
                        "(at most one a minute)", type(exc).__name__, storage_refusals["since_warning"])
            storage_refusals.update(since_warning=0, warned_at=now)
        return TemporarilyUnavailable("storage is unavailable").response()

    sign_in = SignIn(services)
    federated = FederatedPages(services, sign_in)
    authorize = AuthorizationEndpoint(services, sign_in, federated)
    approval_pages = ApprovalPages(services, sign_in)
    connection_pages = ConnectionPages(services, sign_in)
    metadata = MetadataEndpoint(settings)
    resource_metadata = ResourceMetadataEndpoint(settings)
    routes = [
        Route("/.well-known/oauth-authorization-server", metadata.handle, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route(f"{WELL_KNOWN}/mcp/{{name}}", resource_metadata.handle, methods=["GET"]),
        Route("/authorize", authorize.authorize, methods=["GET"]),
        Route("/authorize/login", authorize.login, methods=["POST"]),
        Route("/authorize/consent", authorize.consent_page, methods=["GET"]),
        Route("/authorize/consent", authorize.consent, methods=["POST"]),
        Route(START_PATH + "{name}", federated.start, methods=["POST"]),
        Route(CALLBACK_PATH + "{name}", federated.callback, methods=["GET"]),
        Route(APPROVAL_PAGE + "{approval_id}", approval_pages.page, methods=["GET"]),
        Route(APPROVAL_PAGE + "{approval_id}", approval_pages.decide, methods=["POST"]),
        Route(APPROVAL_PAGE + "{approval_id}/sign-in", approval_pages.sign_in_form, methods=["POST"]),
        # Before CONNECT_PATH + "{name}": these fixed paths are not server names.
        Route(CONNECT_CALLBACK, connection_pages.callback, methods=["GET"]),
        Route(CONNECT_CALLBACK + "/{name}", connection_pages.callback, methods=["GET"]),  # RFC 9700 §4.4.2
        Route(CLIENT_METADATA_DOCUMENT, connection_pages.metadata_document, methods=["GET"]),
        Route(CONNECT_PAGE + "{name}", connection_pages.connect_page, methods=["GET"]),
        Route(CONNECT_PAGE + "{name}", connection_pages.start, methods=["POST"]),
        Route(CONNECTIONS_PAGE, connection_pages.connections_page, methods=["GET"]),
        Route(CONNECTIONS_PAGE + "/{name}/disconnect", connection_pages.disconnect, methods=["POST"]),
        Route("/token", TokenEndpoint(services).handle, methods=["POST"]),
        Route("/revoke", RevocationEndpoint(services).handle, methods=["POST"]),
        Route("/introspect", IntrospectionEndpoint(services).handle, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
    if len(settings.servers) == 1:
        routes.append(Route(WELL_KNOWN, resource_metadata.handle, methods=["GET"]))
    if settings.registration.enabled:
        registration = RegistrationEndpoint(services)
        routes.append(Route("/register", registration.handle, methods=["POST"]))
        routes.append(Route("/register/{client_id}", registration.manage, methods=["GET", "PUT", "DELETE"]))
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={OAuthError: oauth_error, RequestRefused: request_refused,
                                        ClientDisconnect: client_gone, SQLAlchemyError: storage_unavailable,
                                        AuditUnavailable: storage_unavailable})
    routes_app: ASGIApp = PublicCors(RequestLimits(app, settings.limits.body_timeout), settings.registration.enabled)
    if settings.trusted_proxies:  # per-address budgets count the client, not the proxy (deputy.forwarded_client)
        routes_app = ForwardedClient(routes_app, settings.trusted_proxies)
    return DeputyApp(routes_app, gateway, routing if routing is not None else mcp)


def _worker_routing(settings: Settings, mcp: ASGIApp) -> WorkerRouting | None:
    """With several workers (``deputy serve --workers N``), ``/mcp/`` behind the router that passes another worker's
    stdio sessions to it (deputy.gateway.worker_routing); with one, nothing."""
    identity = worker_identity.current()
    if identity is None or identity.count < 2:
        return None
    stdio = [name for name, server in settings.servers.items() if server.command is not None]
    return WorkerRouting(mcp, identity, stdio, settings.limits.body_timeout)
