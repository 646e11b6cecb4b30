"""Global services over the pure core: one task per eligible node, pre-bound; node availability, state and
constraints; restarts keyed by node; rolling updates node by node. SwarmKit subtleties (semantics §5 point 11)
by name: `test_s5_11_*`."""

from __future__ import annotations

from typing import Any

from shoal.models.objects import desired_of, state_of
from shoal.models.states import TaskState
from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import RestartHistory
from tests.sim.cp_fakes import make_node, with_meta
from tests.unit.orchestrator_bench import Bench, service_of, set_env

GLOBAL: dict[str, Any] = {"global": {}}


def global_bench(nodes: tuple[str, ...] = ("n1", "n2", "n3"), **kw: Any) -> tuple[Bench, str]:
    b = Bench(nodes)
    kw.setdefault("restart", {"delay": 1})
    svc = b.add(service_of("agentd", mode=GLOBAL, update={"monitor": 1.0}, **kw))
    b.run(5, until=lambda: len(b.running(svc["id"])) == len(nodes))
    return b, svc["id"]


def per_node(b: Bench, sid: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in b.live(sid):
        out[x["node_id"]] = out.get(x["node_id"], 0) + 1
    return out


def test_s5_11_one_task_per_node_created_already_bound() -> None:
    svc = with_meta(service_of("agentd", mode=GLOBAL))
    nodes = {n: make_node(n) for n in ("n1", "n2")}
    plan = reconcile(View({svc["id"]: svc}, {}, nodes), RestartHistory(), 10.0)
    new = [o["object"] for o in plan.ops]
    assert sorted(x["node_id"] for x in new) == ["n1", "n2"]
    assert all(x["slot"] == 0 and state_of(x) == TaskState.NEW and desired_of(x) == TaskState.RUNNING
               for x in new)


def test_global_service_runs_one_task_on_every_node() -> None:
    b, sid = global_bench()
    assert per_node(b, sid) == {"n1": 1, "n2": 1, "n3": 1}


def test_nodes_that_do_not_match_constraints_or_runtime_get_no_task() -> None:
    b = Bench(("n1", "n2"))
    b.add_node("n3", executors=("container",))  # no process executor
    b.node("n1", labels={"role": "edge"})
    svc = b.add(service_of("edge", mode=GLOBAL, constraints=["node.labels.role==edge"]))
    b.run(3)
    assert per_node(b, svc["id"]) == {"n1": 1}


def test_a_new_node_gets_a_task() -> None:
    b, sid = global_bench(("n1",))
    b.add_node("n2")
    b.run(3)
    assert per_node(b, sid) == {"n1": 1, "n2": 1}


def test_a_node_that_is_not_ready_gets_no_new_task() -> None:
    b = Bench(("n1",))
    b.add_node("n2", state="unknown")
    svc = b.add(service_of("agentd", mode=GLOBAL))
    b.run(3)
    assert per_node(b, svc["id"]) == {"n1": 1}


def test_s5_11_paused_node_keeps_its_task_but_gets_no_new_one() -> None:
    b, sid = global_bench(("n1", "n2"))
    b.node("n1", availability="pause")
    b.run(3)
    assert per_node(b, sid) == {"n1": 1, "n2": 1}
    task = b.running(sid)[0] if b.running(sid)[0]["node_id"] == "n1" else b.running(sid)[1]
    b.fail(task)
    b.run(5)
    assert per_node(b, sid) == {"n2": 1}  # not replaced on a paused node...
    b.node("n1", availability="active")
    b.run(3)
    assert per_node(b, sid) == {"n1": 1, "n2": 1}  # ...until it is active again


def test_s5_11_paused_node_gets_no_updated_task() -> None:
    b, sid = global_bench(("n1", "n2"))
    b.node("n1", availability="pause")
    old_n1 = next(x for x in b.running(sid) if x["node_id"] == "n1")
    b.update(sid, set_env("2"))
    b.run(20, until=lambda: b.status(sid) == "completed")
    assert b.task(old_n1["id"])["desired_state"] == "running"  # left alone on the paused node
    assert [x["spec_version"] for x in b.running(sid) if x["node_id"] == "n2"] == [2]
    b.node("n1", availability="active")
    b.run(10, until=lambda: len(b.running(sid, 2)) == 2)
    assert b.task(old_n1["id"])["desired_state"] == "shutdown"


def test_s5_11_drained_node_has_its_task_shut_down_not_moved() -> None:
    b, sid = global_bench()
    b.node("n2", availability="drain")
    b.run(3)
    assert per_node(b, sid) == {"n1": 1, "n3": 1}
    assert all(x["node_id"] != "n2" or desired_of(x) == TaskState.SHUTDOWN for x in b.tasks(sid))
    b.node("n2", availability="active")
    b.run(3)
    assert per_node(b, sid) == {"n1": 1, "n2": 1, "n3": 1}


def test_s5_11_down_or_deleted_node_has_its_task_shut_down() -> None:
    b, sid = global_bench()
    b.node_state("n1", "down")
    b.remove_node("n3")
    b.run(3)
    assert per_node(b, sid) == {"n2": 1}
    assert len(b.tasks(sid)) >= 3  # shut down, not replaced elsewhere


def test_node_that_stops_matching_has_its_task_shut_down() -> None:
    b = Bench(("n1", "n2"))
    for n in ("n1", "n2"):
        b.node(n, labels={"zone": "a"})
    svc = b.add(service_of("zoned", mode=GLOBAL, constraints=["node.labels.zone==a"]))
    b.run(3)
    b.node("n1", labels={"zone": "b"})
    b.run(3)
    assert per_node(b, svc["id"]) == {"n2": 1}


def test_s5_11_failed_task_is_restarted_on_the_same_node() -> None:
    b, sid = global_bench(("n1", "n2"))
    victim = next(x for x in b.running(sid) if x["node_id"] == "n2")
    b.fail(victim)
    plan = b.orchestrate()
    [repl] = [o["object"] for o in plan.ops if o["op"] == "create"]
    assert repl["node_id"] == "n2" and repl["slot"] == 0 and desired_of(repl) == TaskState.READY
    b.run(5)
    assert per_node(b, sid) == {"n1": 1, "n2": 1}


def test_s5_11_restart_history_is_keyed_by_node() -> None:
    b, sid = global_bench(("n1", "n2"), restart={"delay": 0, "max_attempts": 1})
    on = {x["node_id"]: x for x in b.running(sid)}
    b.fail(on["n1"])
    b.run(2)
    again = [x for x in b.running(sid) if x["node_id"] == "n1"]
    assert again
    b.fail(again[0])
    b.fail(on["n2"])  # n2's first failure: its own history, so it is restarted
    b.run(3)
    assert per_node(b, sid) == {"n2": 1}  # n1 used its one attempt


def test_s5_11_rolling_update_goes_node_by_node() -> None:
    b, sid = global_bench(("n1", "n2", "n3"))
    b.update(sid, set_env("2"))
    b.orchestrate()
    plan = b.orchestrate()
    [new] = [o["object"] for o in plan.ops if o["op"] == "create"]
    assert new["node_id"] == "n1" and desired_of(new) == TaskState.READY
    b.run(30, until=lambda: b.status(sid) == "completed")
    assert per_node(b, sid) == {"n1": 1, "n2": 1, "n3": 1}
    assert all(x["spec_version"] == 2 for x in b.live(sid))


def test_restart_condition_none_is_not_undone_by_the_global_reconciler() -> None:
    b, sid = global_bench(("n1",), restart={"condition": "none"})
    b.fail(b.running(sid)[0])
    b.run(5)
    assert per_node(b, sid) == {}


def test_deleting_a_global_service_removes_its_tasks() -> None:
    b, sid = global_bench(("n1", "n2"))
    b.w.apply([{"op": "delete", "kind": "service", "id": sid}])
    b.run(3)
    assert b.tasks(sid) == []
