"""What the scheduler knows about each node, pure (SwarmKit `manager/scheduler/nodeinfo.go`).

Resources available = the node's reported resources minus the reservations of the tasks on it whose *observed*
state is ≤ RUNNING (a task is untracked only once it stopped, not when its desired state changes, so nothing
is double-booked under a task still shutting down). Spread counts only tracked tasks with desired ≤ COMPLETE.
Recent failures (FAILED/REJECTED tasks of a service within 5 minutes) mark a node as faulty for that service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState

#: SwarmKit's `maxFailures` within `monitorFailures`: such a node sorts last for that service.
MAX_FAILURES = 5
FAILURE_WINDOW = 300.0


@dataclass(frozen=True)
class Reservation:
    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: tuple[tuple[str, int], ...] = ()  # (kind, count), e.g. (("gpu", 2),)

    @staticmethod
    def of(task: Obj) -> Reservation:
        r = (((task.get("spec") or {}).get("resources") or {}).get("reservations")) or {}
        generic = tuple((str(g["kind"]), int(g["value"])) for g in r.get("generic") or [])
        return Reservation(int(r.get("nano_cpus") or 0), int(r.get("memory_bytes") or 0), generic)


def generic_of(resources: Obj) -> dict[str, int]:
    """A node's advertised generic resources as counts per kind. Accepted shapes: `{"gpu": 2}`, or SwarmKit's
    list of discrete (`{"kind": "fpga", "value": 2}`) and named (`{"kind": "gpu", "value": "UUID1"}`, one
    unit each) resources."""
    raw = resources.get("generic") or {}
    if isinstance(raw, dict):
        return {str(k): int(v) for k, v in raw.items()}
    out: dict[str, int] = {}
    for g in raw:
        value = g.get("value")
        n = int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else 1
        out[str(g["kind"])] = out.get(str(g["kind"]), 0) + n
    return out


@dataclass
class NodeInfo:
    id: str
    node: Obj
    nano_cpus: int
    memory_bytes: int
    generic: dict[str, int] = field(default_factory=dict)
    active_by_service: dict[str, int] = field(default_factory=dict)
    active: int = 0
    failures_by_service: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def of(node: Obj) -> NodeInfo:
        res = ((node.get("description") or {}).get("resources")) or {}
        return NodeInfo(node["id"], node, int(res.get("nano_cpus") or 0), int(res.get("memory_bytes") or 0),
                        generic_of(res))

    def add(self, task: Obj) -> None:
        """Track a task placed on (or running on) this node."""
        r = Reservation.of(task)
        self.nano_cpus -= r.nano_cpus
        self.memory_bytes -= r.memory_bytes
        for kind, n in r.generic:
            self.generic[kind] = self.generic.get(kind, 0) - n
        if desired_of(task) <= TaskState.COMPLETE:
            sid = task["service_id"]
            self.active_by_service[sid] = self.active_by_service.get(sid, 0) + 1
            self.active += 1

    def faulty(self, service_id: str) -> bool:
        return self.failures_by_service.get(service_id, 0) >= MAX_FAILURES


def build(nodes: Iterable[Obj], tasks: Iterable[Obj], now: float,
          failure_window: float = FAILURE_WINDOW) -> dict[str, NodeInfo]:
    infos = {n["id"]: NodeInfo.of(n) for n in nodes}
    for task in tasks:
        info = infos.get(task.get("node_id") or "")
        if info is None:
            continue
        s = state_of(task)
        if TaskState.ASSIGNED <= s <= TaskState.RUNNING:
            info.add(task)
        elif s in (TaskState.FAILED, TaskState.REJECTED):
            ts = float((task.get("status") or {}).get("timestamp") or 0.0)
            if ts > now - failure_window:
                sid = task["service_id"]
                info.failures_by_service[sid] = info.failures_by_service.get(sid, 0) + 1
    return infos


def by_id(infos: Mapping[str, NodeInfo]) -> list[NodeInfo]:
    return [infos[k] for k in sorted(infos)]
