"""The Dispatcher: the I/O shell around `core` — agent sessions, heartbeats, assignment long polls, batched
status writes, and marking silent nodes DOWN.

Every dispatcher is active (no lease): an agent talks to one of them, and they share liveness by publishing each
heartbeat on NATS (`NODE_HEARTBEAT`), so any of them may mark a silent node DOWN. All node and task writes
carry version preconditions, so racing dispatchers cannot overwrite newer data; duplicates are harmless."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from services.dispatcher import core
from services.dispatcher.beats import BeatPublisher
from services.dispatcher.core import (
    Liveness,
    PermissionDenied,
    RegistrationLimiter,
    Session,
    Stalls,
    Verdict,
)
from services.dispatcher.endpoint_polls import EndpointPolls
from services.dispatcher.expiry import NodeExpiry
from services.dispatcher.logs import LogBroker
from services.dispatcher.nodeindex import NodeIndex
from services.dispatcher.nodewrites import Busy, MarkReady, NodeWriter, Register
from services.dispatcher.polls import SessionPolls
from services.dispatcher.settings import DispatcherSettings
from shoal import wire
from shoal.bus.base import Bus
from shoal.bus.subjects import NODE_HEARTBEAT
from shoal.clock import Clock, SystemClock
from shoal.cluster import ensure_cluster, heartbeat_period, removed_node_ids
from shoal.concurrency import task_scope
from shoal.errors import Conflict, NotFound, RateLimited, Unavailable
from shoal.ids import new_id
from shoal.metrics import Registry
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.models.objects import Obj
from shoal.models.states import NodeState, state_label
from shoal.pacing import Pacer
from shoal.store import txn as t
from shoal.store.client import STORE_FAILURES
from shoal.store.mirror import HintRelay, StoreMirror
from shoal.store.protocol import Store
from shoal.store.txn import Change, Op, TxnResult
from shoal.transport import Revocations

log = logging.getLogger(__name__)

CHUNK_OPS = 200  # SwarmKit's store Batch splits at 200 changes
CHUNK_BYTES = 1_000_000  # well under the 1.5 MiB transaction bound
WRITE_ATTEMPTS = 6
JITTER = 0.1  # SwarmKit: 5 s ± 0.5 s


class Dispatcher(SessionPolls, EndpointPolls, NodeExpiry):
    def __init__(self, settings: DispatcherSettings, *, store: Store, bus: Bus, clock: Clock | None = None,
                 instance: str = "dispatcher", rng: random.Random | None = None,
                 revocations: Revocations | None = None, roots: Callable[[], str | None] | None = None) -> None:
        self.settings = settings
        #: the digest of the cluster's roots as this process trusts them (shoal.enroll.RootsDigest), handed to
        #: every agent with its heartbeat answer so that agents look at the CA's roots only when they changed
        self.roots = roots
        self.store = store
        self.bus = bus
        self.clock = clock or SystemClock()
        self.instance = instance
        self.rng = rng or random.Random()
        self.revocations = revocations or Revocations()
        self.metrics = Registry()
        self.mirror = StoreMirror(store, [Kind.CLUSTER, Kind.NODE, Kind.TASK, Kind.SECRET, Kind.CONFIG,
                                          Kind.SERVICE, Kind.NETKEYS],
                                  poll_interval=settings.poll_interval, on_sync=self._on_sync, name="dispatcher")
        self.relay = HintRelay(self.mirror)
        self.sessions: dict[str, Session] = {}
        self.session_of: dict[str, str] = {}  # node id -> session id
        self.liveness = Liveness(started_at=0.0)
        self.limiter = RegistrationLimiter()
        self.beats = BeatPublisher(bus, period=self.period)  # the heartbeats heard here, for the other dispatchers
        self.stalls = Stalls()  # when this loop could not listen (heartbeat deadlines move by it)
        self.logs = LogBroker()  # log requests of gateways, picked up by agents on their sessions
        self._cluster: Obj | None = None
        self.index = NodeIndex(self.mirror)
        # registrations, DOWN and READY marks: one bounded queue, one store transaction per interval
        self.node_writer = NodeWriter(store, view=lambda nid: self.mirror.get(Kind.NODE, nid),
                                      cluster=lambda: self.mirror.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
                                      or self._cluster, apply=self._apply_written, new_id=new_id)
        self._pending: dict[str, tuple[str, dict[str, Any]]] = {}  # task id -> (reporting node, status)
        self._has_pending = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._view_ready = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopped = False
        self._marking_ready: set[str] = set()
        self._bus_resumed_at = float("-inf")
        self._endpoint_rows: list[Obj] | None = None  # shoal.endpoints.table of the view (None: recompute)
        self._endpoints_event = asyncio.Event()  # set (and replaced) when the table may have changed
        self._endpoint_nets: dict[str, set[str]] | None = None  # networks of each node's live tasks
        self._networked: set[str] = set()  # ids of the view's tasks attached to a network
        self._endpoints_dirty = asyncio.Event()  # the view changed in a way that may move the table
        self._node_tables: dict[tuple[frozenset[str], str | None], Obj] = {}  # per (networks, addr), this table
        self._node_answers: dict[str, tuple[tuple[int, int, str | None], list[Obj], Obj | None, Obj]] = {}
        self._netkeys: Obj | None = None  # the network key ring the tables were last computed with
        self.metrics.gauge("dispatcher_sessions", lambda: len(self.sessions), "agent sessions open here")
        self.metrics.gauge("dispatcher_status_pending", lambda: len(self._pending),
                           "task status reports waiting for the next batch write")
        self.metrics.gauge("dispatcher_node_writes_pending", self.node_writer.pending,
                           "registrations and DOWN/READY marks waiting for the next node batch write")

    # ---- Subsystem ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        return self._view_ready.is_set() and not self._stopped

    def status(self) -> dict[str, Any]:
        return {"instance": self.instance, "ready": self.ready(), "sessions": len(self.sessions),
                "nodes_heard": len(self.liveness.last_seen), "pending_status_updates": len(self._pending),
                "revision": self.mirror.revision, "heartbeat_period": self.period()}

    def stop(self) -> None:
        self._stopped = True
        self._stop_event.set()
        self.mirror.stop()
        for ev in self.index.events.values():
            ev.set()  # long polls notice the stop and answer at once
        self._endpoints_event.set()
        self.logs.stop()  # log readers get the end, log long polls answer, the agents' next posts get 410

    async def run(self) -> None:
        if not await self._bootstrap():
            return
        await self.relay.attach(self.bus)
        await self.bus.subscribe(NODE_HEARTBEAT, self._on_heartbeat_message)
        self.bus.on_reconnect(self._on_bus_reconnect)
        try:
            # the dispatcher's loops live until it stops; one that fails stops the dispatcher with its error
            async with task_scope() as tg:
                loops = [tg.create_task(coro, name=f"dispatcher.{name}") for name, coro in (
                    ("follow", self.mirror.run()), ("endpoints", self._endpoints_loop()),
                    ("expire", self._expire_loop()), ("flush", self._flush_loop()),
                    ("node-writes", self.node_writer.run()), ("beats", self.beats.run()))]
                await self._stop_event.wait()
                for task in loops:
                    task.cancel()
        finally:
            if self._pending:  # hand over what agents already reported (best effort: they re-report anyway)
                batch, self._pending = self._pending, {}
                try:
                    await asyncio.wait_for(self._write_statuses(batch), 2.0)
                except STORE_FAILURES as e:  # TimeoutError is an OSError
                    log.warning("dispatcher: %d status reports not written at shutdown: %s", len(batch), e)

    async def _bootstrap(self) -> bool:
        """Create the cluster object if nobody has (SHOAL_HEARTBEAT_PERIOD only counts then)."""
        backoff = 0.1
        while not self._stopped:
            try:
                self._cluster = await ensure_cluster(self.store, self.settings.heartbeat_period)
                return True
            except STORE_FAILURES as e:
                log.warning("dispatcher: store unavailable at start (%s); retrying in %.1fs", e, backoff)
                await self._sleep_or_stop(backoff)
                backoff = min(backoff * 2, 2.0)
        return False

    async def _sleep_or_stop(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop_event.wait(), seconds)
        except TimeoutError:
            pass

    def period(self) -> float:
        return heartbeat_period(self.mirror.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID) or self._cluster)

    # ---- following the store -----------------------------------------------------------------------------
    def _on_bus_reconnect(self) -> None:
        # Other dispatchers' heartbeats were lost meanwhile: give every node a full grace before judging it from
        # what we hear (the relay makes the mirror re-list: hints were lost too).
        self._bus_resumed_at = self.clock.now()

    def _bus_trusted(self, now: float) -> bool:
        """Whether silence on the bus means silence of the nodes: connected, and long enough ago
        reconnected that their heartbeats would have reached us."""
        connected = bool(getattr(self.bus, "connected", True))
        return connected and now >= self._bus_resumed_at + core.HEARTBEAT_GRACE * self.period()

    def wake(self) -> None:
        """Fetch the store's new events now (tests and in-process hints)."""
        self.mirror.wake()

    def _on_sync(self, changes: Sequence[Change] | None) -> None:
        """Every batch the mirror takes in also updates the per-node task index and wakes exactly the long
        polls of the nodes concerned."""
        self._absorb(changes)
        self.revocations.update(removed_node_ids(self.mirror.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)))
        if not self._view_ready.is_set():
            # SwarmKit's markNodesUnknown: nodes READY now get a longer grace to find this dispatcher.
            self.liveness = Liveness(started_at=self.clock.now())
            self.liveness.seed(self.mirror.list(Kind.NODE))
            self._view_ready.set()
            log.info("dispatcher %s: store view ready at revision %d", self.instance, self.mirror.revision)

    def _absorb(self, changes: Iterable[Change] | None) -> None:
        if changes is not None:
            changes = list(changes)
        if changes is None or any(self._moves_endpoints(c) for c in changes):
            self._endpoints_dirty.set()
        self._index_networked(changes)
        for node_id in self.index.absorb(changes):
            # Removed (its tasks orphaned): end its session, so the agent registers again and the complete
            # set it then receives, with those tasks ORPHANED, makes it stop them.
            self._drop_sessions_of(node_id)
            self.liveness.forget(node_id)

    def node_tasks(self, node_id: str) -> dict[str, Obj]:
        return self.index.tasks(node_id)

    def _apply_written(self, result: TxnResult) -> None:
        self.mirror.apply_written(result)
        self._absorb(result.changes)

    # ---- sessions ----------------------------------------------------------------------------------------
    def _require_ready(self) -> None:
        # A COMPLETE set from an unloaded view would be empty, and the agent would stop every task it runs.
        if self._stopped:
            raise Unavailable(f"dispatcher: {self.instance} is shutting down; use another dispatcher")
        if not self._view_ready.is_set():
            raise Unavailable(f"dispatcher: {self.instance} is still loading its store view; retry shortly")

    def session(self, session_id: str, caller: str | None = None) -> Session:
        """The session `session_id`; when `caller` (the node id of the caller's certificate) is given, it
        must be the node that registered the session."""
        sess = self.sessions.get(session_id)
        if sess is None:
            raise NotFound(f"dispatcher: session {session_id!r} is unknown here (expired or the dispatcher "
                           "restarted); register again")
        if caller is not None:
            core.check_session_owner(sess.node_id, caller, session_id)
        return sess

    async def register(self, node_id: str | None, description: Obj, addr: str | None, *,
                       certified: bool = False, role: str | None = None) -> dict[str, Any]:
        """Open a session for `node_id`. `certified`: the id comes from the caller's certificate, so it is
        the node's identity — a removed node is refused, never given another id (its certificate names the
        old one); uncertified (in-process callers and tests) a removed or missing id gets a new id."""
        self._require_ready()
        if node_id is not None and not self.limiter.allow(node_id, self.clock.monotonic()):
            raise RateLimited(f"dispatcher: node {node_id} registered more than {self.limiter.limit} times in "
                              f"{self.limiter.window:.0f}s; back off and retry")
        now = self.clock.now()
        node_id, result = await self._register_node(node_id, description, addr, now, certified=certified,
                                                    role=role)
        old = self.session_of.pop(node_id, None)
        if old is not None:
            self.sessions.pop(old, None)
            self.logs.drop_node(node_id)
        sess = Session(id=new_id(), node_id=node_id, min_revision=result.revision if result else self.mirror.revision,
                       pacer=Pacer(self.settings.assignment_batch_delay))
        self.sessions[sess.id] = sess
        self.session_of[node_id] = sess.id
        self.index.track(node_id)  # its changes are gathered for the diffs of its assignment messages
        self.index.wake(node_id)  # a long poll of the replaced session ends
        self.liveness.beat(node_id, now)
        self.beats.note(node_id, now)
        self.metrics.inc("dispatcher_registrations_total", help="agent registrations")
        log.info("dispatcher: node %s (%s) registered, session %s", node_id,
                 description.get("hostname"), sess.id)
        return {"session_id": sess.id, "node_id": node_id, "heartbeat_period": self._jittered_period()}

    async def _register_node(self, node_id: str | None, description: Obj, addr: str | None,
                             now: float, *, certified: bool = False,
                             role: str | None = None) -> tuple[str, TxnResult | None]:
        """Create or refresh the node object of a registration (batched with the others: nodewrites.py);
        returns the node's id. An agent without an id gets a new one. An id the cluster removed (`removed_nodes`
        of the cluster object, written with the node's deletion) is not brought back — refused when the id is
        the caller's certificate's, else the agent joins as a new node under a new id, as in SwarmKit where a
        removed node cannot rejoin under its old identity."""
        outcome, result = await self.node_writer.write(
            Register(node_id, description, addr, now, role=role, certified=certified))
        assert outcome.node_id is not None
        return outcome.node_id, result

    def _jittered_period(self) -> float:
        # Jitter spreads the heartbeats of agents that all registered at once (after a dispatcher restart).
        return round(self.period() * (1 + self.rng.uniform(-JITTER, JITTER)), 3)

    async def heartbeat(self, session_id: str, caller: str | None = None) -> dict[str, Any]:
        with self.metrics.time("dispatcher_heartbeat_duration_seconds", "handling one agent heartbeat"):
            return await self._heartbeat(session_id, caller)

    async def _heartbeat(self, session_id: str, caller: str | None) -> dict[str, Any]:
        sess = self.session(session_id, caller)
        now = self.clock.now()
        self.liveness.beat(sess.node_id, now)
        self.beats.note(sess.node_id, now)  # shared with the other dispatchers in batches
        self.metrics.inc("dispatcher_heartbeats_total", help="agent heartbeats")
        node = self.mirror.get(Kind.NODE, sess.node_id)
        if node is not None and core.node_state(node) != NodeState.READY \
                and sess.node_id not in self._marking_ready:
            # Another dispatcher marked it DOWN (lost NATS heartbeats?) while it talks to us: it is alive.
            self._mark_ready(sess.node_id)
        reply: dict[str, Any] = {"period": self._jittered_period()}
        role = core.desired_role_name(node)
        if role is not None:  # the agent renews at once when its certificate says otherwise (promote/demote)
            reply["role"] = role
        if self.roots is not None and (digest := self.roots()) is not None:
            reply["roots"] = digest
        return reply

    def _mark_ready(self, node_id: str) -> None:
        """Queue a READY mark (batched); when the queue is full the next heartbeat asks again."""
        try:
            fut = self.node_writer.submit(MarkReady(node_id, self.clock.now()))
        except Busy:
            return
        self._marking_ready.add(node_id)

        def done(f: asyncio.Future[Any]) -> None:
            self._marking_ready.discard(node_id)
            if f.cancelled():
                return
            if f.exception() is not None:
                log.warning("dispatcher: could not mark node %s READY: %s", node_id, f.exception())
            elif f.result()[0].written:
                log.info("dispatcher: node %s heartbeats here again; marked READY", node_id)

        fut.add_done_callback(done)

    def _drop_sessions_of(self, node_id: str) -> None:
        self.index.changed_at.pop(node_id, None)
        self.index.untrack(node_id)
        sid = self.session_of.pop(node_id, None)
        if sid is not None:
            self.sessions.pop(sid, None)
            self.index.wake(node_id)
            self.logs.drop_node(node_id)

    # ---- status intake -----------------------------------------------------------------------------------
    def report_status(self, session_id: str, updates: list[tuple[str, dict[str, Any]]],
                      caller: str | None = None) -> int:
        """Queue the reports that move a task forward; returns how many were queued. Refuses the whole report
        if it names a task of another node (SwarmKit: PermissionDenied)."""
        sess = self.session(session_id, caller)
        self._require_ready()
        node_id = sess.node_id
        forbidden = sorted({tid for tid, st in updates
                            if core.judge_status(self.mirror.get(Kind.TASK, tid), node_id, st)
                            is Verdict.FORBIDDEN})
        if forbidden:
            self.metrics.inc("dispatcher_status_forbidden_total", help="status reports refused (not own task)")
            raise PermissionDenied(
                f"dispatcher: node {node_id} may only report on its own tasks; not assigned to it: "
                + ", ".join(forbidden[:10]) + (" …" if len(forbidden) > 10 else ""),
                task_ids=forbidden,
            )
        accepted = 0
        for tid, st in updates:
            if core.judge_status(self.mirror.get(Kind.TASK, tid), node_id, st) is not Verdict.ACCEPT:
                continue
            queued = self._pending.get(tid)
            if core.newer_status(queued[1] if queued else None, st):
                self._pending[tid] = (node_id, core.normalize_status(st))
                accepted += 1
        if accepted:
            self.metrics.inc("dispatcher_status_updates_total", accepted, help="status reports queued")
            self._has_pending.set()
            if len(self._pending) >= self.settings.status_batch_max:
                self._batch_full.set()
        return accepted

    async def _flush_loop(self) -> None:
        """Write queued reports at most once per `status_batch_interval` (or at once when `status_batch_max`
        are queued), like SwarmKit's 100 ms status batch, but the first after a quiet spell without waiting."""
        # Batched but not delayed (shoal/pacing.py): a report after a quiet spell is written at once; then at most
        # one write per interval (or at once when the batch is full), gathering what arrives meanwhile.
        pacer = Pacer(self.settings.status_batch_interval)
        loop = asyncio.get_running_loop()
        while not self._stopped:
            await self._has_pending.wait()
            if (delay := pacer.delay(loop.time())) > 0:
                try:
                    await asyncio.wait_for(self._batch_full.wait(), delay)
                except TimeoutError:
                    pass
            pacer.sent(loop.time())
            self._has_pending.clear()
            self._batch_full.clear()
            batch, self._pending = self._pending, {}
            if batch:
                try:
                    await self._write_statuses(batch)
                except Exception:  # never let one bad batch stop the intake
                    log.exception("dispatcher: status batch write failed")

    def _requeue(self, items: dict[str, tuple[str, dict[str, Any]]]) -> None:
        for tid, (node_id, st) in items.items():
            queued = self._pending.get(tid)
            if core.newer_status(queued[1] if queued else None, st):
                self._pending[tid] = (node_id, st)
        if self._pending:
            self._has_pending.set()

    async def _write_statuses(self, batch: dict[str, tuple[str, dict[str, Any]]]) -> None:
        todo = batch
        for _ in range(WRITE_ATTEMPTS):
            ops: list[tuple[str, Op]] = []
            moves: dict[str, tuple[str, str]] = {}  # task id -> (state before, state reported)
            for tid, (node_id, st) in todo.items():
                task = self.mirror.get(Kind.TASK, tid)
                if task is not None and core.judge_status(task, node_id, st) is Verdict.ACCEPT:
                    # `st` was normalized when it was queued (report_status): not again for every write
                    ops.append((tid, t.update(Kind.TASK, {**task, "status": st})))
                    moves[tid] = (state_label(task.get("status")), state_label(st))
            retry: dict[str, tuple[str, dict[str, Any]]] = {}
            chunks = _chunks(ops)
            for i, chunk in enumerate(chunks):
                try:
                    result = await self.store.txn([op for _, op in chunk])
                except (Conflict, NotFound):
                    # Someone else wrote one of these tasks (desired state, a reaper delete): re-read, retry.
                    self.metrics.inc("dispatcher_status_conflicts_total", help="status batch write conflicts")
                    ids = [tid for tid, _ in chunk]
                    gone = await self._refresh_tasks(ids)
                    retry.update({tid: todo[tid] for tid in ids if tid not in gone})
                    continue
                except STORE_FAILURES as e:
                    # Unavailable or outcome unknown: queue again (a repeat is dropped as a duplicate).
                    log.warning("dispatcher: status write failed (%s); retrying with the next batch", e)
                    left = [tid for ch in chunks[i:] for tid, _ in ch]
                    self._requeue({tid: todo[tid] for tid in left} | retry)
                    await self._sleep_or_stop(0.5)
                    return
                self._apply_written(result)
                self.metrics.inc("dispatcher_status_writes_total", len(chunk), help="task statuses written")
                for tid, _ in chunk:
                    before, after = moves[tid]
                    if before != after:
                        self.metrics.inc("task_state_transitions_total", help="task observed-state changes "
                                         "reported by agents and written by this dispatcher",
                                         labels={"from": before, "to": after})
            if not retry:
                return
            todo = retry
        self._requeue(todo)

    async def _refresh_tasks(self, ids: list[str]) -> set[str]:
        """Fold the store's current copies of `ids` into the view; returns the ids that no longer exist."""
        sem = asyncio.Semaphore(16)
        gone: set[str] = set()

        async def one(tid: str) -> None:
            async with sem:
                try:
                    obj = await self.store.get(Kind.TASK, tid)
                except NotFound:
                    gone.add(tid)
                    cur = self.mirror.get(Kind.TASK, tid)
                    if cur is not None:
                        self._apply_written(TxnResult(cur["meta"]["version"], [Change("delete", Kind.TASK,
                                                                                      tid, cur)]))
                    return
            self._apply_written(TxnResult(obj["meta"]["version"], [Change("update", Kind.TASK, tid, obj)]))

        await asyncio.gather(*(one(tid) for tid in ids))
        return gone


def _chunks(ops: list[tuple[str, Op]]) -> list[list[tuple[str, Op]]]:
    """Split into transactions within the store's bounds (op count and bytes)."""
    out: list[list[tuple[str, Op]]] = []
    cur: list[tuple[str, Op]] = []
    size = 0
    for item in ops:
        n = len(wire.dumps(item[1]))
        if cur and (len(cur) >= CHUNK_OPS or size + n > CHUNK_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += n
    if cur:
        out.append(cur)
    return out
