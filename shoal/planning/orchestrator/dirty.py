"""Is a task out of date with its service? SwarmKit's `orchestrator.IsTaskDirty`, pure.

Not plain equality:
- same `spec_version` as the service → clean without looking (only part of the spec is compared otherwise);
- a task whose spec differs from the service's task spec *only in placement constraints* is clean while its
  node satisfies the service's new constraints (no redeploy for a constraint the task already meets; the
  constraint enforcer later uses the service's current constraints);
- otherwise dirty if the task spec differs (so bumping `force_update` forces a redeploy) or if the endpoint
  spec the task was made with differs from the service's.
SwarmKit also ignores `PullOptions` for tasks between READY and RUNNING; our container spec has no pull
options, so there is nothing to ignore. A slot is dirty if it has more than one runnable task or its one task
is dirty (`isSlotDirty`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shoal.models.objects import Obj
from shoal.placement import constraints_of, node_matches


def _placement(spec: Mapping[str, Any]) -> dict[str, Any]:
    return dict(spec.get("placement") or {})


def constraints_only_change(service_task: Mapping[str, Any], task_spec: Mapping[str, Any]) -> bool:
    """SwarmKit's `IsTaskDirtyPlacementConstraintsOnly`: the placements differ, and setting the task's
    constraints to the service's makes the specs equal."""
    if _placement(service_task) == _placement(task_spec):
        return False
    placement = {**_placement(task_spec), "constraints": constraints_of(dict(service_task))}
    return {**task_spec, "placement": placement} == dict(service_task)


def task_dirty(service: Obj, task: Obj, node: Obj | None) -> bool:
    version = task.get("spec_version")
    if version is not None and version == service.get("spec_version", 1):
        return False
    want = service["spec"]["task"]
    have = task.get("spec") or {}
    if constraints_only_change(want, have) and node_matches(constraints_of(want), node):
        return False
    endpoint_changed = "endpoint_spec" in task and task["endpoint_spec"] != service["spec"].get("endpoint")
    return want != have or endpoint_changed


def slot_dirty(service: Obj, live: Sequence[Obj], nodes: Mapping[str, Obj]) -> bool:
    if len(live) > 1:
        return True
    return len(live) == 1 and task_dirty(service, live[0], nodes.get(str(live[0].get("node_id") or "")))
