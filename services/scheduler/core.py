"""The scheduler's pure core: PENDING → ASSIGNED (SwarmKit `manager/scheduler/scheduler.go`).

`schedule(tasks, nodes, node_tasks, now=...)` returns one `Decision` per task: a node, or the reason nothing
fits. Tasks are taken in groups of (service, spec version), like SwarmKit's task groups; each task goes to the
node that passes the filter pipeline — within the branch its placement preferences pick — with the fewest tasks
of its service, then the fewest active tasks (spread), faulty nodes last; every placement updates that node's
resources and counts before the next task.
`plan` turns decisions into store ops; `Debouncer` is SwarmKit's batching clock (50 ms quiet gap, 1 s max).
No I/O, no clock: `now` is given."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.scheduler import nodeinfo
from services.scheduler.constraints import node_attribute
from services.scheduler.filters import Pipeline, TaskInfo
from services.scheduler.nodeinfo import NodeInfo
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.store import txn as t

ASSIGNED_MESSAGE = "scheduler assigned task to node"
SHUTDOWN_MESSAGE = "shut down before it was scheduled"
#: SwarmKit's `commitDebounceGap` and `maxLatency`.
DEBOUNCE_GAP = 0.05
MAX_LATENCY = 1.0


@dataclass(frozen=True)
class Decision:
    task_id: str
    node_id: str | None  # None: stays PENDING
    err: str | None = None  # "no suitable node (...)" when nothing fits


def no_suitable_node(explanation: str) -> str:
    """SwarmKit's error text: the explanation in parentheses unless there is none (no nodes at all)."""
    return f"no suitable node ({explanation})" if explanation else "no suitable node"


def _group_key(task: Obj) -> tuple[str, int]:
    return task["service_id"], int(task.get("spec_version") or 0)


def _spread_key(info: NodeInfo, service_id: str) -> tuple[bool, int, int, str]:
    return info.faulty(service_id), info.active_by_service.get(service_id, 0), info.active, info.id


def schedule(tasks: Sequence[Obj], nodes: Iterable[Obj], node_tasks: Iterable[Obj], *, now: float,
             pipeline: Pipeline | None = None) -> list[Decision]:
    """Place `tasks` (PENDING) on `nodes`, given the tasks already on nodes (`node_tasks`: any tasks; those
    with a `node_id` and observed state ASSIGNED..RUNNING count)."""
    pipe = pipeline or Pipeline()
    infos = nodeinfo.build(nodes, node_tasks, now)
    ordered = nodeinfo.by_id(infos)
    groups: dict[tuple[str, int], list[Obj]] = {}
    for task in sorted(tasks, key=lambda x: (_group_key(x), int(x.get("slot") or 0), x["id"])):
        groups.setdefault(_group_key(task), []).append(task)
    decisions: list[Decision] = []
    for group in groups.values():
        for task in group:
            decisions.append(_place(TaskInfo.of(task), infos, ordered, pipe))
    return decisions


def _place(ti: TaskInfo, infos: dict[str, NodeInfo], ordered: list[NodeInfo], pipe: Pipeline) -> Decision:
    pre = ti.task.get("node_id")
    # A pre-assigned task (global services) is only validated against its node.
    candidates = ([infos[pre]] if pre in infos else []) if pre else ordered
    fits: list[NodeInfo] = []
    rejections: Counter[tuple[int, str]] = Counter()
    for info in candidates:
        rejected = pipe.check(ti, info)
        if rejected is None:
            fits.append(info)
        else:
            rejections[rejected] += 1
    if not fits:
        return Decision(ti.task["id"], None, no_suitable_node(pipe.explain(rejections)))
    best = min(_preferred(fits, ti), key=lambda n: _spread_key(n, ti.service_id))
    best.add(ti.task)
    return Decision(ti.task["id"], best.id)


def _preferred(fits: list[NodeInfo], ti: TaskInfo) -> list[NodeInfo]:
    """Placement preferences (SwarmKit's decision tree, `design/topology.md`): at each level, split the fitting
    nodes by the value of the preference's label (nodes without it form the "" group, a peer of the others)
    and descend into the group holding the fewest tasks of the service, so tasks even out across values."""
    group = fits
    for descriptor in ti.preferences:
        by_value: dict[str, list[NodeInfo]] = {}
        for info in group:
            by_value.setdefault(node_attribute(info.node, descriptor) or "", []).append(info)
        _, group = min(by_value.items(), key=lambda kv: (
            sum(n.active_by_service.get(ti.service_id, 0) for n in kv[1]), kv[0]))
    return group


def schedulable(task: Obj) -> bool:
    return state_of(task) == TaskState.PENDING and desired_of(task) <= TaskState.RUNNING


def doomed(task: Obj) -> bool:
    """PENDING but no longer meant to run: SwarmKit moves such tasks straight to SHUTDOWN instead of placing
    them (for older spec versions); we do it for every version — nothing can run a task that is never
    assigned, and the restart supervisor and the reaper then see it as stopped."""
    return state_of(task) == TaskState.PENDING and desired_of(task) > TaskState.RUNNING


def plan(tasks: Iterable[Obj], nodes: Iterable[Obj], now: float, *,
         pipeline: Pipeline | None = None) -> tuple[Plan, list[Decision]]:
    """One scheduling pass over all tasks: assignments, refreshed errors (only when the text changes, so an
    unschedulable task does not cause a write loop), and shutdowns of doomed PENDING tasks."""
    all_tasks = list(tasks)
    by_id = {x["id"]: x for x in all_tasks}
    out = Plan()
    for task in all_tasks:
        if doomed(task):
            status = task_status(TaskState.SHUTDOWN, now, SHUTDOWN_MESSAGE)
            out.add([t.update(Kind.TASK, {**task, "status": status})])
    pending = [x for x in all_tasks if schedulable(x)]
    decisions = schedule(pending, nodes, all_tasks, now=now, pipeline=pipeline) if pending else []
    for d in decisions:
        task = by_id[d.task_id]
        if d.node_id is not None:
            new = {**task, "node_id": d.node_id, "status": task_status(TaskState.ASSIGNED, now, ASSIGNED_MESSAGE)}
            out.add([t.update(Kind.TASK, new)])
        elif (task.get("status") or {}).get("err") != d.err:
            out.add([t.update(Kind.TASK, {**task, "status": {**task["status"], "err": d.err, "timestamp": now}})])
    return out, decisions


class Debouncer:
    """Wait for a quiet gap after the last new task (50 ms) but never longer than 1 s after the first one, so
    a burst of tasks is placed in one pass (SwarmKit's commit debouncing). Pure: the caller passes `now`."""

    def __init__(self, gap: float = DEBOUNCE_GAP, max_latency: float = MAX_LATENCY) -> None:
        self.gap = gap
        self.max_latency = max_latency
        self.first: float | None = None
        self.last: float | None = None

    def note(self, now: float) -> None:
        """New work arrived."""
        if self.first is None:
            self.first = now
        self.last = now

    @property
    def waiting(self) -> bool:
        return self.first is not None

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.gap, self.first + self.max_latency)

    def due(self, now: float) -> bool:
        end = self.deadline()
        return end is None or now >= end

    def reset(self) -> None:
        self.first = self.last = None
