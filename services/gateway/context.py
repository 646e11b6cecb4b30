"""What every gateway route needs: the store, settings, metrics, an HTTP client for raftstore member status,
the store-readiness flag behind `/readyz` and the revoked node ids (both kept fresh by a probe loop running in
the app's lifespan), and the client the join-token requests are relayed to the CA services with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from fastapi import Request

from services.gateway.settings import GatewaySettings
from shoal.clock import Clock, SystemClock
from shoal.cluster import removed_node_ids
from shoal.errors import NotFound, Unavailable
from shoal.instances import InstanceRegistry
from shoal.metrics import Registry
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.store.client import STORE_FAILURES
from shoal.store.protocol import Store
from shoal.transport import Revocations

log = logging.getLogger(__name__)


class CAError(Exception):
    """A CA service refused a relayed request; its status and `{"message", "code"}` go back to the caller."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        ok = isinstance(body, dict)
        self.body = {"message": str(body.get("message") if ok else "") or f"ca: HTTP {status}",
                     "code": str(body.get("code") if ok else "") or "ca_refused"}


MAX_HOLDERS = 10_000  # node ids whose last dispatcher is remembered


class Holders:
    """Which dispatcher URL last streamed each node's logs (asked first next time), bounded: the oldest entry
    goes first when full. A wrong guess costs one 404."""

    def __init__(self, limit: int = MAX_HOLDERS) -> None:
        self.limit = limit
        self._by_node: dict[str, str] = {}

    def get(self, node_id: str) -> str | None:
        return self._by_node.get(node_id)

    def remember(self, node_id: str, url: str) -> None:
        self._by_node.pop(node_id, None)
        self._by_node[node_id] = url
        while len(self._by_node) > self.limit:
            del self._by_node[next(iter(self._by_node))]

    def forget(self, node_id: str) -> None:
        self._by_node.pop(node_id, None)


class GatewayContext:
    def __init__(self, settings: GatewaySettings, store: Store, http: httpx.AsyncClient, *,
                 revoked: Revocations | None = None, ca_http: httpx.AsyncClient | None = None,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()  # timestamps the routes write (created_at, orphaned at, ...)
        self.store = store
        self.http = http
        self.revoked = revoked if revoked is not None else Revocations()
        self.ca_http = ca_http
        self.metrics = Registry()
        self.store_ready = False
        self.store_problem = "not probed yet"
        self.instances = InstanceRegistry()  # fed by NATS instance heartbeats when the gateway has a bus
        self.log_holders = Holders()  # the dispatcher that last streamed each node's logs
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
        except STORE_FAILURES as e:  # TimeoutError is an OSError
            self.mark_unavailable(str(e) or type(e).__name__)
            return False
        if not st.get("leader"):
            self.mark_unavailable("no raft leader")
            return False
        self.store_ready, self.store_problem = True, ""
        await self.refresh_revocations()
        return True

    async def refresh_revocations(self) -> None:
        """Re-read the cluster object's removed nodes: their certificates are refused from now on (Guard)."""
        try:
            cluster = await self.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
        except NotFound:
            cluster = None
        except STORE_FAILURES as e:
            log.debug("gateway: cannot read the removed nodes (%s); keeping the last list", e)
            return
        self.revoked.update(removed_node_ids(cluster))

    async def ca_request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Relay one request to the first CA service that answers (SHOAL_CA_URLS). The bodies carry join
        tokens: they are never logged. A CA's 4xx is passed on as it is (status, message, code)."""
        if self.ca_http is None or not self.settings.ca_urls:
            raise Unavailable("gateway: no CA service configured (SHOAL_CA_URLS); join tokens live in the CA")
        errors = []
        for url in self.settings.ca_urls:
            try:
                resp = await self.ca_http.request(method, url.rstrip("/") + path, json=body,
                                                  timeout=self.settings.ca_timeout)
            except httpx.HTTPError as e:
                errors.append(f"{url}: {type(e).__name__}")
                continue
            if resp.status_code >= 500:
                errors.append(f"{url}: HTTP {resp.status_code}")
                continue
            try:
                data = resp.json()
            except ValueError:
                errors.append(f"{url}: not JSON")
                continue
            if resp.status_code >= 400:
                raise CAError(resp.status_code, data)
            if isinstance(data, dict) and path == "/v1/tokens":
                # `shoal swarm join --token T HOST:PORT` dials a manager's CA: this one answers
                data = {**data, "join_addr": url.split("://", 1)[-1].rstrip("/")}
            if isinstance(data, dict) and path.startswith("/v1/ca"):
                data = {**data, "ca_url": url.rstrip("/")}  # where an admin renews its bundle after a rotation
            return data
        raise Unavailable("gateway: no CA service answered (" + "; ".join(errors) + ")")

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
