"""Service modes as the orchestrator reads them, and the tasks it creates for each.

Replicated services and replicated jobs group tasks by `slot` (1.. for services, 0.. for jobs); global services
and global jobs by node (slot 0, `node_id` set at creation). Every task the orchestrator creates is SwarmKit's
`NewTask` plus three fields of ours:
- `created_by`: "update" for the update supervisor's tasks (failure detection counts only those), "restart"
  for the restart supervisor's replacements; absent for tasks created by scaling;
- `endpoint_spec`: the service's endpoint spec when the task was made (the dirty check compares it, like
  SwarmKit's `task.Endpoint.Spec`);
- `job_iteration`: for job tasks, the service's `job_status.job_iteration`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.models.objects import Obj, job_iteration, new_task
from shoal.models.specs import JOB_MODES, mode_kind
from shoal.models.states import TaskState

SlotKey = tuple[str, Any]  # (service id, slot number) or, for global modes, (service id, node id)

UPDATE = "update"
RESTART = "restart"


def mode(service: Obj) -> str:
    """`replicated`, `global`, `replicated_job` or `global_job`."""
    return mode_kind(service.get("spec") or {})


def is_job(service: Obj) -> bool:
    return mode(service) in JOB_MODES


def by_node(service: Obj) -> bool:
    """Global modes: one task per node, keyed by node."""
    return mode(service) in ("global", "global_job")


def replicas(service: Obj) -> int:
    return int(((service["spec"].get("mode") or {}).get("replicated") or {}).get("replicas", 1))


def slot_key(task: Obj, service: Obj | None) -> SlotKey:
    """The slot a task belongs to (SwarmKit's SlotTuple): its node for global modes, else its slot number."""
    if service is not None and by_node(service):
        return (task["service_id"], task.get("node_id"))
    return (task["service_id"], int(task.get("slot") or 0))


def make_task(service: Obj, slot: int, now: float, *, desired: TaskState = TaskState.RUNNING,
              node_id: str | None = None, created_by: str | None = None, ids: Callable[[], str] | None = None) -> Obj:
    """A NEW task of `service` for `slot` (or `node_id`), at the service's current spec; `ids` makes its id
    (the pass's `View.ids`)."""
    task = new_task(service, slot, now, desired=desired, node_id=node_id, ids=ids)
    task["endpoint_spec"] = (service.get("spec") or {}).get("endpoint")
    if created_by:
        task["created_by"] = created_by
    if is_job(service):
        task["job_iteration"] = job_iteration(service)
    return task
