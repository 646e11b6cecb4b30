"""The scheduler's filter pipeline, pure (SwarmKit `manager/scheduler/filter.go`, `pipeline.go`).

Each filter checks one (task, node) pair and, when it rejects, names a reason; the pipeline stops at the first
rejecting filter (SwarmKit's order: ready, resources, plugins/runtime, constraints, platform, max replicas) and
counts the reasons, so an unschedulable task can say why: "no suitable node (insufficient memory on 2 nodes;
constraint node.labels.zone==a not satisfied on 1 node)" — reasons ordered by how many nodes they rejected."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.scheduler.constraints import Constraint, first_unmet, parse_all
from services.scheduler.nodeinfo import NodeInfo, Reservation
from shoal.models.objects import Obj


@dataclass(frozen=True)
class TaskInfo:
    """The parts of a task the filters look at, parsed once per task."""

    task: Obj
    service_id: str
    runtime: str
    reservation: Reservation
    constraints: tuple[Constraint, ...]
    max_replicas: int
    platforms: tuple[tuple[str, str], ...] = ()  # (os, arch); "" matches anything
    preferences: tuple[str, ...] = ()  # spread descriptors, e.g. "node.labels.zone"

    @staticmethod
    def of(task: Obj) -> TaskInfo:
        placement = (task.get("spec") or {}).get("placement") or {}
        return TaskInfo(task, task["service_id"], str(task.get("runtime") or "container"),
                        Reservation.of(task), parse_all(placement.get("constraints") or []),
                        int(placement.get("max_replicas") or 0),
                        tuple((str(p.get("os") or ""), str(p.get("arch") or ""))
                              for p in placement.get("platforms") or []),
                        tuple(str(p["spread"]) for p in placement.get("preferences") or [] if p.get("spread")))


def plural(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


class Filter(Protocol):
    name: str

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        """None if the node can take the task, else the reason it cannot."""

    def explain(self, reason: str, count: int) -> str:
        """The reason as part of the error text, for `count` nodes."""


class ReadyFilter:
    """The node is READY and its availability ACTIVE (paused and drained nodes take no new tasks)."""

    name = "ready"

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        n = node.node
        ok = (n.get("status") or {}).get("state") == "ready" and \
            (n.get("spec") or {}).get("availability", "active") == "active"
        return None if ok else "not available for new tasks"

    def explain(self, reason: str, count: int) -> str:
        return f"{plural(count)} {reason}"  # SwarmKit: "2 nodes not available for new tasks"


class ResourceFilter:
    """Reservations fit in what the node has left."""

    name = "resources"

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        cpu = task.reservation.nano_cpus > node.nano_cpus
        mem = task.reservation.memory_bytes > node.memory_bytes
        if cpu and mem:
            return "insufficient resources"
        if mem:
            return "insufficient memory"
        if cpu:
            return "insufficient cpu"
        for kind, n in task.reservation.generic:
            if n > node.generic.get(kind, 0):
                return f"insufficient {kind}"
        return None

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


class RuntimeFilter:
    """The node has an executor for the task's runtime (SwarmKit's plugin filter, for our runtimes)."""

    name = "runtime"

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        executors = (node.node.get("description") or {}).get("executors") or []
        return None if task.runtime in executors else f"runtime {task.runtime} not supported"

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


def _arch(value: str) -> str:
    low = value.lower()
    return _ARCH_ALIASES.get(low, low)


class PlatformFilter:
    """The node's os/arch is one of the task's platforms (none = any; x86_64 ≡ amd64, aarch64 ≡ arm64)."""

    name = "platform"

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        if not task.platforms:
            return None
        platform = (node.node.get("description") or {}).get("platform") or {}
        os_, arch = str(platform.get("os") or "").lower(), _arch(str(platform.get("arch") or ""))
        for want_os, want_arch in task.platforms:
            if (not want_os or want_os.lower() == os_) and (not want_arch or _arch(want_arch) == arch):
                return None
        return "unsupported platform"

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


class ConstraintFilter:
    name = "constraints"

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        unmet = first_unmet(task.constraints, node.node)
        return None if unmet is None else f"constraint {unmet} not satisfied"

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


class MaxReplicasFilter:
    """`placement.max_replicas`: at most that many active tasks of the service per node."""

    name = "max-replicas"

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        if task.max_replicas <= 0 or node.active_by_service.get(task.service_id, 0) < task.max_replicas:
            return None
        return f"max replicas per node ({task.max_replicas}) reached"

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


DEFAULT_FILTERS: tuple[Filter, ...] = (ReadyFilter(), ResourceFilter(), RuntimeFilter(), ConstraintFilter(),
                                       PlatformFilter(), MaxReplicasFilter())


class Pipeline:
    def __init__(self, filters: Sequence[Filter] = DEFAULT_FILTERS) -> None:
        self.filters = tuple(filters)

    def check(self, task: TaskInfo, node: NodeInfo) -> tuple[int, str] | None:
        """None if every filter passes, else (index of the rejecting filter, its reason)."""
        for i, f in enumerate(self.filters):
            reason = f.check(task, node)
            if reason is not None:
                return i, reason
        return None

    def explain(self, rejections: Counter[tuple[int, str]]) -> str:
        """Reasons ordered by the number of nodes they rejected (most first), then by filter order."""
        ordered = sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
        return "; ".join(self.filters[i].explain(reason, n) for (i, reason), n in ordered)
