"""The task reaper, pure (SwarmKit `manager/orchestrator/taskreaper/task_reaper.go`).

Removal is two-phase: the orchestrator first raises desired state to REMOVE, the agent stops the task, and only
then is it deleted — so IPs, ports and reservations are never freed under a running container. Deletes:
- tasks whose service is gone, once unassigned (< ASSIGNED) or terminal (> RUNNING);
- tasks with desired REMOVE that are < ASSIGNED or ≥ COMPLETE;
- per slot (replicated) or node (global), the oldest terminal or never-run tasks beyond the cluster's
  `task_history_retention_limit` (default 5, < 0 = keep everything), raised to `max_attempts + 1` so the
  restart history can be rebuilt after a leader change.

One addition: a task whose node object was deleted counts as terminal here, since nothing can ever report on
it again (SwarmKit marks such tasks ORPHANED when the node is removed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.specs import JOB_MODES, mode_kind
from shoal.models.states import TaskState
from shoal.planning.orchestrator.modes import slot_key
from shoal.planning.orchestrator.restart import RestartPolicy, created_at, status_time


def finished(task: Obj, nodes: Mapping[str, Obj]) -> bool:
    """Safe to delete: never dispatched, terminal, or on a node that no longer exists."""
    s = state_of(task)
    if s < TaskState.ASSIGNED or s > TaskState.RUNNING:
        return True
    nid = task.get("node_id")
    return bool(nid) and nid not in nodes


def history_deletable(task: Obj) -> bool:
    """SwarmKit's history rule: terminal, or never ran and never will (< ASSIGNED, desired past RUNNING)."""
    s = state_of(task)
    return s > TaskState.RUNNING or (s < TaskState.ASSIGNED and desired_of(task) > TaskState.RUNNING)


def reap_attachments(tasks: Iterable[Obj], nodes: Mapping[str, Obj]) -> list[Obj]:
    """Network attachment tasks to delete now: detached (desired REMOVE) and stopped or never dispatched, or
    on a node that no longer exists (nothing can use or detach them any more). One that failed while still
    attached stays, with its error, until it is detached: nothing restarts it."""
    out = []
    for task in tasks:
        nid = task.get("node_id")
        if (nid and nid not in nodes) or (desired_of(task) == TaskState.REMOVE and finished(task, nodes)):
            out.append(task)
    return out


def retention(limit: int, task: Obj) -> int:
    attempts = RestartPolicy.of(task).max_attempts
    return max(limit, attempts + 1) if attempts > 0 else limit


def reap(tasks: Iterable[Obj], services: Mapping[str, Obj], nodes: Mapping[str, Obj], limit: int) -> list[Obj]:
    """The tasks to delete now, oldest history first."""
    doomed: dict[str, Obj] = {}
    per_slot: dict[tuple[str, object], list[Obj]] = {}
    for task in tasks:
        svc = services.get(task["service_id"])
        if svc is None or desired_of(task) == TaskState.REMOVE:
            if finished(task, nodes):
                doomed[task["id"]] = task
            continue
        if mode_kind(svc.get("spec") or {}) in JOB_MODES:
            continue  # SwarmKit does not trim job history: completed tasks are the job's record
        per_slot.setdefault(slot_key(task, svc), []).append(task)
    if limit >= 0:
        for group in per_slot.values():
            keep = retention(limit, max(group, key=created_at))
            if len(group) <= keep:
                continue
            left = len(group)
            for task in sorted(group, key=lambda x: (created_at(x), status_time(x), x["id"])):
                if left <= keep:
                    break
                if history_deletable(task):
                    doomed[task["id"]] = task
                    left -= 1
    return list(doomed.values())
