"""The I/O shell shared by the leader-only control-plane subsystems (orchestrator, allocator, scheduler).

`PlanLoop` campaigns for the subsystem's lease (`shoal.service.LeaderOnly`); while it holds it, it follows the
store through a `StoreMirror` and repeats: run the subclass's pure core over the mirror (`plan(mirror, now)`),
write the plan in bounded transactions each carrying `lease.fence()`, fold every committed result into the
mirror at once (`apply_written`, so the next pass never acts twice on a stale view), then sleep until the view
changes or the plan's timer fires. Level-triggered like SwarmKit's init passes: every activation starts from a
fresh list, so nothing depends on in-memory state surviving a leader change.

Each pass is told what changed since the previous one (`plan(mirror, now, changes)`: kind -> changed ids, from
the mirror's change tracking, its own writes included), so a subsystem can keep the cost of a pass proportional
to the change — the way SwarmKit's orchestrators react to events — instead of walking the whole view. `changes`
is None on the first pass of an activation, after the mirror re-listed, and every `SHOAL_FULL_PASS_INTERVAL`
seconds: a full, level-triggered pass over everything (the safety net; a subsystem must then rebuild whatever it
keeps incrementally).

A write that fails on a precondition (VersionConflict: the view was stale; PreconditionFailed: the lease moved
on) is not an error: wait for the mirror to catch up and plan again. NATS only speeds things up: `attach_bus`
may be called late (or never), hints then wake the mirror, and a reconnect forces a re-list."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from fastapi import FastAPI

from shoal import heap
from shoal.bus.base import Bus
from shoal.bus.nats import NatsBus
from shoal.clock import Clock, SystemClock
from shoal.concurrency import task_scope
from shoal.config import CommonSettings
from shoal.errors import Conflict, InvalidArgument, NotFound, OutcomeUnknown
from shoal.instances import Announcer
from shoal.lease import LeaseKeeper
from shoal.metrics import LAG_BUCKETS, Registry
from shoal.models.kinds import Kind
from shoal.models.states import state_label
from shoal.plan import MAX_CHANGES_PER_TXN, Group, Plan, pack
from shoal.runner import run, serve, setup_logging
from shoal.service import LeaderOnly
from shoal.store.client import STORE_FAILURES, StoreClient
from shoal.store.mirror import Changed, HintRelay, StoreMirror
from shoal.store.protocol import Store
from shoal.store.txn import Op
from shoal.transport import http_client, load_credentials, managers_only

log = logging.getLogger(__name__)


#: a periodic full pass comes no sooner than this many times the last one's duration after it
FULL_PASS_SHARE = 10.0


class LeaderSettings(CommonSettings):
    """Knobs shared by the leader-only subsystems (all `SHOAL_*`):

    `SHOAL_LEASE_DURATION` — seconds a lease lasts without renewal (renewed every third of it);
    `SHOAL_POLL_INTERVAL` — seconds between store watch polls when no NATS hint arrives;
    `SHOAL_MAX_TXN_OPS` — ops per transaction, the lease check included (SwarmKit batches 200 changes);
    `SHOAL_STORE_TIMEOUT`, `SHOAL_STORE_RETRY_FOR` — per-request timeout and member failover budget;
    `SHOAL_MAX_IDLE` — seconds between passes when nothing changes (a safety net; passes are level-triggered);
    `SHOAL_FULL_PASS_INTERVAL` — seconds between full passes (`changes` None: everything is looked at again);
    the passes in between look at what changed."""

    lease_duration: float = 1.5
    poll_interval: float = 1.0
    max_txn_ops: int = MAX_CHANGES_PER_TXN
    store_timeout: float = 10.0
    store_retry_for: float = 5.0
    max_idle: float = 10.0
    full_pass_interval: float = 30.0


class _Stale(Exception):
    """A write failed on a precondition: the view (or the lease) is out of date."""


class PlanLoop(ABC):
    """Base of Orchestrator, Allocator and Scheduler. Subclasses set `name` and `kinds` and implement `plan`;
    optionally `activate` (rebuild in-memory state from the fresh view) and `committed` (a group landed)."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: LeaderSettings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.metrics = Registry()
        self.relay = HintRelay()
        self._bus = bus
        self.leader = LeaderOnly(store, self.name, settings.instance_name(self.name), self._work,
                                 lease_duration=settings.lease_duration, clock=clock)
        self.mirror: StoreMirror | None = None
        self.passes = 0
        self.last_pass_at: float | None = None
        self.last_error: str | None = None
        self._batch_ops = max(2, settings.max_txn_ops)
        self._running = False
        self._next_full = -math.inf
        self.metrics.gauge("active", lambda: float(self.leader.active), "1 while this instance holds the lease")
        self.metrics.gauge("mirror_revision", lambda: float(self.mirror.revision if self.mirror else 0),
                           "store revision the mirror has caught up with")

    # ---- Subsystem protocol -----------------------------------------------------------------------------
    async def run(self) -> None:
        self._running = True
        try:
            if self._bus is not None and not self.relay.attached:
                await self.relay.attach(self._bus)
            await self.leader.run()
        finally:
            self._running = False

    def stop(self) -> None:
        self.leader.stop()
        if self.mirror is not None:
            self.mirror.stop()

    def ready(self) -> bool:
        """Ready = doing its job: a standby is ready (it can take over); an active instance once its mirror
        has listed the store."""
        if not self._running:
            return False
        if not self.leader.active:
            return True
        return self.mirror is not None and self.mirror.ready.is_set()

    def status(self) -> dict[str, Any]:
        lease = self.leader.lease
        return {
            "active": self.leader.active,
            "holder": self.leader.holder,
            "term": lease.term if lease is not None else 0,
            "activations": self.leader.activations,
            "passes": self.passes,
            "last_pass_at": self.last_pass_at,
            "last_error": self.last_error,
            "mirror_revision": self.mirror.revision if self.mirror is not None else None,
            **self.extra_status(),
        }

    async def attach_bus(self, bus: Bus) -> None:
        """Start using NATS hints (called when the bus connects, possibly long after start)."""
        self._bus = bus
        if not self.relay.attached:
            await self.relay.attach(bus)

    # ---- hooks ------------------------------------------------------------------------------------------
    def activate(self, mirror: StoreMirror, now: float) -> None:
        """Called once per activation, after the first full list: rebuild in-memory state."""
        return None

    @abstractmethod
    def plan(self, mirror: StoreMirror, now: float, changes: Changed | None = None) -> Plan:
        """Run the pure core over the current view. `changes`: the ids of each kind changed since the previous
        pass (own writes included); None: a full pass — anything may have changed."""

    def committed(self, group: Group) -> None:
        """Called after `group` committed (and was folded into the mirror)."""
        return None

    def extra_status(self) -> dict[str, Any]:
        return {}

    # ---- the active loop --------------------------------------------------------------------------------
    async def _work(self, lease: LeaseKeeper) -> None:
        mirror = StoreMirror(self.store, self.kinds, poll_interval=self.settings.poll_interval, name=self.name,
                             track_changes=True)
        self.mirror = mirror
        self.relay.mirror = mirror
        try:
            # the mirror lives as long as this term's work: the work ending (lease lost, an error) cancels it,
            # and a mirror that fails ends the work with its error (LeaderOnly re-campaigns)
            async with task_scope() as tg:
                tg.create_task(mirror.run(), name=f"{self.name}.mirror")
                await mirror.ready.wait()
                self.activate(mirror, self.clock.now())
                self._next_full = -math.inf
                log.info("%s: active (term %d) at revision %d", self.name, lease.term, mirror.revision)
                while True:
                    await self._one_pass(lease, mirror)
        finally:
            mirror.stop()
            if self.relay.mirror is mirror:
                self.relay.mirror = None

    async def _one_pass(self, lease: LeaseKeeper, mirror: StoreMirror) -> None:
        gen = mirror.generation
        now = self.clock.now()
        started = time.perf_counter()
        since = mirror.take_pending_since()
        if since is not None:
            self.metrics.observe("plan_lag_seconds", started - since, "a store change seen by the mirror, waiting "
                                 "for the planning pass that takes it into account", buckets=LAG_BUCKETS)
        changes = mirror.take_changes()
        if changes is None or now >= self._next_full:
            changes = None
            self._next_full = now + self.settings.full_pass_interval
            self.metrics.inc("full_passes", help="passes over the whole view (the rest look at what changed)")
        # The pure core reads the view in a worker thread while the view is held still: a pass over 100,000
        # tasks took 9-12 s on a loaded machine, and on the loop it held the lease renewals, the store hints
        # and every HTTP answer that long (issue 13). The loop keeps turning under the GIL's switching.
        async with mirror.view_lock:
            plan = await asyncio.to_thread(self.plan, mirror, now, changes)
        took = time.perf_counter() - started
        if changes is None:
            # the safety net's share of the process stays under 1/FULL_PASS_SHARE whatever the view's size (a
            # full pass over 100,000 tasks cost 5-10 s of CPU: every 30 s, a third of a core)
            self._next_full = max(self._next_full, now + FULL_PASS_SHARE * took)
        self.metrics.observe("pass_duration_seconds", took,
                             "one planning pass of the pure core over the mirror (writes excluded)")
        self.passes += 1
        self.last_pass_at = now
        self.metrics.inc("passes", help="planning passes over the mirror")
        if plan:
            try:
                await self._write(plan, lease, mirror)
                self.last_error = None
                return  # plan again over the view that now includes our own writes
            except _Stale as e:
                self.metrics.inc("conflicts", help="writes refused on a precondition (stale view or lease)")
                log.debug("%s: write refused (%s); waiting for the mirror", self.name, e.__cause__)
                mirror.wake()
                await mirror.wait_changed(mirror.generation, self.settings.poll_interval)
                return
            except STORE_FAILURES as e:
                self.metrics.inc("write_errors", help="writes that failed for another reason")
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("%s: write failed: %s", self.name, self.last_error)
                await self.clock.sleep(min(1.0, self.settings.poll_interval))
                return
        timeout = self.settings.max_idle
        if plan.wake_at is not None:
            timeout = min(timeout, max(0.005, plan.wake_at - self.clock.now()))
        await mirror.wait_changed(gen, timeout)

    async def _write(self, plan: Plan, lease: LeaseKeeper, mirror: StoreMirror) -> None:
        for batch in pack(plan.groups, max_ops=self._batch_ops - 1):
            ops = [lease.fence()] + [op for g in batch for op in g.ops]
            try:
                res = await self.store.txn(ops)
            except (Conflict, NotFound, OutcomeUnknown) as e:
                # One stale object spoils a whole batch: shrink batches until writes go through again.
                self._batch_ops = max(2, self._batch_ops // 2)
                raise _Stale(str(e)) from e
            except InvalidArgument:
                self._batch_ops = max(2, self._batch_ops // 2)
                raise
            moves = task_moves(ops, mirror)
            mirror.apply_written(res)
            for before, after in moves:
                self.metrics.inc("task_state_transitions_total", help="task observed-state changes written by "
                                 "this process (creates count from \"none\")", labels={"from": before, "to": after})
            self.metrics.inc("txns", help="transactions committed")
            self.metrics.inc("ops", len(ops) - 1, help="ops committed (lease checks excluded)")
            self._batch_ops = min(self.settings.max_txn_ops, self._batch_ops * 2)
            for g in batch:
                self.committed(g)


def task_moves(ops: list[Op], mirror: StoreMirror) -> list[tuple[str, str]]:
    """(state before, state after) of each task these ops create or update whose observed state changes, the
    state before read from the view the plan was made over."""
    moves = []
    for op in ops:
        if op.get("kind") != Kind.TASK or op.get("op") not in ("create", "update"):
            continue
        obj = op["object"]
        cur = mirror.objects.get(Kind.TASK, {}).get(obj["id"]) if op["op"] == "update" else None
        before, after = state_label(cur.get("status") if cur else None), state_label(obj.get("status"))
        if before != after:
            moves.append((before, after))
    return moves


L = TypeVar("L", bound=PlanLoop)


async def serve_leader(settings: LeaderSettings, name: str, build: Callable[[Store], L],
                       make_app: Callable[[L, Store], FastAPI]) -> None:
    """The whole `__main__` of a leader-only subsystem: logging, its credentials (SHOAL_CERT_DIR; none is a
    start-up error), the store client, the subsystem, NATS (it connects in the background: the process starts
    and works without it), and the HTTP server (mutual TLS, ops routes for managers and admins) until
    SIGTERM/SIGINT. The store, NATS and the server all use the process's own certificate."""
    instance = settings.instance_name(name)
    setup_logging(settings.log_level, instance)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per store request is noise
    creds = load_credentials(settings.cert_dir)
    store = StoreClient(settings.store_members, timeout=settings.store_timeout,
                        retry_for=settings.store_retry_for,
                        client=http_client(creds, timeout=settings.store_timeout))
    sub = build(store)
    bus = await NatsBus.connect(settings.nats_url, instance, creds)  # returns at once; connects in the background
    await sub.attach_bus(bus)
    announcer = Announcer(bus, name, instance, port=settings.port, status=lambda: {
        "active": sub.leader.active, "term": sub.leader.lease.term if sub.leader.lease is not None else 0})
    announcer.start()  # so `GET /v1/cluster` lists this instance (shoal/instances.py)
    try:
        await serve(make_app(sub, store), settings.host, settings.port, creds, managers_only,
                    renew_with=settings.ca_urls)
    finally:
        await announcer.stop()
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()


def leader_main(settings: LeaderSettings, subsystem: type[L], make_app: Callable[[L, Store], FastAPI]) -> None:
    """`python -m services.<subsystem>` of a leader-only subsystem (one active instance per cluster, the rest
    standby): `serve_leader` on the chosen event loop, over the raftstore members in SHOAL_STORE_MEMBERS and NATS
    at SHOAL_NATS_URL (optional: without it the store is polled), over mutual TLS with the identity in
    SHOAL_CERT_DIR (required); the subsystem is built over the store client with the system clock. Its large
    decoded store answers are kept frozen (`shoal.heap.DecodedFreezer`: its mirror keeps what it decodes)."""
    heap.decoded.enable()
    run(lambda: serve_leader(settings, subsystem.name, lambda store: subsystem(store, None, SystemClock(), settings),
                             make_app))
