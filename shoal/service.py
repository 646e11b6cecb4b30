"""The shell shared by every control-plane process: an app whose lifespan runs the subsystem, leader-only
subsystems gated by a lease, and the `main` that wires settings, NATS and the store together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI

from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.http import install_error_handlers, instrument, ops_router
from shoal.lease import LeaseKeeper
from shoal.metrics import Registry
from shoal.store.protocol import Store
from shoal.transport import Credentials

log = logging.getLogger(__name__)


class Subsystem(Protocol):
    metrics: Registry

    async def run(self) -> None:
        """Do the work until stop(); return afterwards."""

    def stop(self) -> None: ...

    def ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


def create_subsystem_app(name: str, subsystem: Subsystem, *, routers: list[APIRouter] | None = None,
                         on_shutdown: Callable[[], Awaitable[None]] | None = None) -> FastAPI:
    """FastAPI app whose lifespan runs `subsystem.run()`; serves /healthz, /readyz, /metrics, /v1/status."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(subsystem.run(), name=f"{name}.run")
        try:
            yield
        finally:
            subsystem.stop()
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            if on_shutdown is not None:
                await on_shutdown()

    app = FastAPI(title=f"shoal {name}", lifespan=lifespan)
    install_error_handlers(app)
    instrument(app, subsystem.metrics)
    app.include_router(ops_router(subsystem.metrics, subsystem.ready, lambda: {"name": name}))

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return {"name": name, **subsystem.status()}

    for r in routers or []:
        app.include_router(r)
    return app


class LeaderOnly:
    """Runs `work()` only while holding the subsystem's lease; if the lease is lost, cancels the work and goes
    back to campaigning (in-memory state is rebuilt on the next activation, as SwarmKit's leader components
    are on every leader change)."""

    def __init__(self, store: Store, name: str, holder: str, work: Callable[[LeaseKeeper], Coroutine[Any, Any, None]],
                 *, lease_duration: float = 1.5, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock  # the lease keeper's (None: the system clock)
        self.name = name
        self.holder = holder
        self.work = work
        self.lease_duration = lease_duration
        self.lease: LeaseKeeper | None = None
        self.activations = 0
        self._stopped = False

    @property
    def active(self) -> bool:
        return self.lease is not None and self.lease.is_active

    async def run(self) -> None:
        while not self._stopped:
            lease = LeaseKeeper(self.store, self.name, self.holder, duration=self.lease_duration, clock=self.clock)
            self.lease = lease
            keeper = asyncio.create_task(lease.run())
            active = asyncio.create_task(lease.active.wait())
            await asyncio.wait({keeper, active}, return_when=asyncio.FIRST_COMPLETED)
            if self._stopped or not lease.active.is_set():
                lease.stop()
                active.cancel()
                keeper.cancel()
                continue
            self.activations += 1
            worker = asyncio.create_task(self.work(lease))
            lost = asyncio.create_task(lease.lost.wait())
            await asyncio.wait({worker, lost}, return_when=asyncio.FIRST_COMPLETED)
            for tsk in (worker, lost, keeper):
                tsk.cancel()
            with contextlib.suppress(BaseException):
                await worker
            if worker.done() and not worker.cancelled() and worker.exception() is not None:
                log.error("%s: work failed: %r; re-campaigning", self.name, worker.exception())
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        self._stopped = True
        if self.lease is not None:
            self.lease.stop()
            self.lease.lost.set()


async def connect_bus(url: str, name: str, creds: Credentials) -> Bus:
    """A NatsBus over TLS with this process's credentials (connecting in the background)."""
    from shoal.bus.nats import NatsBus

    return await NatsBus.connect(url, name, creds)
