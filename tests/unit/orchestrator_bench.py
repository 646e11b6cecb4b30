"""A bench for the orchestrator's pure core: a MemoryStore with a settable clock where reconcile plans are applied
as real transactions (so every precondition is checked), a stand-in allocator+scheduler, fake agents, and the
gateway's way of changing a service spec. The shell's memory (restart history, tasks seen RUNNING, enforcer
node versions) is kept like `services.orchestrator.loop` keeps it, and can be dropped to simulate a failover."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from shoal.cluster import default_cluster
from shoal.errors import ShoalError
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.placement import constraints_of, node_matches
from shoal.plan import Plan
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.enforcer import NodeChecked, version_of
from shoal.planning.orchestrator.modes import UPDATE
from shoal.planning.orchestrator.restart import RestartHistory, RestartNote, status_time
from shoal.store import txn as t
from tests.sim.cp_fakes import World, agent_ops, make_node, report, respec, service_of, set_env

__all__ = ["NOW", "Bench", "respec", "service_of", "set_env"]

NOW = 1000.0


class Bench:
    def __init__(self, nodes: tuple[str, ...] = ("n1", "n2"), now: float = NOW, **node_kw: Any) -> None:
        self.w = World(now)
        self.w.put(Kind.CLUSTER, default_cluster())
        for n in nodes:
            self.w.put(Kind.NODE, make_node(n, **node_kw))
        self.down: set[str] = set()
        self.failover()

    # ---- the orchestrator's memory ----------------------------------------------------------------------
    def failover(self) -> None:
        """A new leader: everything in memory is lost and rebuilt from the store."""
        self.history = RestartHistory.rebuild(self.w.table(Kind.SERVICE), self.w.tasks())
        self.running_at: dict[str, float] = {}
        self.checked: dict[str, int] = {}
        self.since = self.now

    @property
    def now(self) -> float:
        return self.w.now

    def view(self) -> View:
        return View(self.w.table(Kind.SERVICE), self.w.table(Kind.TASK), self.w.table(Kind.NODE),
                    self.w.mem.find(Kind.CLUSTER, "default"))

    def plan(self) -> Plan:
        v = self.view()
        for task in v.tasks.values():
            if task.get("created_by") == UPDATE and state_of(task) == TaskState.RUNNING:
                self.running_at.setdefault(task["id"], status_time(task))
        plan = reconcile(v, self.history, self.now,
                         seen=Seen(dict(self.running_at), since=self.since, nodes_checked=dict(self.checked)))
        pending = {g.note.node_id for g in plan.groups if isinstance(g.note, NodeChecked)}
        self.checked = {nid: (self.checked.get(nid, -1) if nid in pending else version_of(node))
                        for nid, node in v.nodes.items()}
        return plan

    def orchestrate(self) -> Plan:
        """One pass, written group by group (a refused group is skipped, as a stale write would be)."""
        plan = self.plan()
        for g in plan.groups:
            try:
                self.w.apply(g.ops)
            except ShoalError:
                continue
            if isinstance(g.note, RestartNote):
                self.history.record(g.note)
            elif isinstance(g.note, NodeChecked):
                self.checked[g.note.node_id] = g.note.version
        return plan

    def settle(self, passes: int = 20) -> None:
        for _ in range(passes):
            if not self.orchestrate():
                return
        raise AssertionError("reconcile did not settle")

    # ---- the rest of the cluster --------------------------------------------------------------------------
    def schedule(self) -> None:
        """Allocator + scheduler in one: NEW tasks meant to run are assigned (pre-bound ones to their node, the
        others to the ready, active, matching node with the fewest runnable tasks); unrun tasks meant to stop →
        SHUTDOWN."""
        nodes = [n for n in self.w.mem.list(Kind.NODE)
                 if n["status"]["state"] == "ready" and n["spec"]["availability"] == "active"]
        for task in self.w.tasks():
            if state_of(task) >= TaskState.ASSIGNED:
                continue
            if desired_of(task) >= TaskState.SHUTDOWN:
                self.w.apply([t.update(Kind.TASK, report(task, TaskState.SHUTDOWN, self.now))])
                continue
            node = task.get("node_id")
            if not node:
                fit = [n for n in nodes if node_matches(constraints_of(task["spec"]), n)]
                if not fit:
                    continue
                load = {n["id"]: 0 for n in fit}
                for x in self.w.tasks():
                    if x.get("node_id") in load and state_of(x) <= TaskState.RUNNING:
                        load[x["node_id"]] += 1
                node = min(load, key=lambda n: (load[n], n))
            elif node not in {n["id"] for n in nodes}:
                continue
            self.w.apply([t.update(Kind.TASK, {**task, "node_id": node,
                                               "status": task_status(TaskState.ASSIGNED, self.now)})])

    def agents(self) -> None:
        for node in self.w.mem.list(Kind.NODE):
            if node["id"] not in self.down:
                for op in agent_ops(self.w.tasks(), node["id"], self.now):
                    self.w.apply([op])

    def step(self, dt: float = 0.5) -> None:
        self.orchestrate()
        self.schedule()
        self.agents()
        self.w.now += dt

    def run(self, seconds: float, dt: float = 0.5, until: Callable[[], bool] | None = None) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step(dt)
            if until is not None and until():
                return
        if until is not None:
            raise AssertionError("condition not reached in time")

    # ---- helpers ------------------------------------------------------------------------------------------
    def add(self, service: Obj) -> Obj:
        return self.w.put(Kind.SERVICE, service)

    def service(self, sid: str) -> Obj:
        return self.w.mem.get(Kind.SERVICE, sid)

    def update(self, sid: str, change: Callable[[Obj], None]) -> Obj:
        return self.w.replace(Kind.SERVICE, respec(self.service(sid), change))

    def put(self, obj: Obj, kind: str = Kind.SERVICE) -> Obj:
        return self.w.replace(kind, obj)

    def tasks(self, sid: str) -> list[Obj]:
        return self.w.tasks(sid)

    def task(self, tid: str) -> Obj:
        return self.w.mem.get(Kind.TASK, tid)

    def live(self, sid: str) -> list[Obj]:
        return [x for x in self.tasks(sid) if desired_of(x) <= TaskState.RUNNING]

    def running(self, sid: str, version: int | None = None) -> list[Obj]:
        return [x for x in self.live(sid) if state_of(x) == TaskState.RUNNING
                and (version is None or x["spec_version"] == version)]

    def status(self, sid: str) -> str | None:
        us = self.service(sid).get("update_status")
        return None if us is None else str(us["state"])

    def fail(self, task: Obj, state: TaskState = TaskState.FAILED) -> None:
        self.w.apply([t.update(Kind.TASK, report(self.task(task["id"]), state, self.now, "boom"))])

    def node(self, nid: str, **spec: Any) -> Obj:
        node = self.w.mem.get(Kind.NODE, nid)
        return self.w.replace(Kind.NODE, {**node, "spec": {**node["spec"], **spec}})

    def node_state(self, nid: str, state: str) -> Obj:
        node = self.w.mem.get(Kind.NODE, nid)
        (self.down.add if state == "down" else self.down.discard)(nid)
        return self.w.replace(Kind.NODE, {**node, "status": {**node["status"], "state": state}})

    def add_node(self, nid: str, **kw: Any) -> Obj:
        return self.w.put(Kind.NODE, make_node(nid, **kw))

    def remove_node(self, nid: str) -> None:
        self.w.apply([t.delete(Kind.NODE, nid)])
        self.down.add(nid)


INF = math.inf
