"""Which nodes a global service (or global job) runs on (SwarmKit `orchestrator/global/global.go`).

A node *takes* new tasks of the service — and updated ones — when it is READY, its availability is ACTIVE, it
satisfies the service's placement constraints and it has an executor for the task's runtime. It *keeps* the
tasks it has while it exists, is not DOWN, is not drained and still satisfies the constraints: a paused node
(or one whose state is unknown) keeps its tasks but gets no new or updated ones; a drained, down or deleted
node, or one that stopped matching, has its tasks shut down (not moved: the task belongs to that node)."""

from __future__ import annotations

from shoal.models.objects import Obj, service_runtime, status_state
from shoal.models.states import NodeState
from shoal.placement import constraints_of, node_matches, supports_runtime


def fits(service: Obj, node: Obj) -> bool:
    """The node satisfies the service's *current* constraints and supports its runtime."""
    return node_matches(constraints_of(service["spec"]["task"]), node) and \
        supports_runtime(node, service_runtime(service))


def _state(node: Obj) -> str:
    return status_state(node) or NodeState.UNKNOWN.value


def _availability(node: Obj) -> str:
    return str((node.get("spec") or {}).get("availability") or "active")


def takes_new(service: Obj, node: Obj | None) -> bool:
    return node is not None and _state(node) == "ready" and _availability(node) == "active" and fits(service, node)


def keeps(service: Obj, node: Obj | None) -> bool:
    return node is not None and _state(node) != "down" and _availability(node) != "drain" and fits(service, node)
