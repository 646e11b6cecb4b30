"""What the tasks on each node take, kept up to date task by task (the scheduler's incremental state, pure).

`nodeinfo.build` walks every task of the cluster to learn what each node has left; a pass that only has to
place the PENDING tasks should not. A `Ledger` is fed the tasks that changed (`update`, or `rebuild` from all of
them on a full pass) and keeps, per node, the sums of what its tracked tasks reserve (observed ASSIGNED..RUNNING,
as in `nodeinfo`), their host ports and spread counts, and the tasks still to place or shut down (`pending`,
`doomed`). `infos(nodes)` then makes the same `NodeInfo`s `nodeinfo.build` would from every task, in
O(nodes) rather than O(tasks): SwarmKit's scheduler keeps its `nodeSet` up to date from task events the same
way. Named generic resources are replayed task by task (their items are picked, not summed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shoal.models.objects import Obj, status_state
from shoal.models.states import TaskState, task_rank
from shoal.planning.scheduler import nodeinfo
from shoal.planning.scheduler.nodeinfo import HostPort, NodeInfo, Reservation, host_ports_of, spec_version

_ASSIGNED, _RUNNING, _COMPLETE = TaskState.ASSIGNED.rank, TaskState.RUNNING.rank, TaskState.COMPLETE.rank
_PENDING = TaskState.PENDING.value


@dataclass(frozen=True)
class Tracked:
    """What one task placed on a node takes there."""

    node_id: str
    service_id: str
    reservation: Reservation
    ports: frozenset[HostPort]
    active: bool  # counts for spreading (desired ≤ COMPLETE)
    assigned: tuple[Obj, ...] | None  # its `assigned_generic_resources` (only with a generic reservation)


class NodeLoad:
    """The sums of the tracked tasks of one node."""

    __slots__ = ("active", "by_service", "count", "generic", "memory_bytes", "nano_cpus", "ports")

    def __init__(self) -> None:
        self.count = 0  # tracked tasks
        self.nano_cpus = 0
        self.memory_bytes = 0
        self.active = 0
        self.by_service: dict[str, int] = {}
        self.ports: dict[HostPort, int] = {}
        self.generic: dict[str, Tracked] = {}  # task id -> its entry, replayed in order (named items are picked)

    def add(self, tid: str, e: Tracked, sign: int) -> None:
        self.count += sign
        self.nano_cpus += sign * e.reservation.nano_cpus
        self.memory_bytes += sign * e.reservation.memory_bytes
        for p in e.ports:
            n = self.ports.get(p, 0) + sign
            if n:
                self.ports[p] = n
            else:
                del self.ports[p]
        if e.active:
            self.active += sign
            n = self.by_service.get(e.service_id, 0) + sign
            if n:
                self.by_service[e.service_id] = n
            else:
                del self.by_service[e.service_id]
        if e.reservation.generic:
            if sign > 0:
                self.generic[tid] = e
            else:
                self.generic.pop(tid, None)


class Ledger:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.tracked: dict[str, Tracked] = {}
        self.loads: dict[str, NodeLoad] = {}
        #: PENDING tasks meant to run (to place) and PENDING tasks no longer meant to run (to shut down), by id
        self.pending: dict[str, Obj] = {}
        self.doomed: dict[str, Obj] = {}
        self._reservations: dict[tuple[str, int], Reservation] = {}

    def rebuild(self, tasks: Iterable[Obj]) -> None:
        self._reset()
        for task in tasks:
            self.update(task["id"], task)

    def update(self, tid: str, task: Obj | None) -> None:
        """`task` (None: deleted) is as the store now has it."""
        old = self.tracked.pop(tid, None)
        if old is not None:
            load = self.loads[old.node_id]
            load.add(tid, old, -1)
            if not load.count:
                del self.loads[old.node_id]
        self.pending.pop(tid, None)
        self.doomed.pop(tid, None)
        if task is None:
            return
        state = status_state(task)
        if state == _PENDING:
            (self.pending if task_rank(task.get("desired_state")) <= _COMPLETE else self.doomed)[tid] = task
            return
        nid = task.get("node_id")
        if not nid or not (_ASSIGNED <= task_rank(state) <= _RUNNING):
            return
        key = (task["service_id"], spec_version(task))
        r = self._reservations.get(key)
        if r is None:
            r = self._reservations[key] = Reservation.of(task)
        assigned = tuple(task.get("assigned_generic_resources") or ()) if r.generic else None
        e = Tracked(str(nid), str(task["service_id"]), r, host_ports_of(task),
                    task_rank(task.get("desired_state")) <= _COMPLETE, assigned)
        self.tracked[tid] = e
        into = self.loads.get(e.node_id)
        if into is None:
            into = self.loads[e.node_id] = NodeLoad()
        into.add(tid, e, 1)

    def infos(self, nodes: Iterable[Obj], failures: Mapping[tuple[str, str, int], int]) -> dict[str, NodeInfo]:
        """The `NodeInfo` of every node, with what its tracked tasks take (what `nodeinfo.build(nodes, tasks,
        failures=failures)` answers over all the tasks this ledger was fed)."""
        infos: dict[str, NodeInfo] = {}
        for node in nodes:
            info = infos[node["id"]] = NodeInfo.of(node)
            load = self.loads.get(node["id"])
            if load is None:
                continue
            info.nano_cpus -= load.nano_cpus
            info.memory_bytes -= load.memory_bytes
            if load.ports:
                info.host_ports = set(load.ports)
            if load.by_service:
                info.active_by_service = dict(load.by_service)
            info.active = load.active
            for e in load.generic.values():
                info._take_generic(e.reservation, e.assigned)
        nodeinfo.add_failures(infos, failures)
        return infos
