"""The orchestrator's pure core: services → tasks. `reconcile(view, history, now)` returns a Plan.

One pass, level-triggered (so the first pass after an activation is SwarmKit's `CheckTasks` init pass: tasks of
deleted services, tasks on invalid nodes, desired=READY tasks to re-arm — all fixed from the stored state):
1. tasks of deleted services → desired REMOVE;
2. restart supervisor: runnable tasks that died or sit on an invalid node → desired SHUTDOWN plus, if the
   restart policy allows, a replacement in the same slot with desired READY (one atomic group);
3. READY replacements → desired RUNNING once the delay has passed and the old task stopped (`restart.release`);
4. replicated services: scale the occupied slots to `replicas` (SwarmKit handles tasks before services in each
   tick, and so do we: phase 4 sees phase 2's replacements);
5. task reaper.
Every phase works on a `Draft` of the view, so later phases see earlier decisions; a task is changed at most
once per pass (the next pass, over the view including this pass's writes, continues). No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.orchestrator import reaper, restart
from services.orchestrator.restart import RestartHistory, RestartNote, RestartPolicy
from services.orchestrator.slots import Slot, classify, free_numbers, group_slots, removal_order
from shoal.cluster import task_history_limit
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, new_task, state_of
from shoal.models.specs import mode_kind
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.store import txn as t
from shoal.store.txn import Op


@dataclass(frozen=True)
class View:
    """What the orchestrator reads (its mirror's tables, by id)."""

    services: Mapping[str, Obj]
    tasks: Mapping[str, Obj]
    nodes: Mapping[str, Obj]
    cluster: Obj | None = None


def service_mode(service: Obj) -> str:
    """`replicated`, `global`, `replicated_job` or `global_job` (the kernel's reading of a stored spec)."""
    return mode_kind(service.get("spec") or {})


def managed(service: Obj | None) -> bool:
    """Services this orchestrator converges: replicated ones. Global and job modes plug in beside
    `scale_replicated` (their restart rules differ: jobs restart ANY like ON_FAILURE and release to COMPLETE);
    until then their tasks are left alone, except that deleting the service still removes them."""
    return service is not None and service_mode(service) == "replicated"


def replicas(service: Obj) -> int:
    return int(((service["spec"].get("mode") or {}).get("replicated") or {}).get("replicas", 1))


class Draft:
    """The view as the plan built so far will leave it."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.tasks: dict[str, Obj] = dict(view.tasks)
        self.touched: set[str] = set()
        self.plan = Plan()

    def raise_desired(self, task: Obj, state: TaskState) -> Op | None:
        """An op raising `task`'s desired state (never lowering it: desired state only increases)."""
        if task["id"] in self.touched or desired_of(task) >= state:
            return None
        new = {**task, "desired_state": str(state)}
        self.tasks[task["id"]] = new
        self.touched.add(task["id"])
        return t.update(Kind.TASK, new, expect_version=task["meta"]["version"])

    def create(self, task: Obj) -> Op:
        self.tasks[task["id"]] = task
        self.touched.add(task["id"])
        return t.create(Kind.TASK, task)

    def delete(self, task: Obj) -> Op | None:
        if task["id"] in self.touched:
            return None
        self.touched.add(task["id"])
        del self.tasks[task["id"]]
        return t.delete(Kind.TASK, task["id"], expect_version=task["meta"]["version"])

    def by_service(self) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for task in self.tasks.values():
            out.setdefault(task["service_id"], []).append(task)
        return out


def reconcile(view: View, history: RestartHistory, now: float, *,
              stop_timeout: float = restart.STOP_TIMEOUT) -> Plan:
    d = Draft(view)
    remove_orphans(d)
    restart_tasks(d, history, now)
    release_ready(d, now, stop_timeout)
    by_service = d.by_service()
    for service in view.services.values():
        if managed(service):
            scale_replicated(d, service, by_service.get(service["id"], []), history, now)
        # Global mode (one task per eligible node, pre-bound to it) and job modes plug in here.
    reap_tasks(d)
    return d.plan


def remove_orphans(d: Draft) -> None:
    """Tasks of a deleted service → desired REMOVE (SwarmKit's `SetServiceTasksRemove`)."""
    for task in list(d.tasks.values()):
        if task["service_id"] not in d.view.services:
            op = d.raise_desired(task, TaskState.REMOVE)
            if op:
                d.plan.add([op])


def _slot_index(d: Draft) -> dict[tuple[str, object], list[Obj]]:
    index: dict[tuple[str, object], list[Obj]] = {}
    for task in d.tasks.values():
        index.setdefault(restart.slot_key(task), []).append(task)
    return index


def restart_tasks(d: Draft, history: RestartHistory, now: float) -> None:
    nodes = d.view.nodes
    index = _slot_index(d)
    done: set[tuple[str, object]] = set()  # one restart per slot per pass; the next pass sees the history
    for task in sorted(d.tasks.values(), key=lambda x: x["id"]):
        service = d.view.services.get(task["service_id"])
        if service is None or not managed(service) or task["id"] in d.touched \
                or not restart.needs_restart(task, nodes):
            continue
        key = restart.slot_key(task)
        if key in done:
            continue
        mates = index.get(key, [])
        if desired_of(task) == TaskState.READY:
            # A restart requested during an active delay waits for that delay: no tight restart loops.
            end = restart.delay_end(task, mates, nodes, now)
            if now < end:
                d.plan.wake(end)
                continue
        done.add(key)
        ops, note = _restart(d, task, service, history, now)
        d.plan.add(ops, note)


def _restart(d: Draft, task: Obj, service: Obj, history: RestartHistory,
             now: float) -> tuple[list[Op], RestartNote | None]:
    """SwarmKit's `Restart`: old task → SHUTDOWN; a replacement (desired READY) if the policy allows."""
    op = d.raise_desired(task, TaskState.SHUTDOWN)
    if op is None:
        return [], None
    allowed, retry_at = restart.restart_decision(task, history, now)
    if not allowed:
        d.plan.wake(retry_at)
        return [op], None
    global_ = service_mode(service) == "global"  # ready for global mode: same node, slot 0
    repl = new_task(service, 0 if global_ else int(task.get("slot") or 0), now, desired=TaskState.READY,
                    node_id=task.get("node_id") if global_ else None)
    note = None
    policy = RestartPolicy.of(repl)
    if policy.max_attempts > 0:
        note = RestartNote(restart.slot_key(repl), int(repl["spec_version"]), now, policy.max_attempts)
    if policy.delay > 0:
        d.plan.wake(now + policy.delay)
    return [op, d.create(repl)], note


def release_ready(d: Draft, now: float, stop_timeout: float) -> None:
    nodes = d.view.nodes
    index = _slot_index(d)
    for task in list(d.tasks.values()):
        if desired_of(task) != TaskState.READY or state_of(task) > TaskState.RUNNING \
                or not managed(d.view.services.get(task["service_id"])):
            continue
        go, wake = restart.release(task, index.get(restart.slot_key(task), []), nodes, now, stop_timeout)
        d.plan.wake(wake)
        if go:
            op = d.raise_desired(task, TaskState.RUNNING)
            if op:
                d.plan.add([op])


def scale_replicated(d: Draft, service: Obj, tasks: list[Obj], history: RestartHistory, now: float) -> None:
    slots: list[Slot] = []
    dead: list[Slot] = []
    for number, group in sorted(group_slots(tasks).items()):
        slot, retry_at = classify(number, group, history, now)
        d.plan.wake(retry_at)
        (slots if slot.occupied else dead).append(slot)
    want = replicas(service)
    if len(slots) < want:
        numbers = free_numbers((s.number for s in slots), want - len(slots))
        for n in numbers:  # independent creates: separate groups, so big services split into bounded txns
            d.plan.add([d.create(new_task(service, n, now))])
        reused = set(numbers)
        dead = [s for s in dead if s.number not in reused]
    elif len(slots) > want:
        for s in removal_order(slots)[want:]:
            d.plan.add([op for x in s.tasks if (op := d.raise_desired(x, TaskState.REMOVE))])
    # Dead slots that were not reused: SwarmKit deletes their tasks outright; we raise them to REMOVE and let
    # the reaper delete them once stopped, keeping removal two-phase.
    for s in dead:
        d.plan.add([op for x in s.tasks if (op := d.raise_desired(x, TaskState.REMOVE))])


def reap_tasks(d: Draft) -> None:
    limit = task_history_limit(d.view.cluster)
    untouched = [x for x in d.tasks.values() if x["id"] not in d.touched]
    for task in reaper.reap(untouched, d.view.services, d.view.nodes, limit):
        op = d.delete(task)
        if op:
            d.plan.add([op])
