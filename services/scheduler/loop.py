"""The scheduler's I/O shell: while holding the `scheduler` lease, place PENDING tasks in debounced, batched,
fenced passes. A task that fits nowhere stays PENDING with its reason in `status.err` and is tried again on
every pass that has pending work.

In memory: the debouncer, a `FailureLog` of recent task failures per (node, service, spec version), seeded
from the store's tasks on activation, so a failure still demotes its node after the reaper deleted the task,
and a `Ledger` of what the tasks on each node take and which tasks are PENDING, fed the tasks that changed since
the last pass (rebuilt from every task on a full pass): a pass costs O(changed + pending + nodes), not O(all
tasks), and a pass with nothing PENDING does no placement work at all."""

from __future__ import annotations

from typing import Any, ClassVar

from services.scheduler.settings import SchedulerSettings
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.heap import gc_paused
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import Kind
from shoal.plan import Plan
from shoal.planning.scheduler import core
from shoal.planning.scheduler.ledger import Ledger
from shoal.planning.scheduler.nodeinfo import FailureLog
from shoal.store.mirror import Changed, StoreMirror
from shoal.store.protocol import Store


class Scheduler(PlanLoop):
    name: ClassVar[str] = "scheduler"
    kinds: ClassVar[tuple[str, ...]] = (Kind.TASK, Kind.NODE)

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: SchedulerSettings) -> None:
        super().__init__(store, bus, clock, settings)
        self.debounce = core.Debouncer(settings.debounce_gap, settings.max_latency)
        self.seen: set[str] = set()
        self.failures = FailureLog()
        self.ledger = Ledger()
        self.unschedulable = 0
        self.metrics.gauge("unschedulable_tasks", lambda: float(self.unschedulable),
                           "PENDING tasks that fit on no node at the last pass")

    def activate(self, mirror: StoreMirror, now: float) -> None:
        self.debounce = core.Debouncer(self.debounce.gap, self.debounce.max_latency)
        self.seen = set()
        self.failures = FailureLog()
        self.ledger = Ledger()

    def plan(self, mirror: StoreMirror, now: float, changes: Changed | None = None) -> Plan:
        table = mirror.objects[Kind.TASK]
        if changes is None:
            self.ledger.rebuild(table.values())
            failures = self.failures.observe(table.values(), now)
        else:
            changed = []
            for tid in changes.get(Kind.TASK, ()):
                task = table.get(tid)
                self.ledger.update(tid, task)
                if task is not None:
                    changed.append(task)
            failures = self.failures.observe(changed, now)
        pending = self.ledger.pending
        if any(tid not in self.seen for tid in pending):
            self.debounce.note(now)
        self.seen = set(pending)
        if self.debounce.waiting and not self.debounce.due(now):
            return Plan(wake_at=self.debounce.deadline())
        self.debounce.reset(now)
        if not pending and not self.ledger.doomed:
            self.unschedulable = 0
            return Plan()
        nodes = mirror.objects[Kind.NODE].values()
        with gc_paused():
            out, decisions = core.plan_pending(list(pending.values()), list(self.ledger.doomed.values()), nodes,
                                               now, infos=self.ledger.infos(nodes, failures))
        self.unschedulable = sum(1 for d in decisions if d.node_id is None)
        placed = len(decisions) - self.unschedulable
        if placed:
            self.metrics.inc("placements_planned", placed, help="assignments planned (written unless refused)")
        return out

    def extra_status(self) -> dict[str, Any]:
        return {"pending": len(self.seen), "unschedulable": self.unschedulable}
