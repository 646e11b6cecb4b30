"""The constraint enforcer: tasks on changed nodes they no longer fit → observed REJECTED, then restarted (§5 point
10: the service's current constraints, `test_s5_10_*`)."""

from __future__ import annotations

from typing import Any

from shoal.models.objects import Obj, state_of, task_status
from shoal.models.states import TaskState
from shoal.placement import node_matches
from shoal.planning.orchestrator import enforcer
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.modes import make_task
from shoal.planning.orchestrator.restart import RestartHistory
from tests.sim.cp_fakes import CPU, GiB, make_node, with_meta
from tests.unit.orchestrator_bench import Bench, service_of


def zoned_bench(**kw: Any) -> tuple[Bench, str]:
    b = Bench(("n1", "n2"))
    for n in ("n1", "n2"):
        b.node(n, labels={"zone": "a"})
    svc = b.add(service_of("web", 2, constraints=["node.labels.zone==a"], restart={"delay": 1}, **kw))
    b.run(5, until=lambda: len(b.running(svc["id"])) == 2)
    return b, svc["id"]


def rejected(plan_ops: list[dict[str, object]]) -> list[Obj]:
    return [o["object"] for o in plan_ops  # type: ignore[misc]
            if o["op"] == "update" and o["kind"] == "task"
            and o["object"]["status"]["state"] == "rejected"]  # type: ignore[index]


def test_task_on_a_node_that_stops_matching_is_rejected_then_replaced() -> None:
    b, sid = zoned_bench()
    b.node("n1", labels={"zone": "b"}, availability="active")
    b.node("n2", labels={"zone": "a"})
    on_n1 = [x for x in b.running(sid) if x["node_id"] == "n1"]
    plan = b.orchestrate()
    [task] = rejected(plan.ops)
    assert task["id"] == on_n1[0]["id"]
    assert task["status"]["message"] == enforcer.MESSAGE and task["status"]["err"] == enforcer.ERR
    b.run(10, until=lambda: len(b.running(sid)) == 2 and all(x["node_id"] == "n2" for x in b.running(sid)))


def test_s5_10_the_enforcer_uses_the_services_current_constraints_not_the_tasks_copy() -> None:
    b, sid = zoned_bench()

    def relabel(spec: Obj) -> None:
        spec["task"]["placement"]["constraints"] = ["node.labels.tier==web"]
    for n in ("n1", "n2"):
        b.node(n, labels={"zone": "a", "tier": "web"})
    b.update(sid, relabel)  # constraint-only change, nodes still match: tasks stay (not dirty)
    b.run(3)
    stale = b.running(sid)
    assert all(x["spec"]["placement"]["constraints"] == ["node.labels.zone==a"] for x in stale)
    b.node("n1", labels={"zone": "a"})  # still matches the task's copy, not the service's constraint
    plan = b.orchestrate()
    assert [x["node_id"] for x in rejected(plan.ops)] == ["n1"]


def test_a_service_constraint_change_alone_is_left_to_the_rolling_update() -> None:
    b, sid = zoned_bench(update={"parallelism": 1, "monitor": 1.0})

    def move(spec: Obj) -> None:
        spec["task"]["placement"]["constraints"] = ["node.labels.zone==b"]
    b.node("n2", labels={"zone": "b"})
    b.update(sid, move)
    for _ in range(6):
        plan = b.orchestrate()
        assert not rejected(plan.ops)
        b.schedule()
        b.agents()
        b.w.now += 0.5


def test_reservations_beyond_the_node_resources_reject_the_newest_tasks() -> None:
    b = Bench(("n1",), cpus=4)
    svc = b.add(service_of("web", 3, reservations={"nano_cpus": CPU}, restart={"delay": 1}))
    b.run(5, until=lambda: len(b.running(svc["id"])) == 3)
    node = b.w.mem.get("node", "n1")
    desc = {**node["description"], "resources": {"nano_cpus": 2 * CPU, "memory_bytes": 8 * GiB}}
    b.put({**node, "description": desc}, kind="node")  # the node re-registered with fewer CPUs
    newest = max(b.running(svc["id"]), key=lambda x: (x["meta"]["created_at"], x["id"]))
    plan = b.orchestrate()
    assert [x["id"] for x in rejected(plan.ops)] == [newest["id"]]


def test_generic_resources_are_checked_too() -> None:
    node = with_meta({**make_node("n1"), "description": {**make_node("n1")["description"],
                                                          "resources": {"nano_cpus": CPU, "memory_bytes": GiB,
                                                                        "generic": {"gpu": 1}}}})
    svc = with_meta(service_of("gpu", 2))
    svc["spec"]["task"]["resources"]["reservations"]["generic"] = [{"kind": "gpu", "value": 1}]
    tasks = [with_meta({**make_task(svc, i, float(i)), "node_id": "n1", "status": task_status("running", 0.0)},
                       created_at=float(i)) for i in (1, 2)]
    assert [x["slot"] for x in enforcer.misfits(node, tasks, {svc["id"]: svc})] == [2]


def test_paused_and_drained_nodes_are_not_enforced() -> None:
    b, _sid = zoned_bench()
    b.node("n1", labels={"zone": "b"}, availability="pause")
    assert not rejected(b.orchestrate().ops)


def test_unchanged_nodes_are_not_checked_again() -> None:
    svc = with_meta(service_of("web", 1, constraints=["node.labels.zone==a"]))
    node = with_meta(make_node("n1"))
    task = with_meta({**make_task(svc, 1, 0.0), "node_id": "n1", "status": task_status("running", 0.0)})
    v = View({svc["id"]: svc}, {task["id"]: task}, {"n1": node})
    checked = Seen(nodes_checked={"n1": node["meta"]["version"]})
    assert not rejected(reconcile(v, RestartHistory(), 5.0, seen=checked).ops)
    plan = reconcile(v, RestartHistory(), 5.0, seen=Seen(nodes_checked={}))  # after an activation: all nodes
    [x] = rejected(plan.ops)
    assert [g.note for g in plan.groups if g.note] == [enforcer.NodeChecked("n1", node["meta"]["version"])]
    assert state_of(x) == TaskState.REJECTED


def test_tasks_not_yet_assigned_or_already_stopped_are_ignored() -> None:
    svc = with_meta(service_of("web", 1, constraints=["node.labels.zone==a"]))
    node = with_meta(make_node("n1"))
    tasks = [with_meta({**make_task(svc, 1, 0.0), "node_id": "n1", "status": task_status(s, 0.0)})
             for s in (TaskState.PENDING, TaskState.FAILED, TaskState.COMPLETE)]
    v = View({svc["id"]: svc}, {x["id"]: x for x in tasks}, {"n1": node})
    assert not rejected(reconcile(v, RestartHistory(), 5.0).ops)


def test_constraint_language() -> None:
    node = {**make_node("n1", labels={"zone": "A"}, addr="10.0.0.5:4331"), "role": "manager"}
    assert node_matches(["node.labels.zone==a", "node.role==manager", "node.hostname!=n2"], node)
    assert node_matches(["node.ip==10.0.0.0/24", "node.platform.os==linux"], node)
    assert not node_matches(["node.labels.missing==x"], node)
    assert node_matches(["node.labels.missing!=x"], node)
    assert not node_matches(["unknown.key!=x"], node)  # an unknown key never matches
    assert not node_matches([], None)
