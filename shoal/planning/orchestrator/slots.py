"""Slots of a replicated service, pure (SwarmKit `replicated/services.go`, `slot.go`, `restart.UpdatableTasksInSlot`).

Slots are implicit: the tasks sharing a `slot` number. A slot is *occupied* if some task in it is runnable
(desired ≤ RUNNING), or if its newest task stopped and the restart policy says not to replace it (so a
`restart: none` service is not "healed" by scale-up). Otherwise it is *dead* and its number is free for reuse.
Reconcile counts occupied slots, not tasks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.planning.orchestrator.restart import RestartHistory, created_at, restart_decision, status_time


@dataclass
class Slot:
    number: int
    tasks: list[Obj]
    #: the tasks that make the slot occupied (SwarmKit's "updatable" tasks); empty for a dead slot
    live: list[Obj]

    @property
    def occupied(self) -> bool:
        return bool(self.live)

    @property
    def running(self) -> bool:
        return any(state_of(x) == TaskState.RUNNING for x in self.live)


def newest(tasks: Iterable[Obj]) -> Obj:
    return max(tasks, key=lambda x: (created_at(x), status_time(x), x["id"]))


def classify(number: int, tasks: list[Obj], history: RestartHistory, now: float) -> tuple[Slot, float | None]:
    """The slot and, for a slot kept only because of `max_attempts` within `window`, when that may change."""
    live = [x for x in tasks if desired_of(x) <= TaskState.RUNNING]
    if live:
        return Slot(number, tasks, live), None
    last = newest(tasks)
    if desired_of(last) >= TaskState.REMOVE:
        # Being removed (scale-down, dead slot): never counts, whatever its policy says.
        return Slot(number, tasks, []), None
    allowed, retry_at = restart_decision(last, history, now, (last["service_id"], number))
    if not allowed:
        return Slot(number, tasks, [last]), retry_at
    return Slot(number, tasks, []), None


def group_slots(tasks: Iterable[Obj]) -> dict[int, list[Obj]]:
    slots: dict[int, list[Obj]] = {}
    for x in tasks:
        slots.setdefault(int(x.get("slot") or 0), []).append(x)
    return slots


def free_numbers(occupied: Iterable[int], count: int) -> list[int]:
    """The `count` lowest slot numbers ≥ 1 that are not occupied (dead slots are reused, keeping history)."""
    taken = set(occupied)
    out: list[int] = []
    n = 0
    while len(out) < count:
        n += 1
        if n not in taken:
            out.append(n)
    return out


def removal_order(slots: list[Slot]) -> list[Slot]:
    """Occupied slots, those to keep first: scale-down removes from the end of this list.

    SwarmKit: order running slots before non-running ones, then by slot number; number each slot as the nth
    copy of the service on its node; sort by that index, so nodes with the most copies lose tasks first and,
    on a tie, non-running tasks and higher slot numbers go first. Slots not bound to exactly one node (several
    live tasks, or not yet scheduled) go before everything else."""
    by_state = sorted(slots, key=lambda s: (not s.running, s.number))
    copies: dict[str, int] = {}
    indexed: list[tuple[float, int, Slot]] = []
    for pos, s in enumerate(by_state):
        node = s.live[0].get("node_id") if len(s.live) == 1 else None
        if node:
            copies[node] = copies.get(node, 0) + 1
            indexed.append((copies[node], pos, s))
        else:
            indexed.append((float("inf"), pos, s))
    indexed.sort(key=lambda x: (x[0], x[1]))
    return [s for _, _, s in indexed]
