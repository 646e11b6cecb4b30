"""The scheduler's filter pipeline, pure (SwarmKit `manager/scheduler/filter.go`, `pipeline.go`).

Each filter checks one (task, node) pair and, when it rejects, names a reason; the pipeline stops at the first
rejecting filter (SwarmKit's order: ready, resources, plugins/runtime, constraints, platform, host ports, max
replicas) and counts the reasons, so an unschedulable task can say why: "no suitable node (insufficient memory
on 2 nodes; constraint node.labels.zone==a not satisfied on 1 node)" — reasons ordered by how many nodes they
rejected.

Filters are *static* (the answer depends only on the task spec and the node object: ready, runtime,
constraints, platform) or *dynamic* (it changes as tasks are placed: resources, host ports, max replicas). A
node that took a task in the current group is re-checked with the dynamic filters only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shoal.models.objects import ATTACHMENT_RUNTIME, Obj
from shoal.planning.scheduler.constraints import Constraint, parse_all
from shoal.planning.scheduler.nodeinfo import HostPort, NodeInfo, Reservation, host_ports_of, spec_version


@dataclass(frozen=True)
class TaskInfo:
    """The parts of a task the filters look at, parsed once per task group."""

    task: Obj
    service_id: str
    runtime: str
    reservation: Reservation
    constraints: tuple[Constraint, ...]
    max_replicas: int
    platforms: tuple[tuple[str, str], ...] = ()  # (os, arch), lower-cased; "" matches anything
    preferences: tuple[str, ...] = ()  # spread descriptors, e.g. "node.labels.zone"
    host_ports: frozenset[HostPort] = frozenset()  # host-mode published ports (protocol, port)
    spec_version: int = 0

    @staticmethod
    def of(task: Obj) -> TaskInfo:
        placement = (task.get("spec") or {}).get("placement") or {}
        return TaskInfo(task, task["service_id"], str(task.get("runtime") or "container"),
                        Reservation.of(task), parse_all(placement.get("constraints") or []),
                        int(placement.get("max_replicas") or 0),
                        tuple((str(p.get("os") or "").lower(), _arch(str(p.get("arch") or "")))
                              for p in placement.get("platforms") or []),
                        tuple(str(p["spread"]) for p in placement.get("preferences") or [] if p.get("spread")),
                        host_ports_of(task), spec_version(task))


def plural(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


class Filter(Protocol):
    name: str
    dynamic: bool

    def applies(self, task: TaskInfo) -> bool:
        """Whether the filter can reject anything for this task (SwarmKit's `SetTask` returning false turns a
        filter off: no reservations, no constraints, no platforms...)."""

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        """None if the node can take the task, else the reason it cannot."""

    def explain(self, reason: str, count: int) -> str:
        """The reason as part of the error text, for `count` nodes."""


class _OnNodes:
    """`<reason> on N nodes`, the wording of most of SwarmKit's explanations."""

    dynamic: bool = False

    def applies(self, task: TaskInfo) -> bool:
        return True

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


class ReadyFilter:
    """The node is READY and its availability ACTIVE (paused and drained nodes take no new tasks)."""

    name = "ready"
    dynamic = False

    def applies(self, task: TaskInfo) -> bool:
        return True

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        return None if node.ready else "not available for new tasks"

    def explain(self, reason: str, count: int) -> str:
        return f"{plural(count)} {reason}"  # SwarmKit: "2 nodes not available for new tasks"


class ResourceFilter(_OnNodes):
    """Reservations fit in what the node has left (CPU, memory, generic resources)."""

    name = "resources"
    dynamic = True

    def applies(self, task: TaskInfo) -> bool:
        r = task.reservation
        return bool(r.nano_cpus or r.memory_bytes or r.generic)

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        r = task.reservation
        cpu = r.nano_cpus > node.nano_cpus
        mem = r.memory_bytes > node.memory_bytes
        if cpu or mem:
            return "insufficient resources" if cpu and mem else "insufficient memory" if mem else "insufficient cpu"
        for kind, n in r.generic:
            if n > node.generic.get(kind, 0):
                return f"insufficient {kind}"
        return None


class RuntimeFilter(_OnNodes):
    """The node has an executor for the task's runtime (SwarmKit's plugin filter, for our runtimes). Network
    attachment tasks need none: every agent holds attachments (SwarmKit has no runtime filter for them)."""

    name = "runtime"

    def applies(self, task: TaskInfo) -> bool:
        return task.runtime != ATTACHMENT_RUNTIME

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        return None if task.runtime in node.executors else f"runtime {task.runtime} not supported"


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


def _arch(value: str) -> str:
    low = value.lower()
    return _ARCH_ALIASES.get(low, low)


class PlatformFilter(_OnNodes):
    """The node's os/arch is one of the task's platforms (none = any; x86_64 ≡ amd64, aarch64 ≡ arm64)."""

    name = "platform"

    def applies(self, task: TaskInfo) -> bool:
        return bool(task.platforms)

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        if not task.platforms:
            return None
        arch = _arch(node.arch)
        for want_os, want_arch in task.platforms:
            if (not want_os or want_os == node.os) and (not want_arch or want_arch == arch):
                return None
        return "unsupported platform"


class ConstraintFilter(_OnNodes):
    name = "constraints"

    def applies(self, task: TaskInfo) -> bool:
        return bool(task.constraints)

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        for c in task.constraints:
            if not c.holds(node.attribute(c.key)):
                return f"constraint {c} not satisfied"
        return None


class HostPortFilter:
    """A host-mode published port (protocol and number) is free on the node: no task tracked there, of any
    service, publishes it (SwarmKit's HostPortFilter)."""

    name = "host-ports"
    dynamic = True

    def applies(self, task: TaskInfo) -> bool:
        return bool(task.host_ports)

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        if not task.host_ports or not node.host_ports:
            return None
        for proto, port in sorted(task.host_ports & node.host_ports, key=lambda pp: (pp[1], pp[0])):
            return f"host-mode port {port}/{proto} in use"
        return None

    def explain(self, reason: str, count: int) -> str:
        return f"{reason} on {plural(count)}"


class MaxReplicasFilter(_OnNodes):
    """`placement.max_replicas`: at most that many active tasks of the service per node."""

    name = "max-replicas"
    dynamic = True

    def applies(self, task: TaskInfo) -> bool:
        return task.max_replicas > 0

    def check(self, task: TaskInfo, node: NodeInfo) -> str | None:
        if task.max_replicas <= 0 or node.active_by_service.get(task.service_id, 0) < task.max_replicas:
            return None
        return f"max replicas per node ({task.max_replicas}) reached"


DEFAULT_FILTERS: tuple[Filter, ...] = (ReadyFilter(), ResourceFilter(), RuntimeFilter(), ConstraintFilter(),
                                       PlatformFilter(), HostPortFilter(), MaxReplicasFilter())


Check = Callable[[TaskInfo, NodeInfo], "str | None"]


class Pipeline:
    def __init__(self, filters: Sequence[Filter] = DEFAULT_FILTERS) -> None:
        self.filters = tuple(filters)
        self._bound: tuple[TaskInfo | None, tuple[tuple[int, Check], ...], tuple[tuple[int, Check], ...]] = \
            (None, (), ())

    def _for(self, task: TaskInfo) -> tuple[tuple[tuple[int, Check], ...], tuple[tuple[int, Check], ...]]:
        """The filters that apply to `task` (all, and the dynamic ones), remembered for the last task seen —
        a pass checks one task group against every node in a row."""
        bound_task, checks, dynamic = self._bound
        if bound_task is not task:
            live = [(i, f) for i, f in enumerate(self.filters) if f.applies(task)]
            checks = tuple((i, f.check) for i, f in live)
            dynamic = tuple((i, f.check) for i, f in live if f.dynamic)
            self._bound = (task, checks, dynamic)
        return checks, dynamic

    def check(self, task: TaskInfo, node: NodeInfo) -> tuple[int, str] | None:
        """None if every filter passes, else (index of the rejecting filter, its reason)."""
        for i, check in self._for(task)[0]:
            reason = check(task, node)
            if reason is not None:
                return i, reason
        return None

    def recheck(self, task: TaskInfo, node: NodeInfo) -> tuple[int, str] | None:
        """`check` for a node that passed every filter for this task group and has since taken tasks: only the
        dynamic filters can answer differently."""
        for i, check in self._for(task)[1]:
            reason = check(task, node)
            if reason is not None:
                return i, reason
        return None

    def explain(self, rejections: Counter[tuple[int, str]]) -> str:
        """Reasons ordered by the number of nodes they rejected (most first), then by filter order."""
        ordered = sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
        return "; ".join(self.filters[i].explain(reason, n) for (i, reason), n in ordered)
