"""The restart supervisor's two phases over a `Draft` (rules in `restart.py`).

`restart_tasks`: every task meant to run that died (observed > RUNNING; for jobs: anything but COMPLETE) or
sits on an invalid node (deleted, DOWN, drained) → desired SHUTDOWN and, if the restart policy allows, a
replacement in the same slot with desired READY, in one atomic group — per slot: all of a slot's dead tasks go
in one group with at most one replacement. Global modes replace on the same node, and
only if that node still takes new tasks (`eligibility.takes_new`): a task on a drained, down, paused or no
longer matching node is shut down without a replacement, and the global reconciler creates one when the node
is eligible again. Jobs never restart a task that completed (condition `any` acts like `on-failure`). A dead
task whose slot still has another healthy runnable task (the start-first window of an update) is shut down
without a replacement: the other task carries the slot (SwarmKit replaces it anyway and the slot keeps two
tasks until the next update).

`release_ready`: a READY replacement is started (desired RUNNING, COMPLETE for job tasks) once its delay has
passed and the task it replaces stopped (`restart.release`)."""

from __future__ import annotations

from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.planning.orchestrator import eligibility, jobs, restart
from shoal.planning.orchestrator.draft import Draft
from shoal.planning.orchestrator.modes import RESTART, SlotKey, by_node, is_job, make_task, slot_key
from shoal.planning.orchestrator.restart import RestartHistory, RestartNote, RestartPolicy
from shoal.store.txn import Op


def restart_tasks(d: Draft, history: RestartHistory, now: float) -> None:
    """Restart whole slots: every dead task of a slot is shut down in one group with (at most) one
    replacement, so a slot never grows two replacement chains."""
    nodes = d.view.nodes
    for key, mates in sorted(d.by_slot().items(), key=lambda kv: str(kv[0])):
        service = d.view.services.get(key[0])
        if service is None:
            continue
        job = is_job(service)
        dead = [x for x in mates if restart.needs_restart(x, nodes, job)]
        if not dead or any(x["id"] in d.touched or _waiting(d, x, mates, now) for x in dead):
            continue  # all of the slot's dead tasks go together (a task changed this pass: next pass)
        # Another task of the slot still runs (the start-first window of an update): it carries the slot,
        # so the dead ones are shut down without a replacement.
        covered = any(o not in dead and restart.live(o, job) and not restart.needs_restart(o, nodes, job)
                      for o in mates)
        trigger = max(dead, key=lambda x: (restart.created_at(x), x["id"]))
        ops, note = _restart(d, dead, trigger, service, key, history, now, replace=not covered)
        d.plan.add(ops, note)


def _waiting(d: Draft, task: Obj, mates: list[Obj], now: float) -> bool:
    """A restart requested during a replacement's active delay waits for that delay: no tight restart loops."""
    if desired_of(task) != TaskState.READY:
        return False
    end = restart.delay_end(task, mates, d.view.nodes, now)
    d.plan.wake(end if now < end else None)
    return now < end


def _restart(d: Draft, dead: list[Obj], task: Obj, service: Obj, key: SlotKey, history: RestartHistory,
             now: float, *, replace: bool = True) -> tuple[list[Op], RestartNote | None]:
    """SwarmKit's `Restart` of `task` (the newest dead task of the slot): the dead tasks → SHUTDOWN; a
    replacement (desired READY) if the policy allows."""
    ops = [op for x in dead if (op := d.raise_desired(x, TaskState.SHUTDOWN))]
    if not ops or not replace:
        return ops, None
    node_id = task.get("node_id") if by_node(service) else None
    if by_node(service) and not eligibility.takes_new(service, d.view.nodes.get(node_id or "")):
        return ops, None  # the node no longer takes this service's tasks: shut down, do not move
    allowed, retry_at = restart.restart_decision(task, history, now, key)
    if not allowed:
        d.plan.wake(retry_at)
        return ops, None
    repl = make_task(service, 0 if node_id else int(task.get("slot") or 0), now, desired=TaskState.READY,
                     node_id=node_id, created_by=RESTART, ids=d.view.ids)
    policy = RestartPolicy.of(repl)
    note = RestartNote(key, int(repl["spec_version"]), now, policy.max_attempts) if policy.max_attempts > 0 else None
    if policy.delay > 0:
        d.plan.wake(now + policy.delay)
    return [*ops, d.create(repl)], note


def release_ready(d: Draft, now: float, stop_timeout: float) -> None:
    nodes = d.view.nodes
    index = d.by_slot()
    for task in list(d.tasks.values()):
        service = d.view.services.get(task["service_id"])
        if service is None or desired_of(task) != TaskState.READY or state_of(task) > TaskState.RUNNING:
            continue
        go, wake = restart.release(task, index.get(slot_key(task, service), []), nodes, now, stop_timeout)
        d.plan.wake(wake)
        if go:
            op = d.raise_desired(task, jobs.start_state(task) if is_job(service) else TaskState.RUNNING)
            if op:
                d.plan.add([op])
