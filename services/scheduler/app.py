"""`create_app` for the scheduler: the subsystem shell's /healthz, /readyz, /metrics and /v1/status."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.bus.base import Bus
from shoal.clock import Clock, SystemClock
from shoal.service import create_subsystem_app
from shoal.store.protocol import Store


def create_app(settings: SchedulerSettings, *, store: Store, bus: Bus | None = None,
               clock: Clock | None = None, scheduler: Scheduler | None = None) -> FastAPI:
    sub = scheduler or Scheduler(store, bus, clock or SystemClock(), settings)
    app = create_subsystem_app(Scheduler.name, sub)
    app.state.subsystem = sub
    return app
