"""What the scheduler knows about each node, pure (SwarmKit `manager/scheduler/nodeinfo.go`).

Resources available = the node's reported resources minus the reservations of the tasks on it whose *observed*
state is ASSIGNED..RUNNING (a task is untracked only once it stopped, not when its desired state changes, so
nothing is double-booked under a task still shutting down). Spread counts only tracked tasks with desired ≤
COMPLETE. Tracked tasks also hold their host-mode published ports and the named generic resources assigned to
them (`assigned_generic_resources`).

Generic resources a node advertises (`description.resources.generic`): discrete counts (`{"gpu": 2}` or
`[{"kind": "gpu", "value": 2}]`) or named items (`[{"kind": "gpu", "named": ["GPU-0", "GPU-1"]}]`, or SwarmKit's
one-item form `{"kind": "gpu", "value": "GPU-0"}`). A task asks for a count; on a named kind the scheduler claims
specific items (the lowest free ones) and records them on the task.

Recent failures — FAILED/REJECTED tasks of the same service *and spec version* within 5 minutes
(`failure_counts`, or a `FailureLog` kept by the shell so failures outlive the reaper) — make a node faulty for
that service version: it sorts last (SwarmKit's `versionedService` failure tracking)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shoal import placement
from shoal.models.objects import Obj, status_state
from shoal.models.states import NodeState, TaskState, task_rank

#: SwarmKit's `maxFailures` within `monitorFailures`: such a node sorts last for that service version.
MAX_FAILURES = 5
FAILURE_WINDOW = 300.0

_ASSIGNED, _RUNNING, _COMPLETE = TaskState.ASSIGNED.rank, TaskState.RUNNING.rank, TaskState.COMPLETE.rank
_FAILED_STATES = frozenset({TaskState.FAILED.value, TaskState.REJECTED.value})

#: (service id, spec version)
ServiceVersion = tuple[str, int]
#: (protocol, published port)
HostPort = tuple[str, int]

_NO_PORTS: set[HostPort] = set()  # shared empty defaults: never mutated (NodeInfo copies before writing)
_NO_FAILURES: dict[ServiceVersion, int] = {}
_EXECUTORS: dict[tuple[str, ...], frozenset[str]] = {}


def _executors(names: tuple[str, ...]) -> frozenset[str]:
    """One frozenset per distinct executor list (most nodes advertise the same ones)."""
    return _EXECUTORS.setdefault(names, frozenset(names))


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


def host_ports_of(task: Obj) -> frozenset[HostPort]:
    """Host-mode ports the task publishes with a fixed number (from `task.endpoint`, written by the allocator)."""
    ports = (task.get("endpoint") or {}).get("ports") or ()
    return frozenset((str(p.get("protocol") or "tcp"), int(p["published_port"])) for p in ports
                     if p.get("publish_mode") == "host" and p.get("published_port"))


def generic_of(resources: Obj) -> tuple[dict[str, int], dict[str, list[str]]]:
    """A node's advertised generic resources: (discrete count per kind, named items per kind, sorted)."""
    raw = resources.get("generic") or {}
    counts: dict[str, int] = {}
    named: dict[str, list[str]] = {}
    if isinstance(raw, dict):
        return {str(k): int(v) for k, v in raw.items()}, {}
    for g in raw:
        kind = str(g["kind"])
        value = g.get("value")
        if g.get("named") is not None:
            named.setdefault(kind, []).extend(str(v) for v in g["named"])
        elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            counts[kind] = counts.get(kind, 0) + int(value)
        elif value is not None:
            named.setdefault(kind, []).append(str(value))
    for kind, items in named.items():
        items.sort()
        counts[kind] = counts.get(kind, 0) + len(items)
    return counts, named


class NodeInfo:
    """One node and what is placed on it. A plain slotted class (a pass builds one per node: at 100k nodes the
    construction cost matters); containers that most nodes leave empty are shared until first written."""

    __slots__ = ("active", "active_by_service", "arch", "attributes", "executors", "failures", "generic",
                 "host_ports", "id", "memory_bytes", "named", "nano_cpus", "node", "os", "ready")

    def __init__(self, id: str, node: Obj, nano_cpus: int, memory_bytes: int,
                 generic: dict[str, int] | None = None, named: dict[str, list[str]] | None = None, *,
                 ready: bool = False, executors: frozenset[str] = frozenset(), os: str = "", arch: str = "") -> None:
        self.id = id
        self.node = node
        self.nano_cpus = nano_cpus
        self.memory_bytes = memory_bytes
        self.generic: dict[str, int] = generic if generic is not None else {}  # free units per kind
        self.named: dict[str, list[str]] = named if named is not None else {}  # free named items, sorted
        self.active_by_service: dict[str, int] = {}
        self.active = 0
        self.host_ports: set[HostPort] = _NO_PORTS  # replaced by a set of its own on first add
        self.failures: dict[ServiceVersion, int] = _NO_FAILURES  # likewise
        self.ready = ready
        self.executors = executors
        self.os = os
        self.arch = arch
        self.attributes: dict[str, str | None] = {}  # constraint/preference values, memoised

    @staticmethod
    def of(node: Obj) -> NodeInfo:
        desc = node.get("description") or {}
        res = desc.get("resources") or {}
        counts, named = generic_of(res) if res.get("generic") else (None, None)
        platform = desc.get("platform") or {}
        ready = status_state(node) == NodeState.READY.value and \
            (node.get("spec") or {}).get("availability", "active") == "active"
        executors = desc.get("executors") or ()
        return NodeInfo(node["id"], node, int(res.get("nano_cpus") or 0), int(res.get("memory_bytes") or 0),
                        counts, named, ready=ready,
                        executors=_EXECUTORS.get(tuple(executors)) or _executors(tuple(executors)),
                        os=str(platform.get("os") or "").lower(), arch=str(platform.get("arch") or "").lower())

    def add(self, task: Obj, reservation: Reservation | None = None, host_ports: Iterable[HostPort] | None = None,
            assigned: Iterable[Obj] | None = None) -> None:
        """Track a task placed on (or running on) this node: its reservations, host ports, named resources
        (`assigned`, default: the task's `assigned_generic_resources`), and the spread counts."""
        r = reservation if reservation is not None else Reservation.of(task)
        self.nano_cpus -= r.nano_cpus
        self.memory_bytes -= r.memory_bytes
        if r.generic:
            self._take_generic(r, task.get("assigned_generic_resources") if assigned is None else assigned)
        ports = host_ports_of(task) if host_ports is None else host_ports
        if ports:
            if self.host_ports is _NO_PORTS:
                self.host_ports = set()
            self.host_ports.update(ports)
        if task_rank(task.get("desired_state")) <= _COMPLETE:
            sid = task["service_id"]
            self.active_by_service[sid] = self.active_by_service.get(sid, 0) + 1
            self.active += 1

    def _take_generic(self, r: Reservation, assigned: Iterable[Obj] | None) -> None:
        items: dict[str, list[str]] = {}
        for a in assigned or ():
            if a.get("named"):
                items.setdefault(str(a["kind"]), []).extend(str(v) for v in a["named"])
        for kind, n in r.generic:
            self.generic[kind] = self.generic.get(kind, 0) - n
            free = self.named.get(kind)
            if free is None:
                continue
            mine = [v for v in items.get(kind, ()) if v in free]
            for v in mine:
                free.remove(v)
            del free[: max(0, n - len(mine))]  # a task without a record of its items: some items are its

    def claim(self, r: Reservation) -> tuple[Obj, ...]:
        """What to record in the task's `assigned_generic_resources` for `r` on this node: the lowest free
        items of each named kind, the count of each discrete kind (SwarmKit's `genericresource.Claim`).
        Does not take them: `add` does, given this record."""
        out: list[Obj] = []
        for kind, n in r.generic:
            free = self.named.get(kind)
            out.append({"kind": kind, "named": free[:n]} if free is not None else {"kind": kind, "value": n})
        return tuple(out)

    def attribute(self, key: str) -> str | None:
        """The node's value for a constraint or preference key (memoised; None for an unknown key)."""
        try:
            return self.attributes[key]
        except KeyError:
            value = self.attributes[key] = placement.attribute(self.node, key)
            return value

    def failure_count(self, sv: ServiceVersion) -> int:
        return self.failures.get(sv, 0)

    def faulty(self, service_id: str, spec_version: int | None = None) -> bool:
        """At least MAX_FAILURES recent failures of the service (one spec version, or any when None)."""
        if spec_version is None:
            return sum(n for (sid, _), n in self.failures.items() if sid == service_id) >= MAX_FAILURES
        return self.failures.get((service_id, spec_version), 0) >= MAX_FAILURES


def spec_version(task: Obj) -> int:
    return int(task.get("spec_version") or 0)


def failure_counts(tasks: Iterable[Obj], now: float, window: float = FAILURE_WINDOW
                   ) -> dict[tuple[str, str, int], int]:
    """(node id, service id, spec version) → FAILED/REJECTED tasks whose status time is within `window`."""
    out: dict[tuple[str, str, int], int] = {}
    for task in tasks:
        status = task.get("status") or {}
        if status.get("state") in _FAILED_STATES and task.get("node_id") and \
                float(status.get("timestamp") or 0.0) > now - window:
            key = (str(task["node_id"]), str(task["service_id"]), spec_version(task))
            out[key] = out.get(key, 0) + 1
    return out


class FailureLog:
    """Recent failures remembered by the shell across passes, so a failure still counts after the reaper
    deleted its task (SwarmKit keeps them in memory too; here the store's tasks seed it on activation).
    Each failed task counts once, at its status time, until it leaves the window."""

    def __init__(self, window: float = FAILURE_WINDOW) -> None:
        self.window = window
        self._seen: dict[str, tuple[tuple[str, str, int], float]] = {}

    def observe(self, tasks: Iterable[Obj], now: float) -> dict[tuple[str, str, int], int]:
        """Record the failed tasks among `tasks`, forget failures older than the window, return the counts."""
        horizon = now - self.window
        seen = self._seen
        for task in tasks:
            status = task.get("status") or {}
            if status.get("state") in _FAILED_STATES and task.get("node_id") and task["id"] not in seen:
                ts = float(status.get("timestamp") or 0.0)
                if ts > horizon:
                    seen[task["id"]] = ((str(task["node_id"]), str(task["service_id"]), spec_version(task)), ts)
        for tid in [tid for tid, (_, ts) in seen.items() if ts <= horizon]:
            del seen[tid]
        out: dict[tuple[str, str, int], int] = {}
        for key, _ in seen.values():
            out[key] = out.get(key, 0) + 1
        return out


def build(nodes: Iterable[Obj], tasks: Iterable[Obj], now: float, failure_window: float = FAILURE_WINDOW,
          failures: Mapping[tuple[str, str, int], int] | None = None) -> dict[str, NodeInfo]:
    """Node infos with the tasks on them tracked. `failures` (from a `FailureLog`) replaces counting the
    failed tasks among `tasks`."""
    infos = {n["id"]: NodeInfo.of(n) for n in nodes}
    if failures is None and not isinstance(tasks, list | tuple):
        tasks = list(tasks)  # read twice
    reservations: dict[tuple[str, int], Reservation] = {}  # tasks of one spec version reserve alike
    for task in tasks:
        nid = task.get("node_id")
        if not nid:
            continue
        info = infos.get(nid)
        if info is None:
            continue
        if _ASSIGNED <= task_rank(status_state(task)) <= _RUNNING:
            key = (task["service_id"], spec_version(task))
            r = reservations.get(key)
            if r is None:
                r = reservations[key] = Reservation.of(task)
            info.add(task, r)
    add_failures(infos, failure_counts(tasks, now, failure_window) if failures is None else failures)
    return infos


def add_failures(infos: Mapping[str, NodeInfo], counts: Mapping[tuple[str, str, int], int]) -> None:
    """Mark the recent failures per (node, service, spec version) on the nodes' infos."""
    for (nid, sid, version), n in counts.items():
        info = infos.get(nid)
        if info is not None:
            if info.failures is _NO_FAILURES:
                info.failures = {}
            info.failures[(sid, version)] = info.failures.get((sid, version), 0) + n


def by_id(infos: Mapping[str, NodeInfo]) -> list[NodeInfo]:
    return [infos[k] for k in sorted(infos)]
