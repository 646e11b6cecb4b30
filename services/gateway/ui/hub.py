"""The dashboard's one snapshot builder per gateway process, fanned out to the browsers (SSE, `/ui/stream`).

Whatever the number of browsers, a gateway follows the store once: a `StoreMirror` of nodes, services, tasks
and leases (list once, then the watch every `interval`), the Raft status of each raftstore member polled once
per `interval`, and the instances heard on NATS. Every `interval` it builds the snapshot
(services/gateway/ui/snapshot.py; the costly part, one pass over the tasks, only when nodes, services or tasks
changed since the last one) and sends it to every browser only when it changed, and the new events
(services/gateway/ui/feed.py) as they were seen. The hub starts with the first browser and stops `linger`
seconds after the last one left (a page reload does not re-list the store).

Bounds: at most `max_clients` browsers (the next one gets 503 `ui_busy`); each browser's queue holds at most
`queue_size` messages — a browser that does not keep up is disconnected (its EventSource reconnects and starts
again from a fresh snapshot) instead of growing the gateway's memory; the feed keeps the last `history` events
for browsers that arrive later."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.gateway.ui.feed import events_of
from services.gateway.ui.snapshot import compose, raft_members, without_time, workload
from shoal.concurrency import task_scope
from shoal.errors import Compacted, ShoalError
from shoal.models.kinds import Kind
from shoal.store.mirror import StoreMirror
from shoal.store.protocol import Store
from shoal.store.txn import Event, Obj

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0
DEFAULT_MAX_CLIENTS = 32
DEFAULT_QUEUE = 64
DEFAULT_HISTORY = 200
DEFAULT_LINGER = 30.0
MIRRORED = (Kind.NODE, Kind.SERVICE, Kind.TASK, Kind.LEASE)
WORKLOAD_KINDS = frozenset({Kind.NODE, Kind.SERVICE, Kind.TASK})


class DashboardBusy(ShoalError):
    """503: this gateway serves as many browsers as it may, or is stopping (not a store problem: /readyz stays)."""

    status = 503
    code = "ui_busy"


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Events message (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Browser:
    """One connected browser's outbox."""

    def __init__(self, limit: int) -> None:
        self.items: deque[bytes] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def push(self, message: bytes) -> None:
        if self.closed:
            return
        if len(self.items) >= self.limit:
            self.overflowed = True
            self.close()
            return
        self.items.append(message)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.items.clear()
        self.ready.set()

    async def next(self, timeout: float) -> bytes | None:
        """The next message; b"" when nothing came within `timeout` (time for a keep-alive); None once closed."""
        while True:
            if self.items:
                return self.items.popleft()
            if self.closed:
                return None
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return b""


class DashboardHub:
    def __init__(self, store: Store, *, raft_status: Callable[[], Awaitable[dict[str, Any]]],
                 instances: Callable[[], list[Obj]], clock: Callable[[], float] = time.time,
                 interval: float = DEFAULT_INTERVAL, max_clients: int = DEFAULT_MAX_CLIENTS,
                 queue_size: int = DEFAULT_QUEUE, history: int = DEFAULT_HISTORY,
                 linger: float = DEFAULT_LINGER) -> None:
        self.store = store
        self.raft_status = raft_status
        self.instances = instances
        self.clock = clock
        self.interval = interval
        self.max_clients = max_clients
        self.queue_size = queue_size
        self.linger = linger
        self.browsers: set[Browser] = set()
        self.events: deque[dict[str, Any]] = deque(maxlen=history)
        self.snapshot: dict[str, Any] | None = None
        self._snapshot_msg: bytes | None = None
        self._pending: list[dict[str, Any]] = []
        self._work: dict[str, Any] | None = None  # the nodes/services/tasks part, until one of them changes
        self._raft: dict[str, Any] = {"leader": None, "term": None, "commit_index": None, "members": []}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.stopped = False
        self.builds = 0  # snapshots built (one per interval while running, whatever the number of browsers)
        self.workloads = 0  # of which the costly part was recomputed (nodes, services or tasks changed)
        self.refused = 0
        self.dropped = 0  # browsers disconnected for not keeping up

    # ---- browsers ----------------------------------------------------------------------------------------------
    def subscribe(self) -> Browser:
        """A new browser: it first gets the current snapshot and the recent events. 503 when full or stopping."""
        if self.stopped:
            raise DashboardBusy("dashboard: the gateway is stopping; reload in a moment")
        if len(self.browsers) >= self.max_clients:
            self.refused += 1
            raise DashboardBusy(f"dashboard: {len(self.browsers)} browsers are connected to this gateway, the "
                                "most it serves (SHOAL_UI_MAX_CLIENTS); close one or use another gateway")
        b = Browser(self.queue_size)
        if self._snapshot_msg is not None:
            b.push(self._snapshot_msg)
        if self.events:
            b.push(sse("events", list(self.events)))
        self.browsers.add(b)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="gateway.dashboard")
        return b

    def unsubscribe(self, b: Browser) -> None:
        b.close()
        self.browsers.discard(b)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- the one builder ---------------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        self._pending += events_of(event, self.clock())
        if any(c.kind in WORKLOAD_KINDS for c in event.changes):
            self._work = None

    async def _poll_raft(self) -> None:
        while not self._stop.is_set():
            try:
                self._raft = raft_members(*await self._raft_parts())
            except Exception as e:  # diagnostic view: a failure here must not end the dashboard
                log.warning("dashboard: raft status failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def _raft_parts(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        status = await self.raft_status()
        return status.get("status"), list(status.get("members") or [])

    async def _run(self) -> None:
        mirror = StoreMirror(self.store, MIRRORED, poll_interval=self.interval)
        mirror.on_event = self._on_event
        try:
            async with task_scope() as tg:  # the raft poll lives as long as the builder
                raft = tg.create_task(self._poll_raft(), name="gateway.dashboard.raft")
                await self._follow(mirror)
                raft.cancel()
        finally:
            self.snapshot = self._snapshot_msg = self._work = None  # a later start lists again: nothing stale

    async def _follow(self, mirror: StoreMirror) -> None:
        """Sync the mirror and publish a snapshot every interval, until stopped or idle for `linger`."""
        idle_since: float | None = None
        while not self._stop.is_set():
            store_error = None
            try:
                if await mirror.sync_once() is None:  # listed again: anything may have changed
                    self._work = None
            except Compacted:
                mirror.resync()  # re-list on the next step
            except (ShoalError, httpx.HTTPError, OSError) as e:
                store_error = str(e) or type(e).__name__
            try:
                self._publish(mirror, store_error)
            except Exception:  # a bug on odd data must not leave the browsers with a frozen page
                log.exception("dashboard: building the snapshot failed; retrying next interval")
                self._work = None
            now = time.monotonic()
            if self.browsers:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= self.linger:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def _publish(self, mirror: StoreMirror, store_error: str | None) -> None:
        if self._work is None:
            self._work = workload(mirror.list(Kind.NODE), mirror.list(Kind.SERVICE), mirror.list(Kind.TASK))
            self.workloads += 1
        snap = compose(self._work, mirror.list(Kind.LEASE), self.instances(), self._raft, self.clock(),
                       revision=mirror.revision, store_error=store_error)
        self.builds += 1
        messages = []
        if self.snapshot is None or without_time(snap) != without_time(self.snapshot):
            self.snapshot = snap
            self._snapshot_msg = sse("snapshot", snap)
            messages.append(self._snapshot_msg)
        if self._pending:
            new, self._pending = self._pending, []
            self.events.extend(new)
            messages.append(sse("events", new))
        for b in list(self.browsers):
            for m in messages:
                b.push(m)
            if b.overflowed:
                self.dropped += 1
                self.browsers.discard(b)

    async def stop(self) -> None:
        """The gateway stops: every browser's stream ends, the builder stops."""
        self.stopped = True
        self._stop.set()
        for b in list(self.browsers):
            self.unsubscribe(b)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
