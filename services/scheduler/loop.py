"""The scheduler's I/O shell: while holding the `scheduler` lease, place PENDING tasks in debounced, batched,
fenced passes. A task that fits nowhere stays PENDING with its reason in `status.err` and is tried again on
every change of nodes or tasks (every pass is a full, level-triggered attempt).

In memory: the debouncer and a `FailureLog` of recent task failures per (node, service, spec version), seeded
from the store's tasks on activation, so a failure still demotes its node after the reaper deleted the task."""

from __future__ import annotations

from typing import Any, ClassVar

from services.scheduler.settings import SchedulerSettings
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import Kind
from shoal.plan import Plan
from shoal.planning.scheduler import core
from shoal.planning.scheduler.nodeinfo import FailureLog
from shoal.runner import gc_paused
from shoal.store.mirror import StoreMirror
from shoal.store.protocol import Store


class Scheduler(PlanLoop):
    name: ClassVar[str] = "scheduler"
    kinds: ClassVar[tuple[str, ...]] = (Kind.TASK, Kind.NODE)

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: SchedulerSettings) -> None:
        super().__init__(store, bus, clock, settings)
        self.debounce = core.Debouncer(settings.debounce_gap, settings.max_latency)
        self.seen: set[str] = set()
        self.failures = FailureLog()
        self.unschedulable = 0
        self.metrics.gauge("unschedulable_tasks", lambda: float(self.unschedulable),
                           "PENDING tasks that fit on no node at the last pass")

    def activate(self, mirror: StoreMirror, now: float) -> None:
        self.debounce = core.Debouncer(self.debounce.gap, self.debounce.max_latency)
        self.seen = set()
        self.failures = FailureLog()

    def plan(self, mirror: StoreMirror, now: float) -> Plan:
        tasks = list(mirror.objects[Kind.TASK].values())
        failures = self.failures.observe(tasks, now)
        pending = {x["id"] for x in tasks if core.schedulable(x)}
        if pending - self.seen:
            self.debounce.note(now)
        self.seen = pending
        if self.debounce.waiting and not self.debounce.due(now):
            return Plan(wake_at=self.debounce.deadline())
        self.debounce.reset(now)
        with gc_paused():
            out, decisions = core.plan(tasks, mirror.objects[Kind.NODE].values(), now, failures=failures)
        self.unschedulable = sum(1 for d in decisions if d.node_id is None)
        placed = len(decisions) - self.unschedulable
        if placed:
            self.metrics.inc("placements_planned", placed, help="assignments planned (written unless refused)")
        return out

    def extra_status(self) -> dict[str, Any]:
        return {"pending": len(self.seen), "unschedulable": self.unschedulable}
