"""Global services: one task per eligible node, pure (SwarmKit `orchestrator/global/global.go`).

For every node: if it no longer keeps the service's tasks (deleted, DOWN, drained, constraints no longer met,
runtime unsupported; `eligibility.keeps`), its runnable tasks get desired SHUTDOWN; if it takes new tasks
(`eligibility.takes_new`) and has no runnable task — and its newest task is not one the restart policy says to
leave stopped — a task is created already bound to it (`node_id` set: the scheduler only validates it). A paused
node keeps what it has. Returns, node by node, the runnable tasks on nodes that take new tasks: the slots of a
rolling update (paused nodes get no updated tasks)."""

from __future__ import annotations

from shoal.models.objects import Obj, desired_of
from shoal.models.states import TaskState
from shoal.planning.orchestrator import eligibility
from shoal.planning.orchestrator.draft import Draft
from shoal.planning.orchestrator.modes import SlotKey, make_task
from shoal.planning.orchestrator.restart import RestartHistory, restart_decision
from shoal.planning.orchestrator.slots import newest


def reconcile(d: Draft, service: Obj, tasks: list[Obj], history: RestartHistory,
              now: float) -> list[tuple[SlotKey, list[Obj]]]:
    nodes = d.view.nodes
    per_node: dict[str, list[Obj]] = {}
    for x in tasks:
        per_node.setdefault(str(x.get("node_id") or ""), []).append(x)
    for nid, group in sorted(per_node.items()):
        if not eligibility.keeps(service, nodes.get(nid)):
            d.plan.add([op for x in group if desired_of(x) <= TaskState.RUNNING
                        and (op := d.raise_desired(x, TaskState.SHUTDOWN))])
    slots: list[tuple[SlotKey, list[Obj]]] = []
    for nid in sorted(nodes):
        if not eligibility.takes_new(service, nodes[nid]):
            continue
        group = per_node.get(nid, [])
        live = [x for x in group if desired_of(x) <= TaskState.RUNNING]
        if live:
            slots.append(((service["id"], nid), live))
        elif _wants_task(d, group, service, history, now):
            d.plan.add([d.create(make_task(service, 0, now, node_id=nid, ids=d.view.ids))])
    return slots


def _wants_task(d: Draft, group: list[Obj], service: Obj, history: RestartHistory, now: float) -> bool:
    """No runnable task on the node: make one, unless its newest task stopped and the restart policy forbids
    replacing it (condition none, on-failure after COMPLETE, max_attempts)."""
    if not group:
        return True
    last = newest(group)
    if desired_of(last) >= TaskState.REMOVE:
        return True
    allowed, retry_at = restart_decision(last, history, now, (service["id"], last.get("node_id")))
    d.plan.wake(retry_at)
    return allowed
