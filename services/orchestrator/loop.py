"""The orchestrator's I/O shell: while holding the `orchestrator` lease, reconcile the mirror and write plans.

In-memory state, all of it rebuilt or started afresh on every activation (SwarmKit's components lose theirs
on a leader change too): the restart history (for `max_attempts`/`window`, rebuilt from the stored tasks and
updated only after a restart's transaction committed), when update tasks were seen RUNNING (for the update
supervisor's failure detection once they stopped), which node versions the constraint enforcer checked, and a
mark per task (`quiet.TaskMarks`) that tells which task changes cannot give a pass anything to do.

A pass looks at what changed since the previous one: when the previous full reconcile planned nothing and every
change since is `quiet.benign` (a healthy task moving towards RUNNING: most of a ramp's changes), the pass is
skipped at a cost of O(changed tasks); otherwise `reconcile` runs over the whole view, as it always did."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from services.orchestrator.settings import OrchestratorSettings
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.models.objects import Obj, state_of
from shoal.models.states import TaskState
from shoal.plan import Group, Plan
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.enforcer import NodeChecked, version_of
from shoal.planning.orchestrator.modes import UPDATE
from shoal.planning.orchestrator.quiet import TaskMarks, benign
from shoal.planning.orchestrator.restart import RestartHistory, RestartNote, status_time
from shoal.store.mirror import Changed, StoreMirror
from shoal.store.protocol import Store


class Orchestrator(PlanLoop):
    name: ClassVar[str] = "orchestrator"
    kinds: ClassVar[tuple[str, ...]] = (Kind.SERVICE, Kind.TASK, Kind.NODE, Kind.CLUSTER)

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: OrchestratorSettings) -> None:
        super().__init__(store, bus, clock, settings)
        self.stop_timeout = settings.restart_stop_timeout
        self.history = RestartHistory()
        self.running_at: dict[str, float] = {}
        self.nodes_checked: dict[str, int] = {}
        self.since = -math.inf
        self.marks = TaskMarks()
        #: the previous reconcile planned nothing: until when (its timer) benign changes need no pass; None: not
        self.quiet_until: float | None = None
        self.skipped = 0

    @staticmethod
    def view(mirror: StoreMirror) -> View:
        return View(services=mirror.objects[Kind.SERVICE], tasks=mirror.objects[Kind.TASK],
                    nodes=mirror.objects[Kind.NODE], cluster=mirror.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID))

    def activate(self, mirror: StoreMirror, now: float) -> None:
        view = self.view(mirror)
        self.history = RestartHistory.rebuild(view.services, view.tasks.values())
        self.running_at = {}
        self.nodes_checked = {}  # the enforcer's initial pass looks at every node
        self.since = now
        self.marks = TaskMarks()
        self.quiet_until = None

    def observe(self, view: View) -> None:
        """Remember when update tasks were seen RUNNING (their status time then), forget deleted tasks."""
        for tid in [t for t in self.running_at if t not in view.tasks]:
            del self.running_at[tid]
        for task in view.tasks.values():
            self._observe_one(task)

    def _observe_one(self, task: Obj) -> None:
        if task.get("created_by") == UPDATE and state_of(task) == TaskState.RUNNING:
            self.running_at.setdefault(task["id"], status_time(task))

    def _calm(self, view: View, changes: Changed) -> bool:
        """Fold the changed tasks into the marks and `running_at`; whether the changes are all benign."""
        calm = not (changes.get(Kind.SERVICE) or changes.get(Kind.NODE) or changes.get(Kind.CLUSTER))
        for tid in changes.get(Kind.TASK, ()):
            task = view.tasks.get(tid)
            old = self.marks.update(tid, task)
            if task is None:
                self.running_at.pop(tid, None)
                calm = False
                continue
            self._observe_one(task)
            if calm and not benign(old, task, view.services, view.nodes, self.marks):
                calm = False
        return calm

    def plan(self, mirror: StoreMirror, now: float, changes: Changed | None = None) -> Plan:
        view = self.view(mirror)
        if changes is None:
            self.marks.rebuild(view.tasks.values())
            self.observe(view)
        elif self._calm(view, changes) and self.quiet_until is not None and now < self.quiet_until:
            self.skipped += 1
            self.metrics.inc("passes_skipped", help="passes skipped: nothing but benign task changes since a "
                             "reconcile that planned nothing")
            return Plan(wake_at=self.quiet_until if self.quiet_until != math.inf else None)
        self.history.prune(view.services)  # a deleted service's history goes with it
        seen = Seen(running_at=dict(self.running_at), since=self.since, nodes_checked=dict(self.nodes_checked))
        plan = reconcile(view, self.history, now, stop_timeout=self.stop_timeout, seen=seen)
        pending = {g.note.node_id for g in plan.groups if isinstance(g.note, NodeChecked)}
        self.nodes_checked = {nid: (self.nodes_checked.get(nid, -1) if nid in pending else version_of(node))
                              for nid, node in view.nodes.items()}
        self.quiet_until = None if plan else (math.inf if plan.wake_at is None else plan.wake_at)
        return plan

    def committed(self, group: Group) -> None:
        if isinstance(group.note, RestartNote):
            self.history.record(group.note)
            self.metrics.inc("restarts", help="replacement tasks created by the restart supervisor")
        elif isinstance(group.note, NodeChecked):
            self.nodes_checked[group.note.node_id] = group.note.version
            self.metrics.inc("enforcer_rejections", len(group.ops),
                             help="tasks rejected by the constraint enforcer")

    def extra_status(self) -> dict[str, Any]:
        return {"restart_history_slots": len(self.history.slots), "update_tasks_seen_running": len(self.running_at),
                "passes_skipped": self.skipped}
