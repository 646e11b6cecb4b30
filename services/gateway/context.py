"""What every gateway route needs: the store, settings, metrics, an HTTP client for raftstore member status,
and the store-readiness flag behind `/readyz` (kept fresh by a probe loop running in the app's lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from fastapi import Request

from services.gateway.settings import GatewaySettings
from shoal.errors import ShoalError
from shoal.instances import InstanceRegistry
from shoal.metrics import Registry
from shoal.store.protocol import Store

log = logging.getLogger(__name__)


class GatewayContext:
    def __init__(self, settings: GatewaySettings, store: Store, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.http = http
        self.metrics = Registry()
        self.store_ready = False
        self.store_problem = "not probed yet"
        self.instances = InstanceRegistry()  # fed by NATS instance heartbeats when the gateway has a bus
        self._stopped = asyncio.Event()

    def ready(self) -> bool:
        return self.store_ready

    def mark_unavailable(self, why: str) -> None:
        self.store_ready = False
        self.store_problem = why

    async def probe(self) -> bool:
        """One readiness check: the store answers its status and knows a Raft leader."""
        try:
            st = await asyncio.wait_for(self.store.status(), self.settings.member_status_timeout)
        except (ShoalError, httpx.HTTPError, TimeoutError, OSError) as e:
            self.mark_unavailable(str(e) or type(e).__name__)
            return False
        if not st.get("leader"):
            self.mark_unavailable("no raft leader")
            return False
        self.store_ready, self.store_problem = True, ""
        return True

    async def probe_loop(self) -> None:
        """Re-probe every `ready_probe_interval` until `stop()`."""
        while not self._stopped.is_set():
            await self.probe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.settings.ready_probe_interval)

    def stop(self) -> None:
        self._stopped.set()

    async def member_status(self, url: str) -> dict[str, Any]:
        """`GET {member}/v1/status` of one raftstore member, or `{"url", "reachable": false, "error"}`."""
        base = url.rstrip("/")
        try:
            resp = await self.http.get(base + "/v1/status", timeout=self.settings.member_status_timeout)
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as e:
            return {"url": base, "reachable": False, "error": str(e) or type(e).__name__}
        if not isinstance(body, dict):
            return {"url": base, "reachable": False, "error": "status is not a JSON object"}
        return {"url": base, "reachable": True, **body}


def get_context(request: Request) -> GatewayContext:
    """FastAPI dependency: the context of the app serving `request`."""
    ctx: GatewayContext = request.app.state.gateway
    return ctx
