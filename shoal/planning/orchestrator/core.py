"""The orchestrator's pure core: services → tasks. `reconcile(view, history, now)` returns a Plan.

One pass, level-triggered (so the first pass after an activation is SwarmKit's `CheckTasks` init pass: tasks of
deleted services, tasks on invalid nodes, desired=READY tasks to re-arm — all fixed from the stored state):
1. tasks of deleted services → desired REMOVE;
2. constraint enforcer: tasks on changed nodes they no longer fit → observed REJECTED (`enforcer`);
3. jobs: tasks of older job iterations → desired REMOVE (`jobs`);
4. restart supervisor: tasks that died or sit on an invalid node → desired SHUTDOWN plus, if the restart
   policy allows, a replacement with desired READY, atomically (`restarter`);
5. READY replacements → started once the delay has passed and the old task stopped (`restarter`); job tasks
   made before assignment → desired COMPLETE (`jobs.promote`);
6. per service, by mode: replicated → scale (`replicated`), global → one task per eligible node
   (`global_mode`), both then the update supervisor over their slots (`updater`); replicated_job and
   global_job → `jobs` (SwarmKit handles tasks before services in each tick, and so do we);
7. task reaper (`reaper`).
Network attachment tasks (no service: SwarmKit's AttachNetwork) are outside all of this — never removed as
orphans, restarted, rescheduled, enforced or trimmed; the reaper only deletes one once it was detached (desired
REMOVE) and has stopped, or when its node was removed (`reaper.reap_attachments`).
Every phase works on a `Draft` of the view, so later phases see earlier decisions; an object is changed at most
once per pass (the next pass, over the view including this pass's writes, continues). No I/O, no clock."""

from __future__ import annotations

from shoal.cluster import task_history_limit
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, is_attachment
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.planning.orchestrator import enforcer, global_mode, jobs, reaper, replicated, restart, restarter, updater
from shoal.planning.orchestrator.draft import Draft, Seen, View
from shoal.planning.orchestrator.modes import mode
from shoal.planning.orchestrator.restart import RestartHistory
from shoal.store import txn as t

__all__ = ["Seen", "View", "reconcile"]


def reconcile(view: View, history: RestartHistory, now: float, *, stop_timeout: float = restart.STOP_TIMEOUT,
              seen: Seen | None = None) -> Plan:
    seen = seen or Seen()
    view, attachments = split_attachments(view)
    d = Draft(view)
    remove_orphans(d)
    enforcer.enforce(d, seen.nodes_checked, now)
    jobs.retire_old_iterations(d)
    restarter.restart_tasks(d, history, now)
    restarter.release_ready(d, now, stop_timeout)
    jobs.promote(d)
    by_service = d.by_service()
    for sid, service in sorted(view.services.items()):
        tasks = by_service.get(sid, [])
        kind = mode(service)
        if kind == "replicated":
            updater.supervise(d, service, replicated.scale(d, service, tasks, history, now), seen, now)
        elif kind == "global":
            updater.supervise(d, service, global_mode.reconcile(d, service, tasks, history, now), seen, now)
        elif kind == "replicated_job":
            jobs.reconcile_replicated(d, service, tasks, history, now)
        else:
            jobs.reconcile_global(d, service, tasks, history, now)
    reap_tasks(d)
    for task in reaper.reap_attachments(attachments, view.nodes):
        d.plan.add([t.delete(Kind.TASK, task["id"], expect_version=task["meta"]["version"])])
    return d.plan


def split_attachments(view: View) -> tuple[View, list[Obj]]:
    """The view without network attachment tasks (no service owns them), and those tasks."""
    attachments = [x for x in view.tasks.values() if is_attachment(x)]
    if not attachments:
        return view, []
    tasks = {tid: x for tid, x in view.tasks.items() if not is_attachment(x)}
    return View(services=view.services, tasks=tasks, nodes=view.nodes, cluster=view.cluster, ids=view.ids), attachments


def remove_orphans(d: Draft) -> None:
    """Tasks of a deleted service → desired REMOVE (SwarmKit's `SetServiceTasksRemove`)."""
    for task in list(d.tasks.values()):
        if task["service_id"] not in d.view.services:
            op = d.raise_desired(task, TaskState.REMOVE)
            if op:
                d.plan.add([op])


def reap_tasks(d: Draft) -> None:
    limit = task_history_limit(d.view.cluster)
    untouched = [x for x in d.tasks.values() if x["id"] not in d.touched]
    for task in reaper.reap(untouched, d.view.services, d.view.nodes, limit):
        op = d.delete(task)
        if op:
            d.plan.add([op])
