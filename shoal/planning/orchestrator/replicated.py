"""Replicated services: scale the occupied slots to `replicas`, pure (SwarmKit `replicated/services.go`).

Scale-up fills the lowest free slot numbers (dead slots are reused, keeping their history); scale-down sets
desired REMOVE on whole slots in `slots.removal_order`. Dead slots that are not reused: SwarmKit deletes their
tasks outright; we raise them to REMOVE and let the reaper delete them once stopped (removal stays two-phase).
Returns the kept slots for the update supervisor (SwarmKit calls `updater.Update` with them)."""

from __future__ import annotations

from shoal.models.objects import Obj
from shoal.models.states import TaskState
from shoal.planning.orchestrator.draft import Draft
from shoal.planning.orchestrator.modes import SlotKey, make_task, replicas
from shoal.planning.orchestrator.restart import RestartHistory
from shoal.planning.orchestrator.slots import Slot, classify, free_numbers, group_slots, removal_order


def scale(d: Draft, service: Obj, tasks: list[Obj], history: RestartHistory,
          now: float) -> list[tuple[SlotKey, list[Obj]]]:
    slots: list[Slot] = []
    dead: list[Slot] = []
    for number, group in sorted(group_slots(tasks).items()):
        slot, retry_at = classify(number, group, history, now)
        d.plan.wake(retry_at)
        (slots if slot.occupied else dead).append(slot)
    want = replicas(service)
    kept = slots
    if len(slots) < want:
        numbers = free_numbers((s.number for s in slots), want - len(slots))
        for n in numbers:  # independent creates: separate groups, so big services split into bounded txns
            d.plan.add([d.create(make_task(service, n, now, ids=d.view.ids))])
        reused = set(numbers)
        dead = [s for s in dead if s.number not in reused]
    elif len(slots) > want:
        order = removal_order(slots)
        kept = order[:want]
        for s in order[want:]:
            d.plan.add([op for x in s.tasks if (op := d.raise_desired(x, TaskState.REMOVE))])
    for s in dead:
        d.plan.add([op for x in s.tasks if (op := d.raise_desired(x, TaskState.REMOVE))])
    return [((service["id"], s.number), s.live) for s in sorted(kept, key=lambda s: s.number)]
