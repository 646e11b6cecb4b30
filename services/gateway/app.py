"""`create_app(settings, store=...)`: the gateway's FastAPI app. REST under `/v1` (docs/api.md), OpenAPI at
`/docs`, `/healthz` `/readyz` `/metrics`, and `/v1/status`. Holds no state of its own beyond a readiness flag;
every answer comes from the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.gateway.context import CAError, GatewayContext
from services.gateway.docker import install as install_docker_api
from services.gateway.routes import ROUTERS
from services.gateway.routes.cluster import _attempt
from services.gateway.settings import GatewaySettings
from services.gateway.ui import routes as ui_routes
from services.gateway.ui.hub import DashboardHub
from services.gateway.ui.sessions import UiSessions
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.errors import Unavailable
from shoal.http import install_error_handlers, instrument, ops_router
from shoal.instances import Announcer
from shoal.store.protocol import Store
from shoal.transport import Revocations, http_client


def unavailable_message(exc: Unavailable) -> str:
    """`store unavailable: <why>` whatever layer raised it (StoreClient, a raftstore member, the gateway)."""
    why = exc.message
    if why.startswith("store unavailable"):
        return why
    return "store unavailable: " + why.removeprefix("store: ")


def create_app(settings: GatewaySettings, *, store: Store, http: httpx.AsyncClient | None = None,
               bus: Bus | None = None, revoked: Revocations | None = None,
               ca_http: httpx.AsyncClient | None = None, ui_sessions: UiSessions | None = None,
               clock: Clock | None = None) -> FastAPI:
    """The gateway over `store`. `http` (for raftstore member status) defaults to a client from
    an in-process client (tests), closed with the app; the store belongs to the caller. With a `bus`, the
    gateway collects instance heartbeats (and announces itself) for `GET /v1/cluster`. `revoked` is kept
    current from the cluster object's removed nodes (the server's Guard refuses them); `ca_http` relays the
    join-token requests to SHOAL_CA_URLS (both belong to the caller). `ui_sessions` are the dashboard's
    logins, shared with the server's Guard (which asks them about session cookies; services/gateway/ui)."""
    own_http = http is None
    ctx = GatewayContext(settings, store, http or http_client(None, timeout=settings.member_status_timeout),
                         revoked=revoked, ca_http=ca_http, clock=clock)
    sessions = ui_sessions or UiSessions("", token_ttl=settings.ui_token_ttl, session_ttl=settings.ui_session_ttl)

    async def raft_status() -> dict[str, Any]:
        members, (status, _) = await asyncio.gather(
            asyncio.gather(*(ctx.member_status(u) for u in settings.store_members)),
            _attempt(ctx.store.status(), settings.member_status_timeout))
        return {"status": status, "members": list(members)}

    hub = DashboardHub(store, raft_status=raft_status, instances=ctx.instances.instances,
                       interval=settings.ui_interval, max_clients=settings.ui_max_clients)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ctx.probe()  # so /readyz is meaningful from the first request
        probe = asyncio.create_task(ctx.probe_loop(), name="gateway.ready-probe")
        announcer = None
        if bus is not None:
            await ctx.instances.attach(bus)
            announcer = Announcer(bus, "gateway", settings.instance_name("gateway"), port=settings.port)
            announcer.start()
        try:
            yield
        finally:
            if announcer is not None:
                await announcer.stop()
            await hub.stop()
            ctx.stop()
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            if own_http:
                await ctx.http.aclose()

    app = FastAPI(
        title="shoal gateway",
        version="1",
        description="The public REST API of shoal, a SwarmKit-style orchestrator. Errors are "
        '`{"message": ...}` with 400 (invalid input), 404, 409 (name taken, stale version) or 503 '
        "(store unavailable).",
        lifespan=lifespan,
    )
    app.state.gateway = ctx
    app.state.ui_hub = hub
    app.state.ui_sessions = sessions
    _install_handlers(app, ctx)
    # every request is counted by route template and status (shoal_http_requests_total, shoal.http.instrument)
    instrument(app, ctx.metrics)
    app.include_router(ops_router(ctx.metrics, ctx.ready, lambda: {"name": "gateway"}))
    _install_status(app, ctx, settings)
    for router in ROUTERS:
        app.include_router(router)
    ui_routes.install(app, ctx, sessions, hub)  # the dashboard: /, /ui/... (services/gateway/ui)
    install_docker_api(app)  # the Docker Engine API's swarm subset (services/gateway/docker, docs/docker-api.md)
    return app


def _install_handlers(app: FastAPI, ctx: GatewayContext) -> None:
    """Shoal's error handlers, and the gateway's own for a store that does not answer and a CA that refused."""
    install_error_handlers(app)

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        message = unavailable_message(exc)
        ctx.mark_unavailable(message)
        ctx.metrics.inc("gateway_store_unavailable_total", help="requests refused: store unavailable")
        return JSONResponse({**exc.to_json(), "message": message}, status_code=exc.status)

    @app.exception_handler(CAError)
    async def _ca_refused(_: Request, exc: CAError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)


def _install_status(app: FastAPI, ctx: GatewayContext, settings: GatewaySettings) -> None:
    @app.get("/v1/status", tags=["ops"], summary="This gateway instance's status")
    async def status() -> dict[str, Any]:
        return {"name": "gateway", "instance": settings.instance_name("gateway"),
                "store_ready": ctx.store_ready, "store_problem": ctx.store_problem or None,
                "store_members": settings.store_members}
