"""The allocator's I/O shell: while holding the `allocator` lease, allocate network subnets, the ingress network,
service endpoints, task addresses and nodes' load-balancer IPs, and move NEW tasks to PENDING, in one bounded,
fenced transaction per pass.

The allocation state is rebuilt on every pass (and so on every activation: after a failover the new holder
starts from exactly what the store says is taken — no double allocation), from the networks, services and nodes
of the mirror and a `TaskIndex` of the tasks that want an allocation or hold addresses, fed the tasks changed
since the last pass (rebuilt from every task on a full pass): a task that needs nothing costs nothing. The
other in-memory state is the set of `Reserved` writes whose outcome the mirror does not show yet (e.g. a write
that timed out and may still commit): their allocations stay taken, and the same ops are planned again, until
the object moves past the version the write expected. It is dropped on activation — an older holder's late
writes fail its lease check."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from services.allocator import core
from services.allocator.index import TaskIndex
from services.allocator.settings import AllocatorSettings
from shoal import netkeys
from shoal.bus.base import Bus
from shoal.clock import Clock
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import Kind
from shoal.models.objects import Obj
from shoal.plan import Group, Plan
from shoal.store.mirror import Changed, StoreMirror
from shoal.store.protocol import Store


class Allocator(PlanLoop):
    name: ClassVar[str] = "allocator"
    kinds: ClassVar[tuple[str, ...]] = (Kind.NETWORK, Kind.SERVICE, Kind.TASK, Kind.NODE, Kind.NETKEYS)

    def __init__(self, store: Store, bus: Bus | None, clock: Clock, settings: AllocatorSettings) -> None:
        super().__init__(store, bus, clock, settings)
        self.inflight: dict[tuple[str, str], core.Reserved] = {}
        self.index = TaskIndex()
        self.deferred = 0
        self.metrics.gauge("inflight_writes", lambda: float(len(self.inflight)),
                           "planned allocations whose write the mirror does not show yet")
        self.metrics.gauge("deferred_tasks", lambda: float(self.deferred),
                           "NEW tasks that could not be allocated at the last pass")

    def activate(self, mirror: StoreMirror, now: float) -> None:
        self.inflight = {}
        self.index = TaskIndex()

    def plan(self, mirror: StoreMirror, now: float, changes: Changed | None = None) -> Plan:
        objects = mirror.objects
        table = objects[Kind.TASK]
        if changes is None:
            self.index.rebuild(table.values())
        else:
            for tid in changes.get(Kind.TASK, ()):
                self.index.update(tid, table.get(tid))

        def current(kind: str, oid: str) -> Obj | None:
            return objects[kind].get(oid)

        self.inflight = core.still_pending(self.inflight, current)
        state = core.AllocatorState.build((), objects[Kind.NETWORK].values(), objects[Kind.SERVICE].values(),
                                          self.inflight.values(), nodes=objects[Kind.NODE].values(),
                                          holds=self.index.holds())
        out = core.plan(self.index.oldest_first(), state, now, limit=max(1, self.settings.max_txn_ops - 1),
                        ordered=True)
        out.extend(core.plan_netkeys(objects[Kind.NETWORK].values(), objects[Kind.NETKEYS].get(netkeys.KEYS_ID),
                                     now, os.urandom))
        for g in out.groups:
            if isinstance(g.note, core.Reserved):
                self.inflight[(g.note.kind, g.note.id)] = g.note
        self.deferred = self.index.deferred()
        return out

    def committed(self, group: Group) -> None:
        note = group.note
        if isinstance(note, core.Reserved):
            self.inflight.pop((note.kind, note.id), None)
            self.metrics.inc(f"allocated_{note.kind}s", help=f"{note.kind} allocations written")

    def extra_status(self) -> dict[str, Any]:
        return {"inflight_writes": len(self.inflight), "deferred_tasks": self.deferred}
