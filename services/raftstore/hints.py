"""Store-event hints on NATS, published by the Raft leader after it applies a transaction.

Hints only wake subscribers (they re-read the store's watch), so they are best effort: a bounded queue drained
by one task, dropped when full, and a bus that connects in the background. NATS being slow or down never
delays Raft, and startup never waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from shoal.bus.base import Bus, Handler
from shoal.bus.subjects import STORE_EVENTS
from shoal.metrics import Registry
from shoal.store.txn import TxnResult

log = logging.getLogger(__name__)


def hint_of(result: TxnResult) -> dict[str, Any]:
    return {"revision": result.revision,
            "changes": [{"kind": c.kind, "action": c.action, "id": c.id,
                         "version": c.object.get("meta", {}).get("version", result.revision)}
                        for c in result.changes]}


class HintPublisher:
    def __init__(self, bus: Bus | None, *, maxsize: int = 10_000, metrics: Registry | None = None) -> None:
        self.bus = bus
        self.metrics = metrics or Registry()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)

    def offer(self, result: TxnResult) -> None:
        if self.bus is None:
            return
        try:
            self._queue.put_nowait(hint_of(result))
        except asyncio.QueueFull:
            self.metrics.inc("store_hints_dropped_total", 1, "NATS hints dropped (queue full)")

    async def run(self) -> None:
        if self.bus is None:
            return
        while True:
            data = await self._queue.get()
            try:
                await self.bus.publish(STORE_EVENTS, data)
                self.metrics.inc("store_hints_published_total", 1, "NATS store-event hints published")
            except Exception as e:  # a lost hint is allowed: subscribers also poll
                log.debug("hints: publish failed: %s", e)


class BackgroundNatsBus:
    """A Bus whose NATS connection is made in the background; until it is up, publishes are dropped."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="nats.connect")

    async def _connect(self) -> None:
        import nats

        from shoal.bus.nats import NatsBus

        async def quiet(e: Exception) -> None:
            log.debug("nats: %s", e)

        delay = 0.5
        while self._bus is None:
            try:
                # The first connect is retried here (not by the client: nats-py 2.16 has no
                # retry_on_failed_connect); once connected the client reconnects forever by itself.
                nc = await nats.connect(servers=[self.url], name=self.name, connect_timeout=2,
                                        allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                        error_cb=quiet)
                self._bus = NatsBus(nc)
                log.info("nats: connected to %s", self.url)
            except Exception as e:
                log.warning("nats: cannot connect to %s (%s); retrying in %.1fs", self.url, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        if self._bus is not None:
            await self._bus.publish(subject, data)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        raise NotImplementedError("raftstore only publishes hints")

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._bus is not None:
            await self._bus.close()
