"""Node writes of a dispatcher, batched (issue 13): registrations, DOWN marks of silent nodes and READY marks of
nodes heard from again go through one bounded queue and are committed as one store transaction per interval
(split at `CHUNK_OPS` operations), one transaction in flight at a time.

Before this, every registration did a linearizable read of its node (and of the cluster object) and a write of
its own, and every DOWN mark a write of its own, with no bound on how many ran at once: with a thousand agents
joining or re-registering, the store client's connection pool backed up and its bookkeeping turned quadratic,
writes timed out, and the timeouts caused more re-registrations. Now the dispatcher's node traffic to the store
is at most one transaction (plus, after a conflict, a bounded number of reads) at any time, and an agent that
registers while `max_pending` writes wait is told to back off (503), never queued without bound.

The pure part is `plan_batch`: from the queued intents and this dispatcher's view of the nodes and the cluster
object it builds the operations (each with the version read as its precondition) and the outcome of every
intent. The shell, `NodeWriter`, reads the view from the store mirror; a batch that conflicts (another
dispatcher, a user's `node update`, a view that was behind) makes it re-read exactly the nodes of that batch
from the store and plan again, `attempts` times at most."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.dispatcher import core
from shoal.cluster import removed_node_ids
from shoal.errors import Conflict, NotFound, PermissionDenied, ShoalError, Unavailable
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.models.objects import Obj
from shoal.models.states import NodeState
from shoal.store import txn as t
from shoal.store.client import STORE_FAILURES
from shoal.store.txn import Change, Op, TxnResult

log = logging.getLogger(__name__)

CHUNK_OPS = 200  # SwarmKit's store Batch splits at 200 changes
MAX_PENDING = 2000  # intents waiting at most; a registration beyond is refused with 503 (the agent backs off)
INTERVAL = 0.05  # seconds a batch gathers intents once the first arrives
ATTEMPTS = 6  # plans of one batch (conflicts re-read its nodes between them)
REFRESH_CONCURRENCY = 16  # store reads in flight while re-reading a conflicting batch's nodes


# ---- intents -------------------------------------------------------------------------------------------------
@dataclass
class Register:
    """A node's (re-)registration: its object refreshed and READY (`core.registered_node`)."""

    node_id: str | None
    description: Obj
    addr: str | None
    now: float
    role: str | None = None
    certified: bool = False


@dataclass
class MarkDown:
    """A silent node marked DOWN — only if it is still at `version` (the copy its silence was judged on)."""

    node_id: str
    version: int
    now: float


@dataclass
class MarkReady:
    """A node DOWN in the store that heartbeats here again: READY (nothing if it already is)."""

    node_id: str
    now: float


Intent = Register | MarkDown | MarkReady


@dataclass
class Outcome:
    """What became of one intent: `node_id` written (`written`), left alone (`skipped`, with the reason), or
    refused (`error`)."""

    node_id: str | None = None
    written: bool = False
    skipped: str = ""
    error: Exception | None = None


@dataclass
class BatchPlan:
    ops: list[Op] = field(default_factory=list)
    #: index of each intent that writes -> its op's index in `ops` (one op per node)
    writes: dict[int, int] = field(default_factory=dict)
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # every intent planned here
    deferred: list[int] = field(default_factory=list)  # a second intent for a node: the next batch


def plan_batch(intents: Sequence[Intent], node_of: Callable[[str], Obj | None], cluster: Obj | None,
               new_id: Callable[[], str]) -> BatchPlan:
    """The operations committing `intents` against the view (`node_of`, `cluster`): one op per node, with the
    version read as precondition; a create of a registered node also checks the cluster object's version, so a
    removal committed meanwhile is not undone. Pure."""
    out = BatchPlan()
    touched: set[str] = set()
    cluster_checked = False
    removed = removed_node_ids(cluster)
    for i, intent in enumerate(intents):
        if intent.node_id is not None and intent.node_id in touched:
            out.deferred.append(i)
            continue
        op: Op | None = None
        if isinstance(intent, Register):
            nid = intent.node_id
            cur = node_of(nid) if nid is not None else None
            if cur is None and nid is not None and nid in removed:
                if intent.certified:
                    out.outcomes[i] = Outcome(nid, error=PermissionDenied(
                        f"dispatcher: node {nid} was removed from the cluster; its certificate is revoked (join "
                        "again with a join token)"))
                    continue
                log.info("dispatcher: node %s was removed from the cluster; it joins again as a new node", nid)
                nid = None
            if nid is None:
                nid = new_id()
            obj = core.registered_node(nid, cur, intent.description, intent.addr, intent.now, role=intent.role)
            if cur is None:
                op = t.create(Kind.NODE, obj)
                if cluster is not None and not cluster_checked:
                    out.ops.append(t.check(Kind.CLUSTER, DEFAULT_CLUSTER_ID,
                                           expect_version=cluster["meta"]["version"]))
                    cluster_checked = True
            else:
                op = t.update(Kind.NODE, obj)
            out.outcomes[i] = Outcome(nid, written=True)
        elif isinstance(intent, MarkDown):
            nid = intent.node_id
            cur = node_of(nid)
            if cur is None:
                out.outcomes[i] = Outcome(nid, skipped="removed")
            elif cur.get("meta", {}).get("version") != intent.version:
                out.outcomes[i] = Outcome(nid, skipped="changed since judged")
            elif core.node_state(cur) != NodeState.READY:
                out.outcomes[i] = Outcome(nid, skipped="not ready")
            else:
                op = t.update(Kind.NODE, core.down_node(cur, intent.now))
                out.outcomes[i] = Outcome(nid, written=True)
        else:
            nid = intent.node_id
            cur = node_of(nid)
            if cur is None or core.node_state(cur) == NodeState.READY:
                out.outcomes[i] = Outcome(nid, skipped="removed" if cur is None else "already ready")
            else:
                op = t.update(Kind.NODE, core.ready_node(cur, intent.now))
                out.outcomes[i] = Outcome(nid, written=True)
        if op is not None:
            touched.add(nid)
            out.writes[i] = len(out.ops)
            out.ops.append(op)
    return out


# ---- the shell -----------------------------------------------------------------------------------------------
@dataclass
class _Item:
    intent: Intent
    future: asyncio.Future[tuple[Outcome, TxnResult | None]]


class Busy(Unavailable):
    """The node write queue is full: the caller backs off and retries."""


class NodeWriter:
    """The bounded queue and its flush loop. `view` reads a node from the dispatcher's view; `cluster` the
    cluster object; `apply` folds committed (or re-read) changes into the view."""

    def __init__(self, store: Any, *, view: Callable[[str], Obj | None], cluster: Callable[[], Obj | None],
                 apply: Callable[[TxnResult], None], new_id: Callable[[], str], max_pending: int = MAX_PENDING,
                 interval: float = INTERVAL, chunk_ops: int = CHUNK_OPS, attempts: int = ATTEMPTS) -> None:
        self.store = store
        self.view = view
        self.cluster = cluster
        self.apply = apply
        self.new_id = new_id
        self.max_pending = max_pending
        self.interval = interval
        self.chunk_ops = chunk_ops
        self.attempts = attempts
        self._queue: list[_Item] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._running = False
        self.stats = {"batches": 0, "transactions": 0, "written": 0, "conflicts": 0, "refused_busy": 0}

    @property
    def running(self) -> bool:
        """Whether the flush loop runs (else `write` and the dispatcher's expiry pass flush themselves)."""
        return self._running

    def pending(self) -> int:
        return len(self._queue)

    def submit(self, intent: Intent) -> asyncio.Future[tuple[Outcome, TxnResult | None]]:
        """Queue `intent`; its future resolves with its outcome and the transaction that wrote it (None when
        nothing was written). Raises `Busy` when `max_pending` intents wait already."""
        if len(self._queue) >= self.max_pending:
            self.stats["refused_busy"] += 1
            raise Busy(f"dispatcher: {len(self._queue)} node writes are waiting for the store; back off and "
                       "retry")
        fut: asyncio.Future[tuple[Outcome, TxnResult | None]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(intent, fut))
        self._arrived.set()
        if len(self._queue) >= self.chunk_ops:
            self._full.set()
        return fut

    async def write(self, intent: Intent) -> tuple[Outcome, TxnResult | None]:
        """Submit `intent` and wait for its outcome; without the flush loop running (a dispatcher driven
        directly), the batch is flushed here."""
        fut = self.submit(intent)
        while not self._running and not fut.done():
            await self.flush()
        return await fut

    async def run(self) -> None:
        self._running = True
        try:
            while True:
                await self._arrived.wait()
                try:
                    await asyncio.wait_for(self._full.wait(), self.interval)
                except TimeoutError:
                    pass
                await self.flush()
        finally:
            self._running = False
            self._fail(self._queue, Unavailable("dispatcher: shutting down; register with another dispatcher"))
            self._queue = []

    async def flush(self) -> None:
        """Commit what is queued now (in `chunk_ops` transactions); intents deferred by the plan stay queued."""
        items, self._queue = self._queue, []
        self._arrived.clear()
        self._full.clear()
        if not items:
            return
        self.stats["batches"] += 1
        try:
            await self._commit(items)
        except asyncio.CancelledError:
            self._fail(items, Unavailable("dispatcher: shutting down; register with another dispatcher"))
            raise
        except Exception as e:  # never leave a waiter hanging
            log.exception("dispatcher: node write batch failed")
            self._fail(items, Unavailable(f"dispatcher: node write failed: {e}"))
        if self._queue:
            self._arrived.set()

    @staticmethod
    def _fail(items: Sequence[_Item], err: Exception) -> None:
        for it in items:
            if not it.future.done():
                it.future.set_exception(err)

    async def _commit(self, items: list[_Item]) -> None:
        for start in range(0, len(items), self.chunk_ops):
            await self._commit_chunk(items[start:start + self.chunk_ops])

    async def _commit_chunk(self, items: list[_Item]) -> None:
        todo = items
        for _ in range(self.attempts):
            plan = plan_batch([it.intent for it in todo], self.view, self.cluster(), self.new_id)
            for i, outcome in plan.outcomes.items():
                if i not in plan.writes and not todo[i].future.done():
                    if outcome.error is not None:
                        todo[i].future.set_exception(outcome.error)
                    else:
                        todo[i].future.set_result((outcome, None))
            deferred = [todo[i] for i in plan.deferred]
            if not plan.writes:
                self._requeue(deferred)
                return
            try:
                self.stats["transactions"] += 1
                result = await self.store.txn(plan.ops)
            except (Conflict, NotFound):
                self.stats["conflicts"] += 1
                writers = [todo[i] for i in plan.writes]
                await self._refresh({it.intent.node_id for it in writers if it.intent.node_id is not None},
                                    cluster=any(op["op"] == "check" for op in plan.ops))
                self._requeue(deferred)
                todo = writers
                continue
            except STORE_FAILURES as e:
                err = e if isinstance(e, ShoalError) else Unavailable(f"dispatcher: store write failed: {e}")
                self._fail([todo[i] for i in plan.writes], err)
                self._requeue(deferred)
                return
            self.apply(result)
            self.stats["written"] += len(plan.writes)
            for i in plan.writes:
                if not todo[i].future.done():
                    todo[i].future.set_result((plan.outcomes[i], result))
            self._requeue(deferred)
            return
        self._fail(todo, Unavailable(f"dispatcher: nodes kept changing under {self.attempts} write attempts; "
                                     "retry"))

    def _requeue(self, items: Sequence[_Item]) -> None:
        if items:
            self._queue[:0] = items
            self._arrived.set()

    async def _refresh(self, node_ids: set[str], *, cluster: bool) -> None:
        """Fold the store's current copies of `node_ids` (and the cluster object) into the view."""
        sem = asyncio.Semaphore(REFRESH_CONCURRENCY)

        async def one(kind: str, oid: str) -> None:
            async with sem:
                try:
                    obj = await self.store.get(kind, oid)
                except NotFound:
                    cur = self.view(oid) if kind == Kind.NODE else None
                    if cur is not None:
                        self.apply(TxnResult(cur["meta"]["version"], [Change("delete", kind, oid, cur)]))
                    return
                except STORE_FAILURES as e:
                    log.warning("dispatcher: re-reading %s %s failed: %s", kind, oid, e)
                    return
            self.apply(TxnResult(obj["meta"]["version"], [Change("update", kind, oid, obj)]))

        jobs = [one(Kind.NODE, nid) for nid in node_ids]
        if cluster:
            jobs.append(one(Kind.CLUSTER, DEFAULT_CLUSTER_ID))
        await asyncio.gather(*jobs)

