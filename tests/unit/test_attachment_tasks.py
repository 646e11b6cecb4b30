"""Network attachment tasks (no service, runtime `attachment`, bound to a node) outside the allocator: the
orchestrator never removes, restarts or trims them and reaps them only once detached and stopped (or when their
node is gone); the scheduler validates them on their node only (no runtime to advertise, but a drained node
holds them PENDING, as SwarmKit's ready filter does); the agent's attachment executor holds them RUNNING
without running anything until they are detached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.executors.attachment import AttachmentExecutor
from agent.worker import Worker
from shoal.models.objects import ATTACHMENT_RUNTIME, Obj, new_attachment_task, new_task, task_name, task_status
from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import RestartHistory
from shoal.planning.scheduler.core import plan as schedule_plan
from tests.sim.cp_fakes import make_node, make_service, with_meta

NOW = 1000.0


def attachment(node: str = "n1", *, state: str = "running", desired: str = "running") -> Obj:
    x = new_attachment_task("net1", node, NOW - 10, container_id="c1")
    x["status"] = task_status(state, NOW - 5)
    x["desired_state"] = desired
    return with_meta(x, created_at=NOW - 10)


def orchestrate(tasks: list[Obj], nodes: tuple[str, ...] = ("n1", "n2"), services: list[Obj] | None = None,
                drained: tuple[str, ...] = (), down: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    ns = [make_node(n, availability="drain" if n in drained else "active",
                    state="down" if n in down else "ready") for n in nodes]
    view = View({s["id"]: s for s in services or []}, {x["id"]: x for x in tasks}, {n["id"]: n for n in ns})
    return reconcile(view, RestartHistory(), NOW).ops


# ---- orchestrator --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", ["new", "pending", "assigned", "running", "failed", "rejected", "shutdown"])
def test_the_orchestrator_leaves_attached_tasks_alone(state: str) -> None:
    """No service: not an orphan to remove, nothing to restart when it fails, no history to trim."""
    assert orchestrate([attachment(state=state)]) == []


def test_nor_on_a_drained_or_down_node() -> None:
    assert orchestrate([attachment("n1")], drained=("n1",)) == []
    assert orchestrate([attachment("n2")], down=("n2",)) == []


def test_a_service_s_tasks_are_still_handled_next_to_attachments() -> None:
    svc = with_meta(make_service("web", 1))
    ops = orchestrate([attachment()], services=[svc])
    assert [o["op"] for o in ops] == ["create"] and ops[0]["object"]["service_id"] == svc["id"]


@pytest.mark.parametrize(("state", "node_exists", "deleted"), [
    ("running", True, False),      # detached, still running: the agent stops it first
    ("shutdown", True, True),      # stopped: deleted, its address is then free
    ("new", True, True),           # never dispatched
    ("running", False, True),      # its node was removed: nothing will ever report on it
])
def test_a_detached_attachment_is_reaped_once_stopped(state: str, node_exists: bool, deleted: bool) -> None:
    x = attachment(state=state, desired="remove")
    ops = orchestrate([x], nodes=("n1",) if node_exists else ("n2",))
    assert ops == ([{"op": "delete", "kind": "task", "id": x["id"], "expect_version": x["meta"]["version"]}]
                   if deleted else [])


def test_an_attachment_on_a_removed_node_is_reaped_even_if_never_detached() -> None:
    x = attachment("gone", state="orphaned")
    [op] = orchestrate([x])
    assert op["op"] == "delete" and op["id"] == x["id"]


# ---- scheduler -----------------------------------------------------------------------------------------------
def pending_attachment(node: str) -> Obj:
    x = new_attachment_task("net1", node, NOW)
    x["status"] = task_status("pending", NOW, "pending task scheduling")
    return with_meta(x, created_at=NOW)


def test_the_scheduler_assigns_an_attachment_to_its_own_node_without_a_runtime_to_advertise() -> None:
    nodes = [make_node("n1", executors=("process",)), make_node("n2", executors=("process",))]
    x = pending_attachment("n2")
    out, [d] = schedule_plan([x], nodes, NOW)
    assert d.node_id == "n2" and d.err is None
    [op] = out.ops
    assert op["object"]["status"]["state"] == "assigned" and op["object"]["node_id"] == "n2"


def test_a_drained_node_holds_its_attachment_pending_with_a_reason() -> None:
    svc = make_service("web", 1)
    busy = new_task(svc, 1, NOW)  # a service task next to it: two task groups in one pass sort fine
    busy["status"] = task_status("pending", NOW)
    nodes = [make_node("n1", availability="drain"), make_node("n2")]
    _, decisions = schedule_plan([pending_attachment("n1"), with_meta(busy, created_at=NOW)], nodes, NOW)
    by_node = {d.task_id: d for d in decisions}
    att = next(d for tid, d in by_node.items() if tid != busy["id"])
    assert att.node_id is None and att.err == "no suitable node (1 node not available for new tasks)"
    assert by_node[busy["id"]].node_id == "n2"


# ---- agent ---------------------------------------------------------------------------------------------------
def test_attachment_tasks_are_named_after_their_node() -> None:
    x = attachment("n1")
    assert task_name(x) == f"attachment.n1.{x['id']}" and x["runtime"] == ATTACHMENT_RUNTIME


async def test_the_agent_holds_an_attachment_running_until_it_is_detached() -> None:
    reports: list[tuple[str, str]] = []
    worker = Worker({}, report=lambda tid, st: reports.append((tid, st["state"])), node_id=lambda: "n1",
                    save_delay=0.0)
    assert isinstance(worker.executors[ATTACHMENT_RUNTIME], AttachmentExecutor)  # always there
    x = attachment(state="assigned")
    worker.apply_complete([x])
    for _ in range(200):
        if ("running" in [s for _, s in reports]):
            break
        await asyncio.sleep(0.005)
    assert [s for _, s in reports] == ["accepted", "preparing", "ready", "starting", "running"]
    await asyncio.sleep(0.05)
    assert reports[-1][1] == "running"  # held: nothing ends it
    worker.apply_incremental([{"action": "update", "task": {**x, "desired_state": "remove"}}])
    for _ in range(200):
        if reports[-1][1] == "shutdown":
            break
        await asyncio.sleep(0.005)
    assert reports[-1] == (x["id"], "shutdown")
    await worker.close(stop_tasks=True, grace=1)
