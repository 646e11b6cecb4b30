"""The constraint enforcer, pure (SwarmKit `manager/orchestrator/constraintenforcer`).

When a node changes (its labels, role, resources...), a task on it that the node no longer fits is marked
*observed* REJECTED ("assigned node no longer meets constraints"), and the restart supervisor replaces it like
any failed task. This is one of the two documented exceptions to "only the agent writes observed states past
ASSIGNED" (the other is ORPHANED). Rules, per node whose availability is ACTIVE (a drained node loses its
tasks anyway; a paused one keeps them untouched):
- the node must satisfy the *service's current* constraints, not the task's copy (a constraint-only update
  leaves tasks whose node still matched in place, with outdated constraints in their spec);
- the reservations of the tasks on it, oldest first, must fit the node's resources (CPU, memory, generic).
Only nodes that changed since the last check are looked at (`Seen.nodes_checked`; all nodes after an
activation, like SwarmKit's initial pass): a service's new constraints alone are the update supervisor's
business, which replaces such tasks as a rolling update."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.placement import constraints_of, node_matches, node_resources, reservations_of
from shoal.planning.orchestrator.draft import Draft
from shoal.planning.orchestrator.restart import created_at

MESSAGE = "task rejected by constraint enforcer"
ERR = "assigned node no longer meets constraints"


@dataclass(frozen=True)
class NodeChecked:
    """Group note: the node was checked at `version` (recorded once the rejections committed)."""

    node_id: str
    version: int


def version_of(node: Obj) -> int:
    return int((node.get("meta") or {}).get("version") or 0)


def enforce(d: Draft, checked: Mapping[str, int] | None, now: float) -> None:
    on_node: dict[str, list[Obj]] = {}
    for task in d.tasks.values():
        if task.get("node_id") and desired_of(task) <= TaskState.COMPLETE \
                and TaskState.ASSIGNED <= state_of(task) <= TaskState.RUNNING:
            on_node.setdefault(task["node_id"], []).append(task)
    for nid, node in sorted(d.view.nodes.items()):
        if checked is not None and checked.get(nid) == version_of(node):
            continue
        if (node.get("spec") or {}).get("availability", "active") != "active":
            continue
        ops = [op for task in misfits(node, on_node.get(nid, []), d.view.services)
               if (op := d.replace({**task, "status": task_status(TaskState.REJECTED, now, MESSAGE, err=ERR)}))]
        d.plan.add(ops, NodeChecked(nid, version_of(node)))


def misfits(node: Obj, tasks: list[Obj], services: Mapping[str, Obj]) -> list[Obj]:
    """The tasks `node` can no longer hold."""
    cpu, mem, generic = node_resources(node)
    out = []
    for task in sorted(tasks, key=lambda x: (created_at(x), x["id"])):
        service = services.get(task["service_id"])
        if service is not None:
            wanted = constraints_of(service["spec"]["task"])
            if wanted and not node_matches(wanted, node):
                out.append(task)
                continue
        c, m, g = reservations_of(task.get("spec") or {})
        if c > cpu or m > mem or any(n > generic.get(k, 0) for k, n in g.items()):
            out.append(task)
            continue
        cpu, mem = cpu - c, mem - m
        for k, n in g.items():
            generic[k] = generic.get(k, 0) - n
    return out
