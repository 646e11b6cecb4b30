"""`create_app(agent)`: the agent's small HTTP surface — /healthz, /readyz (a dispatcher session works),
/metrics, /v1/status, and /v1/tasks (the tasks on this node with their state and pid)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from agent.agent import Agent
from shoal.http import install_error_handlers, instrument, ops_router

log = logging.getLogger(__name__)


def create_app(agent: Agent) -> FastAPI:
    """The app's lifespan runs the agent; on exit it stops the session, then the tasks (bounded by
    SHOAL_EXIT_GRACE), then saves the agent's state."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner = asyncio.create_task(agent.run(), name="agent.run")
        try:
            yield
        finally:
            agent.stop()
            try:
                await asyncio.wait_for(runner, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                runner.cancel()
            except Exception:
                log.exception("agent: run loop failed")
            await agent.shutdown()

    app = FastAPI(title="shoal agent", lifespan=lifespan)
    app.state.agent = agent
    install_error_handlers(app)
    instrument(app, agent.metrics)
    app.include_router(ops_router(agent.metrics, agent.ready, lambda: {"name": "agent"}))

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return agent.status()

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        return {"node_id": agent.node_id, "items": agent.worker.snapshot()}

    return app
