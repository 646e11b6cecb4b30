"""Job modes, pure (SwarmKit `orchestrator/jobs/{replicated,global}/reconciler.go`).

A job runs tasks to completion. Only tasks of the service's current `job_status.job_iteration` count: every
spec change starts a new iteration (the gateway bumps it), the still-running tasks of older iterations get
desired REMOVE and the job runs again. Completed tasks are never restarted; failed ones go through the restart
supervisor (condition `any` acts like `on-failure`) and their replacements are released to COMPLETE.
- replicated_job: slots are numbered 0 .. total_completions-1. A slot is done when one of its tasks
  completed, busy while one is meant to run (desired ≤ COMPLETE and not finished), and blocked when its newest
  task failed and the restart policy forbids another (condition none, max_attempts). Each pass creates
  min(max_concurrent - busy, total_completions - done - busy) tasks in the lowest free slots.
- global_job: one task per node that takes new tasks of the service (`eligibility.takes_new`) and has no
  done, busy or blocked task of this iteration; tasks on nodes that leave are shut down like a global
  service's.
The task history of a job is its record: the reaper does not trim it."""

from __future__ import annotations

from collections.abc import Iterable

from shoal.models.objects import Obj, desired_of, job_iteration, state_of, task_iteration
from shoal.models.states import TaskState
from shoal.planning.orchestrator import eligibility, restart
from shoal.planning.orchestrator.draft import Draft
from shoal.planning.orchestrator.modes import is_job, make_task, slot_key
from shoal.planning.orchestrator.restart import RestartHistory, created_at, status_time

#: Job tasks are created with desired COMPLETE, as SwarmKit does (the allocator and scheduler take desired
#: COMPLETE like RUNNING; the agent runs both alike: RUNNING until the process exits, then COMPLETE or FAILED).
#: `promote` still raises job tasks that carry desired RUNNING (written by an older orchestrator) to COMPLETE.
COMPLETE_BEFORE_ASSIGNMENT = True
#: at most this many new job tasks per service and pass (counts are uint64-sized; the next pass continues)
MAX_NEW_PER_PASS = 1000


def create_state() -> TaskState:
    """The desired state of a new job task."""
    return TaskState.COMPLETE if COMPLETE_BEFORE_ASSIGNMENT else TaskState.RUNNING


def start_state(task: Obj) -> TaskState:
    """The desired state a job task is started with (released from READY, or promoted once assigned)."""
    if COMPLETE_BEFORE_ASSIGNMENT or state_of(task) >= TaskState.ASSIGNED:
        return TaskState.COMPLETE
    return TaskState.RUNNING


def _spec(service: Obj) -> dict[str, int]:
    job = (service["spec"].get("mode") or {}).get("replicated_job") or {}
    concurrent = int(job.get("max_concurrent", 1) or 1)
    total = job.get("total_completions")
    return {"max_concurrent": concurrent, "total": concurrent if total is None else int(total)}


# ---- phases shared by both job modes -------------------------------------------------------------------------
def retire_old_iterations(d: Draft) -> None:
    """Tasks of an older iteration still meant to run → desired REMOVE (so they are neither run on nor
    restarted; finished ones stay as history)."""
    for task in sorted(d.tasks.values(), key=lambda x: x["id"]):
        service = d.view.services.get(task["service_id"])
        if service is None or not is_job(service):
            continue
        if task_iteration(task) != job_iteration(service) and restart.live(task, job=True):
            op = d.raise_desired(task, TaskState.REMOVE)
            if op:
                d.plan.add([op])


def promote(d: Draft) -> None:
    """Raise job tasks created with desired RUNNING to COMPLETE once assigned (see COMPLETE_BEFORE_ASSIGNMENT)."""
    for task in sorted(d.tasks.values(), key=lambda x: x["id"]):
        service = d.view.services.get(task["service_id"])
        if service is None or not is_job(service) or desired_of(task) != TaskState.RUNNING:
            continue
        if TaskState.ASSIGNED <= state_of(task) <= TaskState.RUNNING:
            op = d.raise_desired(task, TaskState.COMPLETE)
            if op:
                d.plan.add([op])


# ---- per slot (or node) --------------------------------------------------------------------------------------
def _newest(tasks: Iterable[Obj]) -> Obj:
    return max(tasks, key=lambda x: (created_at(x), status_time(x), x["id"]))


def taken(group: list[Obj], service: Obj, history: RestartHistory, d: Draft, now: float) -> str | None:
    """Why a slot (or node) of the current iteration needs no new task: "done", "busy", "blocked", or None."""
    if not group:
        return None
    if any(state_of(x) == TaskState.COMPLETE for x in group):
        return "done"
    if any(restart.live(x, job=True) for x in group):
        return "busy"
    last = _newest(group)
    if desired_of(last) >= TaskState.REMOVE:
        return None
    allowed, retry_at = restart.restart_decision(last, history, now, slot_key(last, service))
    if allowed:
        return None
    d.plan.wake(retry_at)
    return "blocked"


def reconcile_replicated(d: Draft, service: Obj, tasks: list[Obj], history: RestartHistory, now: float) -> None:
    spec = _spec(service)
    it = job_iteration(service)
    slots: dict[int, list[Obj]] = {}
    for x in tasks:
        if task_iteration(x) == it:
            slots.setdefault(int(x.get("slot") or 0), []).append(x)
    why = {n: taken(group, service, history, d, now) for n, group in slots.items()}
    done = sum(1 for w in why.values() if w == "done")
    busy = sum(1 for w in why.values() if w == "busy")
    want = min(spec["max_concurrent"] - busy, spec["total"] - done - busy, MAX_NEW_PER_PASS)
    n = 0
    while want > 0 and n < spec["total"]:  # the lowest free slots in [0, total_completions)
        if why.get(n) is None:
            d.plan.add([d.create(make_task(service, n, now, desired=create_state(), ids=d.view.ids))])
            want -= 1
        n += 1


def reconcile_global(d: Draft, service: Obj, tasks: list[Obj], history: RestartHistory, now: float) -> None:
    it = job_iteration(service)
    nodes = d.view.nodes
    for x in tasks:
        if restart.live(x, job=True) and x.get("node_id") and not eligibility.keeps(service, nodes.get(x["node_id"])):
            op = d.raise_desired(x, TaskState.SHUTDOWN)
            if op:
                d.plan.add([op])
    per_node: dict[str, list[Obj]] = {}
    for x in tasks:
        if task_iteration(x) == it and x.get("node_id"):
            per_node.setdefault(x["node_id"], []).append(x)
    for nid in sorted(nodes):
        if eligibility.takes_new(service, nodes[nid]) and taken(per_node.get(nid, []), service, history, d,
                                                                  now) is None:
            task = make_task(service, 0, now, desired=create_state(), node_id=nid, ids=d.view.ids)
            d.plan.add([d.create(task)])
