"""`create_app` for the allocator: the subsystem shell's /healthz, /readyz, /metrics and /v1/status."""

from __future__ import annotations

from fastapi import FastAPI

from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from shoal.bus.base import Bus
from shoal.clock import Clock, SystemClock
from shoal.service import create_subsystem_app
from shoal.store.protocol import Store


def create_app(settings: AllocatorSettings, *, store: Store, bus: Bus | None = None,
               clock: Clock | None = None, allocator: Allocator | None = None) -> FastAPI:
    sub = allocator or Allocator(store, bus, clock or SystemClock(), settings)
    app = create_subsystem_app(Allocator.name, sub)
    app.state.subsystem = sub
    return app
