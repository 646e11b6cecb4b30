"""The orchestrator's I/O shell: while holding the `orchestrator` lease, reconcile the mirror and write plans.

The restart history (for `max_attempts`/`window`) is the only in-memory state: it is rebuilt from the stored
tasks on every activation and updated only after a restart's transaction has committed."""

from __future__ import annotations

from typing import Any, ClassVar

from services.orchestrator.core import View, reconcile
from services.orchestrator.restart import RestartHistory, RestartNote
from services.orchestrator.settings import OrchestratorSettings
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.plan import Group, Plan
from shoal.store.mirror import StoreMirror
from shoal.store.protocol import Store


class Orchestrator(PlanLoop):
    name: ClassVar[str] = "orchestrator"
    kinds: ClassVar[tuple[str, ...]] = (Kind.SERVICE, Kind.TASK, Kind.NODE, Kind.CLUSTER)

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: OrchestratorSettings) -> None:
        super().__init__(store, bus, clock, settings)
        self.stop_timeout = settings.restart_stop_timeout
        self.history = RestartHistory()

    @staticmethod
    def view(mirror: StoreMirror) -> View:
        return View(services=mirror.objects[Kind.SERVICE], tasks=mirror.objects[Kind.TASK],
                    nodes=mirror.objects[Kind.NODE], cluster=mirror.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID))

    def activate(self, mirror: StoreMirror, now: float) -> None:
        view = self.view(mirror)
        self.history = RestartHistory.rebuild(view.services, view.tasks.values())

    def plan(self, mirror: StoreMirror, now: float) -> Plan:
        view = self.view(mirror)
        self.history.prune(view.services)  # a deleted service's history goes with it
        return reconcile(view, self.history, now, stop_timeout=self.stop_timeout)

    def committed(self, group: Group) -> None:
        if isinstance(group.note, RestartNote):
            self.history.record(group.note)
            self.metrics.inc("restarts", help="replacement tasks created by the restart supervisor")

    def extra_status(self) -> dict[str, Any]:
        return {"restart_history_slots": len(self.history.slots)}
