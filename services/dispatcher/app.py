"""`create_app(settings, store=..., bus=...)`: the dispatcher's FastAPI app — the agent protocol under
`/v1/sessions`, plus `/healthz`, `/readyz`, `/metrics` and `/v1/status` from the shared subsystem shell."""

from __future__ import annotations

import random
from collections.abc import Callable

from fastapi import FastAPI

from services.dispatcher.fastpath import HeartbeatFastPath
from services.dispatcher.loop import Dispatcher
from services.dispatcher.routes import build_logs_router, build_router
from services.dispatcher.settings import DispatcherSettings
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.service import create_subsystem_app
from shoal.store.protocol import Store
from shoal.transport import Revocations


def create_app(settings: DispatcherSettings, *, store: Store, bus: Bus, clock: Clock | None = None,
               rng: random.Random | None = None, revocations: Revocations | None = None,
               roots: Callable[[], str | None] | None = None) -> FastAPI:
    """The dispatcher over `store` and `bus` (both owned by the caller). `app.state.dispatcher` is the
    running `Dispatcher`, for tests and embedding. `revocations`: the list the server's Guard checks, kept
    current from the cluster object's removed nodes. `roots`: the digest of the roots this process trusts,
    handed to the agents with every heartbeat answer."""
    dispatcher = Dispatcher(settings, store=store, bus=bus, clock=clock,
                            instance=settings.instance_name("dispatcher"), rng=rng, revocations=revocations,
                            roots=roots)
    routers = [build_router(dispatcher), build_logs_router(dispatcher)]
    app = create_subsystem_app("dispatcher", dispatcher, routers=routers)
    app.add_middleware(HeartbeatFastPath, dispatcher=dispatcher)  # heartbeats outside the framework (fastpath.py)
    app.state.dispatcher = dispatcher
    return app
