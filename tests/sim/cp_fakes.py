"""Fakes for control-plane tests: node and service objects, and a fake agent + dispatcher that walks tasks
assigned to its node through their observed states (ASSIGNED → … → READY/RUNNING, SHUTDOWN on request)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from shoal.ids import new_id
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.specs import JOB_MODES, ServiceSpec, mode_kind
from shoal.models.states import TaskState
from shoal.store import txn as t
from shoal.store.memory import MemoryStore

GiB = 1024**3
CPU = 1_000_000_000

_versions = itertools.count(1)


def with_meta(obj: Obj, created_at: float = 0.0, version: int | None = None) -> Obj:
    """An object as the store would return it (for pure-core tests that never touch a store)."""
    v = next(_versions) if version is None else version
    return {**obj, "meta": {"version": v, "created_at": created_at, "updated_at": created_at}}


def make_node(node_id: str, *, hostname: str | None = None, state: str = "ready", availability: str = "active",
              cpus: float = 4, memory: int = 8 * GiB, executors: tuple[str, ...] = ("process", "container"),
              labels: dict[str, str] | None = None, role: str = "worker", addr: str = "127.0.0.1") -> Obj:
    return {
        "id": node_id,
        "spec": {"name": None, "labels": dict(labels or {}), "role": role, "availability": availability},
        "role": role,
        "status": {"state": state, "message": "", "addr": addr, "timestamp": 0.0},
        "description": {"hostname": hostname or node_id, "platform": {"os": "linux", "arch": "x86_64"},
                        "resources": {"nano_cpus": int(cpus * CPU), "memory_bytes": memory},
                        "executors": list(executors)},
    }


def make_service(name: str, replicas: int = 1, *, service_id: str | None = None, restart: dict[str, Any] | None = None,
                 reservations: dict[str, int] | None = None, constraints: list[str] | None = None,
                 max_replicas: int = 0, runtime: str = "process") -> Obj:
    task: dict[str, Any] = {"restart": restart or {}, "placement": {"constraints": constraints or [],
                                                                   "max_replicas": max_replicas},
                            "resources": {"reservations": reservations or {}}}
    if runtime == "process":
        task["process"] = {"command": ["sleep", "1000"]}
    else:
        task["container"] = {"image": "busybox"}
    spec = ServiceSpec.model_validate({"name": name, "mode": {"replicated": {"replicas": replicas}}, "task": task})
    return {"id": service_id or new_id(), "spec": spec.wire(), "spec_version": 1, "previous_spec": None}


def service_of(name: str, replicas: int = 1, *, mode: dict[str, Any] | None = None,
               update: dict[str, Any] | None = None, rollback: dict[str, Any] | None = None,
               **kw: Any) -> Obj:
    """A service as the gateway stores it (`make_service` plus mode, update and rollback configs)."""
    svc = make_service(name, replicas, **kw)
    spec = dict(svc["spec"])
    if mode is not None:
        spec["mode"] = mode
    if mode_kind(spec) in JOB_MODES:
        spec.pop("update_config", None)
        spec.pop("rollback_config", None)
        svc["job_status"] = {"job_iteration": 0, "last_execution": 0.0}
    else:
        spec["update_config"] = {**spec.get("update_config", {}), **(update or {})}
        spec["rollback_config"] = {**spec.get("rollback_config", {}), **(rollback or {})}
    return {**svc, "spec": spec, "update_status": None}


def respec(service: Obj, change: Callable[[Obj], None]) -> Obj:
    """The service after a user update through the gateway: new spec, previous_spec = old spec, spec_version
    + 1, update_status reset; a job starts a new iteration."""
    spec = copy.deepcopy(service["spec"])
    change(spec)
    out = {**service, "spec": spec, "previous_spec": service["spec"],
           "spec_version": int(service.get("spec_version", 1)) + 1, "update_status": None}
    if "job_status" in service:
        out["job_status"] = {**service["job_status"], "job_iteration": service["job_status"]["job_iteration"] + 1}
    return out


def set_env(value: str) -> Callable[[Obj], None]:
    def change(spec: Obj) -> None:
        spec["task"]["process"]["env"] = {"V": value}
    return change


def scaled(service: Obj, replicas: int) -> Obj:
    spec = {**service["spec"], "mode": {"replicated": {"replicas": replicas}}}
    return {**service, "spec": spec}


# ---- fake agent ----------------------------------------------------------------------------------------------
_WALK = [TaskState.ASSIGNED, TaskState.ACCEPTED, TaskState.PREPARING, TaskState.READY, TaskState.STARTING,
         TaskState.RUNNING]


def agent_next(task: Obj, *, all_the_way: bool = True) -> TaskState | None:
    """The next observed state an agent reports for `task`, or None. Desired SHUTDOWN or REMOVE → SHUTDOWN;
    desired READY → stop at READY (SwarmKit's agent prepares but does not start); desired RUNNING or COMPLETE
    (job tasks) → up to RUNNING (the process then exits on its own: `report` COMPLETE or FAILED)."""
    s, want = state_of(task), desired_of(task)
    if s < TaskState.ASSIGNED or s > TaskState.RUNNING:
        return None
    if want >= TaskState.SHUTDOWN:
        return TaskState.SHUTDOWN
    target = TaskState.READY if want == TaskState.READY else TaskState.RUNNING
    if s >= target:
        return None
    if all_the_way:
        return target
    return _WALK[_WALK.index(s) + 1]


def report(task: Obj, state: TaskState, now: float, message: str = "") -> Obj:
    return {**task, "status": task_status(state, now, message or str(state))}


def agent_ops(tasks: list[Obj], node_id: str, now: float, *, all_the_way: bool = True) -> list[t.Op]:
    """Status updates a healthy agent on `node_id` would report now (through the dispatcher)."""
    ops = []
    for task in tasks:
        if task.get("node_id") != node_id:
            continue
        nxt = agent_next(task, all_the_way=all_the_way)
        if nxt is not None:
            ops.append(t.update(Kind.TASK, report(task, nxt, now)))
    return ops


def set_node_state(mem_or_obj: Obj, state: str, now: float) -> Obj:
    return {**mem_or_obj, "status": {**mem_or_obj["status"], "state": state, "timestamp": now}}


def apply(mem: MemoryStore, ops: list[t.Op], now: float) -> t.TxnResult:
    """Apply `ops` to a MemoryStore as one transaction (raises on a failed precondition)."""
    return mem.apply({"ops": ops, "time": now}, mem.revision + 1)


class World:
    """A MemoryStore with a settable clock, for pure-core tests that apply plans as real transactions (so every
    expect_version precondition a plan carries is checked)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.mem = MemoryStore()
        self.now = now

    def put(self, kind: str, obj: Obj, at: float | None = None) -> Obj:
        res = self.mem.apply({"ops": [t.create(kind, obj)], "time": self.now if at is None else at},
                             self.mem.revision + 1)
        return res.objects[0]

    def replace(self, kind: str, obj: Obj) -> Obj:
        cur = self.mem.get(kind, obj["id"])
        res = self.mem.apply({"ops": [t.update(kind, {**obj, "meta": cur["meta"]})], "time": self.now},
                             self.mem.revision + 1)
        return res.objects[0]

    def apply(self, ops: list[t.Op]) -> t.TxnResult:
        return apply(self.mem, ops, self.now)

    def table(self, kind: str) -> dict[str, Obj]:
        return {o["id"]: o for o in self.mem.list(kind)}

    def tasks(self, service_id: str | None = None) -> list[Obj]:
        return [x for x in self.mem.list(Kind.TASK) if service_id is None or x["service_id"] == service_id]
