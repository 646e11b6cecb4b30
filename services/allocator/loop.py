"""The allocator's I/O shell: while holding the `allocator` lease, move NEW tasks to PENDING in one bounded,
fenced transaction per pass."""

from __future__ import annotations

from typing import ClassVar

from services.allocator import core
from services.allocator.settings import AllocatorSettings
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import Kind
from shoal.plan import Group, Plan
from shoal.store.mirror import StoreMirror
from shoal.store.protocol import Store


class Allocator(PlanLoop):
    name: ClassVar[str] = "allocator"
    kinds: ClassVar[tuple[str, ...]] = (Kind.TASK,)

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: AllocatorSettings) -> None:
        super().__init__(store, bus, clock, settings)

    def plan(self, mirror: StoreMirror, now: float) -> Plan:
        tasks = mirror.objects[Kind.TASK].values()
        state = core.AllocatorState.build(tasks)
        return core.plan(tasks, state, now, limit=max(1, self.settings.max_txn_ops - 1))

    def committed(self, group: Group) -> None:
        self.metrics.inc("allocated", len(group.ops), help="tasks moved NEW -> PENDING (or deferred)")
