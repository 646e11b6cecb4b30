"""The restart supervisor's two phases over a `Draft` (rules in `restart.py`).

`restart_tasks`: every task meant to run that died (observed > RUNNING; for jobs: anything but COMPLETE) or
sits on an invalid node (deleted, DOWN, drained) → desired SHUTDOWN and, if the restart policy allows, a
replacement in the same slot with desired READY, in one atomic group. Global modes replace on the same node, and
only if that node still takes new tasks (`eligibility.takes_new`): a task on a drained, down, paused or no
longer matching node is shut down without a replacement, and the global reconciler creates one when the node
is eligible again. Jobs never restart a task that completed (condition `any` acts like `on-failure`).

`release_ready`: a READY replacement is started (desired RUNNING, COMPLETE for job tasks) once its delay has
passed and the task it replaces stopped (`restart.release`)."""

from __future__ import annotations

from services.orchestrator import eligibility, jobs, restart
from services.orchestrator.draft import Draft
from services.orchestrator.modes import RESTART, SlotKey, by_node, is_job, make_task, slot_key
from services.orchestrator.restart import RestartHistory, RestartNote, RestartPolicy
from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.store.txn import Op


def restart_tasks(d: Draft, history: RestartHistory, now: float) -> None:
    nodes = d.view.nodes
    index = d.by_slot()
    done: set[SlotKey] = set()  # one restart per slot per pass; the next pass sees the history
    for task in sorted(d.tasks.values(), key=lambda x: x["id"]):
        service = d.view.services.get(task["service_id"])
        if service is None or task["id"] in d.touched or not restart.needs_restart(task, nodes, is_job(service)):
            continue
        key = slot_key(task, service)
        if key in done:
            continue
        if desired_of(task) == TaskState.READY:
            # A restart requested during an active delay waits for that delay: no tight restart loops.
            end = restart.delay_end(task, index.get(key, []), nodes, now)
            if now < end:
                d.plan.wake(end)
                continue
        done.add(key)
        ops, note = _restart(d, task, service, key, history, now)
        d.plan.add(ops, note)


def _restart(d: Draft, task: Obj, service: Obj, key: SlotKey, history: RestartHistory,
             now: float) -> tuple[list[Op], RestartNote | None]:
    """SwarmKit's `Restart`: old task → SHUTDOWN; a replacement (desired READY) if the policy allows."""
    op = d.raise_desired(task, TaskState.SHUTDOWN)
    if op is None:
        return [], None
    node_id = task.get("node_id") if by_node(service) else None
    if by_node(service) and not eligibility.takes_new(service, d.view.nodes.get(node_id or "")):
        return [op], None  # the node no longer takes this service's tasks: shut down, do not move
    allowed, retry_at = restart.restart_decision(task, history, now, key)
    if not allowed:
        d.plan.wake(retry_at)
        return [op], None
    repl = make_task(service, 0 if node_id else int(task.get("slot") or 0), now, desired=TaskState.READY,
                     node_id=node_id, created_by=RESTART)
    policy = RestartPolicy.of(repl)
    note = RestartNote(key, int(repl["spec_version"]), now, policy.max_attempts) if policy.max_attempts > 0 else None
    if policy.delay > 0:
        d.plan.wake(now + policy.delay)
    return [op, d.create(repl)], note


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
