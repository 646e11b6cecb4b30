"""Store-event hints on NATS, published by the Raft leader after it applies a transaction.

Hints only wake subscribers (they re-read the store's watch), so they are best effort: a bounded queue drained
by one task, dropped when full, and a bus that connects in the background. NATS being slow or down never
delays Raft, and startup never waits for it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shoal.bus.base import Bus
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
