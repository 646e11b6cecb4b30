"""`create_app` for the orchestrator: the subsystem shell's /healthz, /readyz, /metrics and /v1/status."""

from __future__ import annotations

from fastapi import FastAPI

from services.orchestrator.loop import Orchestrator
from services.orchestrator.settings import OrchestratorSettings
from shoal.bus.base import Bus
from shoal.clock import Clock, SystemClock
from shoal.service import create_subsystem_app
from shoal.store.protocol import Store


def create_app(settings: OrchestratorSettings, *, store: Store, bus: Bus | None = None,
               clock: Clock | None = None, orchestrator: Orchestrator | None = None) -> FastAPI:
    sub = orchestrator or Orchestrator(store, bus, clock or SystemClock(), settings)
    app = create_subsystem_app(Orchestrator.name, sub)
    app.state.subsystem = sub
    return app
