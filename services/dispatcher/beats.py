"""Heartbeats shared between dispatchers, batched (issue 13): every dispatcher tells the others which nodes it
heard from, so any of them may mark a silent node DOWN. One NATS message per heartbeat was a quarter of an idle
dispatcher's CPU with 100 nodes (the publish, its TLS record and its flush, per heartbeat); now the beats heard
during `FLUSH_INTERVAL` go out as one message, `{"beats": [[node_id, at], ...]}` (the latest time of each node,
at most `MAX_BEATS` per message). Receivers still accept the single form `{"node_id", "at"}` of earlier
dispatchers. Liveness tolerates the delay: a dispatcher that learns of a node's heartbeats only from here judges
it after 6 periods (30 s by default; core.REMOTE_GRACE), a beat is late by at most `FLUSH_INTERVAL` — or a
quarter of the heartbeat period when that is shorter (tests run at 0.2 s: 0.5 s was most of a grace).

A dispatcher of an earlier version does not read the batch form (it drops and counts it): while dispatchers of
both versions run, an old one hears only its own nodes and the READY timestamps in the store, and may mark a
node served by a new one DOWN after 3 periods — the new one marks it READY again on its next heartbeat.
Upgrade the dispatchers together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from services.dispatcher.core import heartbeat_from_message
from shoal.bus.base import Bus
from shoal.bus.subjects import NODE_HEARTBEAT

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
MAX_BEATS = 2000  # beats per message (~40 bytes each: well under NATS's 1 MiB payload limit)


def beats_from_message(data: Any, now: float) -> tuple[list[tuple[str, float]], list[str]]:
    """The (node id, time) beats of a NODE_HEARTBEAT message in either form, and why each dropped one cannot
    be true (`core.heartbeat_from_message` judges every beat)."""
    if isinstance(data, dict) and "beats" in data:
        raw = data["beats"]
        if not isinstance(raw, list) or len(raw) > MAX_BEATS:
            return [], [f"beats is not a list of at most {MAX_BEATS}"]
        items: list[Any] = [{"node_id": b[0], "at": b[1]} if isinstance(b, list) and len(b) == 2 else None
                            for b in raw]
    else:
        items = [data]
    beats: list[tuple[str, float]] = []
    dropped: list[str] = []
    for item in items:
        beat = heartbeat_from_message(item, now)
        if isinstance(beat, str):
            dropped.append(beat)
        else:
            beats.append(beat)
    return beats, dropped


def flush_delay(interval: float, period: float | None) -> float:
    """How long beats gather before they go out: `interval`, at most a quarter of the heartbeat period."""
    return interval if period is None or not period > 0 else min(interval, period / 4)


def batch_messages(pending: dict[str, float]) -> list[dict[str, Any]]:
    """The messages carrying `pending` (node id → latest time), `MAX_BEATS` at most each."""
    items = [[nid, at] for nid, at in pending.items()]
    return [{"beats": items[i:i + MAX_BEATS]} for i in range(0, len(items), MAX_BEATS)]


class BeatPublisher:
    """Collects the beats this dispatcher hears (the latest per node: bounded by the nodes it serves) and
    publishes them every `interval`."""

    def __init__(self, bus: Bus, interval: float = FLUSH_INTERVAL,
                 period: Callable[[], float] | None = None) -> None:
        self.bus = bus
        self.interval = interval
        self.period = period  # the cluster's heartbeat period, read at every flush
        self._pending: dict[str, float] = {}
        self._arrived = asyncio.Event()
        self.messages = 0

    def note(self, node_id: str, at: float) -> None:
        if at > self._pending.get(node_id, float("-inf")):
            self._pending[node_id] = at
        self._arrived.set()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._arrived.clear()
        for msg in batch_messages(pending):
            await self.bus.publish(NODE_HEARTBEAT, msg)  # best effort, never raises (Bus.publish)
            self.messages += 1

    async def run(self) -> None:
        try:
            while True:
                await self._arrived.wait()
                await asyncio.sleep(flush_delay(self.interval, self.period() if self.period else None))
                await self.flush()
        finally:
            if self._pending:
                await asyncio.shield(self.flush())
