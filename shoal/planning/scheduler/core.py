"""The scheduler's pure core: PENDING → ASSIGNED (SwarmKit `manager/scheduler/scheduler.go`).

`schedule(tasks, nodes, node_tasks, now=...)` returns one `Decision` per task: a node (plus the named generic
resources claimed there), or the reason nothing fits. Tasks are taken in groups of (service, spec version), like
SwarmKit's task groups. For each group the filter pipeline runs once over every node; the nodes that pass go
into a tree of heaps — one level per placement preference, split by the preference's label value (nodes without
the label form the "" branch, a peer of the others), one heap of nodes per leaf ordered by the spread key:
faulty nodes last (by failure count), then fewest tasks of the service, fewest active tasks, node id. Each task
descends toward the branch holding the fewest tasks of the service and takes the leaf's best node, whose counts
and resources then change before the next task; a node that took a task is re-checked with the dynamic filters
(resources, host ports, max replicas) before it is used again, and dropped from the tree when it no longer fits.
A group costs O(nodes * filters + tasks * log nodes) instead of O(tasks * nodes * filters).

`plan` turns decisions into store ops; `Debouncer` is SwarmKit's batching clock (50 ms quiet gap, 1 s max).
No I/O, no clock: `now` is given."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, status_state, task_status
from shoal.models.states import TaskState, task_rank
from shoal.plan import Plan
from shoal.planning.scheduler import nodeinfo
from shoal.planning.scheduler.filters import Pipeline, TaskInfo
from shoal.planning.scheduler.nodeinfo import MAX_FAILURES, NodeInfo, host_ports_of, spec_version
from shoal.store import txn as t

ASSIGNED_MESSAGE = "scheduler assigned task to node"
SHUTDOWN_MESSAGE = "shut down before it was scheduled"
#: SwarmKit's `commitDebounceGap` and `maxLatency`.
DEBOUNCE_GAP = 0.05
MAX_LATENCY = 1.0

_COMPLETE = TaskState.COMPLETE.rank
_PENDING = TaskState.PENDING.value
SpreadKey = tuple[int, int, int, str]


@dataclass(frozen=True)
class Decision:
    task_id: str
    node_id: str | None  # None: stays PENDING
    err: str | None = None  # "no suitable node (...)" when nothing fits
    generic: tuple[Obj, ...] = ()  # the task's `assigned_generic_resources` on that node


def no_suitable_node(explanation: str) -> str:
    """SwarmKit's error text: the explanation in parentheses unless there is none (no nodes at all)."""
    return f"no suitable node ({explanation})" if explanation else "no suitable node"


def _group_key(task: Obj) -> tuple[str, int, tuple[tuple[str, int], ...]]:
    """Tasks of one service and spec version share a spec (and so a `TaskInfo`); the host ports come from the
    service's endpoint at allocation time, so they are part of the key too."""
    return task["service_id"], spec_version(task), tuple(sorted(host_ports_of(task)))


def spread_key(info: NodeInfo, ti: TaskInfo) -> SpreadKey:
    """Lower is better: faulty nodes (≥ MAX_FAILURES recent failures of this service version) last, fewer
    failures first among them; then fewest tasks of the service, fewest active tasks, node id."""
    failures = info.failures.get((ti.service_id, ti.spec_version), 0)
    return (failures if failures >= MAX_FAILURES else 0, info.active_by_service.get(ti.service_id, 0),
            info.active, info.id)


class _Branch:
    """A node of the placement-preference tree: children by label value, or (a leaf) a heap of nodes. `count`
    is the number of tasks of the service on the nodes below (SwarmKit's decision tree, `design/topology.md`)."""

    __slots__ = ("children", "count", "heap", "parent", "value")

    def __init__(self, value: str, parent: _Branch | None) -> None:
        self.value = value
        self.parent = parent
        self.count = 0
        self.children: dict[str, _Branch] | None = None
        self.heap: list[tuple[SpreadKey, NodeInfo]] | None = None

    def empty(self) -> bool:
        return not self.children if self.heap is None else not self.heap


class _GroupPlacer:
    """Places the unassigned tasks of one task group (see the module docstring)."""

    def __init__(self, ti: TaskInfo, ordered: Sequence[NodeInfo], pipe: Pipeline) -> None:
        self.ti = ti
        self.pipe = pipe
        self.rejections: Counter[tuple[int, str]] = Counter()
        self.touched: set[str] = set()
        self.root = _Branch("", None)
        sid = ti.service_id
        check = pipe.check
        if not ti.preferences:  # one leaf: the root
            heap: list[tuple[SpreadKey, NodeInfo]] = []
            for info in ordered:
                rejected = check(ti, info)
                if rejected is None:
                    heap.append((spread_key(info, ti), info))
                else:
                    self.rejections[rejected] += 1
            heapq.heapify(heap)
            self.root.heap = heap
            self.root.count = sum(info.active_by_service.get(sid, 0) for _, info in heap)
            return
        leaves: dict[tuple[str, ...], _Branch] = {}
        for info in ordered:
            rejected = check(ti, info)
            if rejected is not None:
                self.rejections[rejected] += 1
                continue
            path = tuple(info.attribute(d) or "" for d in ti.preferences)
            leaf = leaves.get(path)
            if leaf is None:
                leaf = leaves[path] = self._leaf(path)
            assert leaf.heap is not None
            leaf.heap.append((spread_key(info, ti), info))
            n = info.active_by_service.get(sid, 0)
            if n:
                b: _Branch | None = leaf
                while b is not None:
                    b.count += n
                    b = b.parent
        for leaf in leaves.values():
            assert leaf.heap is not None
            heapq.heapify(leaf.heap)
        if self.root.children is None:  # no node fits
            self.root.children = {}

    def _leaf(self, path: tuple[str, ...]) -> _Branch:
        b = self.root
        for value in path:
            if b.children is None:
                b.children = {}
            child = b.children.get(value)
            if child is None:
                child = b.children[value] = _Branch(value, b)
            b = child
        b.heap = []
        return b

    def _descend(self) -> _Branch | None:
        b = self.root
        while b.children is not None:
            if not b.children:
                return None
            b = min(b.children.values(), key=lambda c: (c.count, c.value))
        return b

    def _prune(self, leaf: _Branch) -> None:
        """Remove an empty leaf and every ancestor it leaves empty."""
        b: _Branch | None = leaf
        while b is not None and b.parent is not None and b.empty():
            assert b.parent.children is not None
            del b.parent.children[b.value]
            b = b.parent

    def next_node(self) -> tuple[_Branch, NodeInfo] | None:
        """The best node that still fits, popped from its leaf (the caller pushes it back), or None."""
        while True:
            leaf = self._descend()
            if leaf is None or leaf.heap is None:
                return None
            while leaf.heap:
                _, info = heapq.heappop(leaf.heap)
                if info.id in self.touched:
                    rejected = self.pipe.recheck(self.ti, info)
                    if rejected is not None:
                        self.rejections[rejected] += 1
                        continue
                return leaf, info
            if leaf is self.root:
                return None
            self._prune(leaf)

    def place(self, tasks: Sequence[Obj]) -> list[Decision]:
        ti = self.ti
        r = ti.reservation
        out: list[Decision] = []
        for i, task in enumerate(tasks):
            found = self.next_node()
            if found is None:
                err = no_suitable_node(self.pipe.explain(self.rejections))
                out.extend(Decision(x["id"], None, err) for x in tasks[i:])
                break
            leaf, info = found
            generic = info.claim(r) if r.generic else ()
            info.add(task, r, ti.host_ports, generic)
            self.touched.add(info.id)
            assert leaf.heap is not None
            heapq.heappush(leaf.heap, (spread_key(info, ti), info))
            if task_rank(task.get("desired_state")) <= _COMPLETE:
                b: _Branch | None = leaf
                while b is not None:
                    b.count += 1
                    b = b.parent
            out.append(Decision(task["id"], info.id, None, generic))
        return out


def schedule(tasks: Sequence[Obj], nodes: Iterable[Obj], node_tasks: Iterable[Obj], *, now: float,
             pipeline: Pipeline | None = None,
             failures: Mapping[tuple[str, str, int], int] | None = None,
             infos: dict[str, NodeInfo] | None = None) -> list[Decision]:
    """Place `tasks` (PENDING) on `nodes`, given the tasks already on nodes (`node_tasks`: any tasks; those
    with a `node_id` and observed state ASSIGNED..RUNNING count). `failures`: recent failures per (node,
    service, spec version) from a `FailureLog` (default: counted from `node_tasks`). `infos`: the nodes as a
    `Ledger` already knows them (then `nodes`, `node_tasks` and `failures` are not read; they are changed)."""
    pipe = pipeline or Pipeline()
    if infos is None:
        infos = nodeinfo.build(nodes, node_tasks, now, failures=failures)
    ordered = nodeinfo.by_id(infos)
    groups: dict[tuple[str, int, tuple[tuple[str, int], ...]], list[Obj]] = {}
    for task in tasks:
        groups.setdefault(_group_key(task), []).append(task)
    decisions: list[Decision] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda x: (int(x.get("slot") or 0), x["id"]))
        ti = TaskInfo.of(group[0])
        free = []
        for task in group:
            if task.get("node_id"):
                decisions.append(_place_preassigned(task, ti, infos, pipe))
            else:
                free.append(task)
        if free:
            decisions.extend(_GroupPlacer(ti, ordered, pipe).place(free))
    return decisions


def _place_preassigned(task: Obj, ti: TaskInfo, infos: Mapping[str, NodeInfo], pipe: Pipeline) -> Decision:
    """A task bound to a node (global services) is only validated against that node."""
    info = infos.get(task["node_id"])
    if info is None:
        return Decision(task["id"], None, no_suitable_node(""))
    rejected = pipe.check(ti, info)
    if rejected is not None:
        return Decision(task["id"], None, no_suitable_node(pipe.explain(Counter({rejected: 1}))))
    generic = info.claim(ti.reservation) if ti.reservation.generic else ()
    info.add(task, ti.reservation, ti.host_ports, generic)
    return Decision(task["id"], info.id, None, generic)


def pending_fate(task: Obj) -> bool | None:
    """None when the task is not PENDING; else whether it is still meant to run (desired RUNNING, or COMPLETE
    for job tasks). `schedulable` and `doomed` are its two answers; a pass asks it once per task."""
    if status_state(task) != _PENDING:
        return None
    return task_rank(task.get("desired_state")) <= _COMPLETE


def schedulable(task: Obj) -> bool:
    """PENDING and meant to run (desired RUNNING, or COMPLETE for job tasks)."""
    return pending_fate(task) is True


def doomed(task: Obj) -> bool:
    """PENDING but no longer meant to run: SwarmKit moves such tasks straight to SHUTDOWN instead of placing
    them (for older spec versions); we do it for every version — nothing can run a task that is never
    assigned, and the restart supervisor and the reaper then see it as stopped."""
    return pending_fate(task) is False


def plan(tasks: Iterable[Obj], nodes: Iterable[Obj], now: float, *, pipeline: Pipeline | None = None,
         failures: Mapping[tuple[str, str, int], int] | None = None) -> tuple[Plan, list[Decision]]:
    """One scheduling pass over all tasks: assignments (with the named generic resources claimed), refreshed
    errors (only when the text changes, so an unschedulable task does not cause a write loop), and shutdowns of
    doomed PENDING tasks."""
    all_tasks = tasks if isinstance(tasks, list) else list(tasks)
    pending: list[Obj] = []
    doomed: list[Obj] = []
    for task in all_tasks:
        fate = pending_fate(task)
        if fate is not None:
            (pending if fate else doomed).append(task)
    return plan_pending(pending, doomed, nodes, now, node_tasks=all_tasks, pipeline=pipeline, failures=failures)


def plan_pending(pending: Sequence[Obj], doomed: Iterable[Obj], nodes: Iterable[Obj], now: float, *,
                 node_tasks: Iterable[Obj] = (), infos: dict[str, NodeInfo] | None = None,
                 pipeline: Pipeline | None = None,
                 failures: Mapping[tuple[str, str, int], int] | None = None) -> tuple[Plan, list[Decision]]:
    """`plan` given the PENDING tasks already sorted out: `pending` to place, `doomed` to shut down, and the
    nodes either as `infos` (a `Ledger`'s) or built from `node_tasks`."""
    out = Plan()
    for task in doomed:
        status = task_status(TaskState.SHUTDOWN, now, SHUTDOWN_MESSAGE)
        out.add([t.update(Kind.TASK, {**task, "status": status})])
    if not pending:
        return out, []
    by_id = {x["id"]: x for x in pending}
    decisions = schedule(pending, nodes, node_tasks, now=now, pipeline=pipeline, failures=failures, infos=infos)
    assigned = task_status(TaskState.ASSIGNED, now, ASSIGNED_MESSAGE)
    for d in decisions:
        task = by_id[d.task_id]
        if d.node_id is not None:
            new = {**task, "node_id": d.node_id, "status": dict(assigned)}
            if d.generic:
                new["assigned_generic_resources"] = list(d.generic)
            out.add([t.update(Kind.TASK, new)])
        elif (task.get("status") or {}).get("err") != d.err:
            out.add([t.update(Kind.TASK, {**task, "status": {**task["status"], "err": d.err, "timestamp": now}})])
    return out, decisions


class Debouncer:
    """Wait for a quiet gap after the last new task (50 ms) but never longer than 1 s after the first one, so
    a burst of tasks is placed in one pass (SwarmKit's commit debouncing) — except for the leading edge: work
    that arrives after at least `gap` without a pass is due at once (nothing was arriving, so there is nothing
    to gather; a task created alone, or a whole service's tasks committed together, are placed without
    waiting). Work arriving within `gap` of the last pass is debounced as before. Pure: the caller passes
    `now`."""

    def __init__(self, gap: float = DEBOUNCE_GAP, max_latency: float = MAX_LATENCY) -> None:
        self.gap = gap
        self.max_latency = max_latency
        self.first: float | None = None
        self.last: float | None = None
        self.fired: float | None = None  # when the last pass ran (reset)
        self.leading = False

    def note(self, now: float) -> None:
        """New work arrived."""
        if self.first is None:
            self.first = now
            self.leading = self.fired is None or now - self.fired >= self.gap
        self.last = now

    @property
    def waiting(self) -> bool:
        return self.first is not None

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        if self.leading:
            return self.first
        return min(self.last + self.gap, self.first + self.max_latency)

    def due(self, now: float) -> bool:
        end = self.deadline()
        return end is None or now >= end

    def reset(self, now: float | None = None) -> None:
        """A pass ran (at `now`)."""
        self.first = self.last = None
        self.leading = False
        if now is not None:
            self.fired = now
