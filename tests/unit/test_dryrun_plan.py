"""Dry-run plans (shoal/planning/dryrun.py): the real orchestrator and scheduler cores over a copy of the state,
writing nothing. The same changes are compared with a real cluster in tests/e2e/test_service_plan_e2e.py."""

from __future__ import annotations

import copy

from shoal.models.objects import Obj, new_task, task_status
from shoal.planning.dryrun import plan_change
from shoal.planning.orchestrator.core import View
from tests.sim.cp_fakes import make_node, make_service, scaled, with_meta

NOW = 10_000.0


def running(svc: Obj, slot: int, node: str) -> Obj:
    x = new_task(svc, slot, 0.0)
    x["node_id"] = node
    x["status"] = task_status("running", 1.0)
    return with_meta(x, created_at=1.0)


def world(svc: Obj, tasks: list[Obj], nodes: list[Obj]) -> View:
    return View({svc["id"]: with_meta(svc)}, {x["id"]: x for x in tasks}, {n["id"]: n for n in nodes})


def updated(svc: Obj, **spec: object) -> Obj:
    return {**svc, "spec": {**svc["spec"], **spec}, "previous_spec": svc["spec"],
            "spec_version": int(svc["spec_version"]) + 1, "update_status": None}


NODES = [make_node("n1", labels={"zone": "a"}), make_node("n2", labels={"zone": "b"})]


def test_scale_up_with_a_constraint_creates_only_on_the_matching_node() -> None:
    svc = make_service("web", 2, constraints=["node.labels.zone==a"])
    tasks = [running(svc, 1, "n1"), running(svc, 2, "n1")]
    v = world(svc, tasks, NODES)
    snapshot = copy.deepcopy(v)
    out = plan_change(v, scaled(svc, 4), NOW)
    assert out["converged"]
    assert out["summary"] == {"create": 2, "stop": 0, "replace": 0, "unchanged": 2, "pending": 0}
    assert {e["node_id"] for e in out["create"]} == {"n1"}
    assert sorted(e["slot"] for e in out["create"]) == [3, 4]
    assert out["nodes"] == {"n1": {"create": 2, "stop": 0, "replace": 0, "unchanged": 2}}
    assert v == snapshot  # the view it was given is untouched


def test_scale_down_stops_tasks_on_the_busiest_node_first() -> None:
    svc = make_service("web", 3)
    tasks = [running(svc, 1, "n1"), running(svc, 2, "n1"), running(svc, 3, "n2")]
    out = plan_change(world(svc, tasks, NODES), scaled(svc, 2), NOW)
    assert out["summary"]["stop"] == 1 and out["summary"]["create"] == 0
    assert out["stop"][0]["node_id"] == "n1"


def test_rolling_update_replaces_every_slot_through_all_waves() -> None:
    svc = make_service("web", 4)
    svc["spec"]["update_config"] = {"parallelism": 1}
    tasks = [running(svc, n, "n1" if n % 2 else "n2") for n in range(1, 5)]
    task = {**svc["spec"]["task"], "process": {"command": ["sleep", "2000"]}}
    out = plan_change(world(svc, tasks, NODES), updated(svc, task=task), NOW)
    assert out["converged"]
    assert out["summary"] == {"create": 0, "stop": 0, "replace": 4, "unchanged": 0, "pending": 0}
    assert sorted(r["old"]["slot"] for r in out["replace"]) == [1, 2, 3, 4]
    assert all(r["new"]["slot"] == r["old"]["slot"] for r in out["replace"])


def test_an_impossible_constraint_stays_pending_with_the_schedulers_reason() -> None:
    svc = make_service("web", 1)
    proposed = make_service("db", 2, constraints=["node.labels.zone==nowhere"])
    out = plan_change(world(svc, [running(svc, 1, "n1")], NODES), proposed, NOW)
    assert out["summary"]["create"] == 2 and out["summary"]["pending"] == 2
    reason = out["pending"][0]["reason"]
    assert reason.startswith("no suitable node (") and "node.labels.zone==nowhere" in reason, reason
    assert out["nodes"] == {}


def test_a_constraint_change_moves_tasks_off_a_node_that_no_longer_fits() -> None:
    svc = make_service("web", 2)
    tasks = [running(svc, 1, "n1"), running(svc, 2, "n2")]
    task = {**svc["spec"]["task"], "placement": {"constraints": ["node.labels.zone==a"], "max_replicas": 0}}
    out = plan_change(world(svc, tasks, NODES), updated(svc, task=task), NOW)
    moved = [r for r in out["replace"] if r["moved"]]
    assert [(r["old"]["node_id"], r["new"]["node_id"]) for r in moved] == [("n2", "n1")]
    assert out["nodes"]["n2"]["stop"] == 1 and out["nodes"]["n1"]["create"] == 1


def test_a_plan_cut_short_says_it_is_partial() -> None:
    svc = make_service("web", 6)
    svc["spec"]["update_config"] = {"parallelism": 1}
    tasks = [running(svc, n, "n1") for n in range(1, 7)]
    task = {**svc["spec"]["task"], "process": {"command": ["sleep", "2000"]}}
    out = plan_change(world(svc, tasks, NODES), updated(svc, task=task), NOW, max_rounds=4)
    assert not out["converged"]
    assert 0 < out["summary"]["replace"] < 6


def test_the_cli_renders_the_summary_nodes_moves_and_pending() -> None:
    from shoal.cli.plans import render

    svc = make_service("web", 2)
    tasks = [running(svc, 1, "n1"), running(svc, 2, "n2")]
    task = {**svc["spec"]["task"], "placement": {"constraints": ["node.labels.zone==a"], "max_replicas": 0}}
    plan = plan_change(world(svc, tasks, NODES), updated(scaled(svc, 3), task=task), NOW)
    text = render(plan, {"n1": "alpha", "n2": "beta"})
    lines = text.splitlines()
    assert lines[0] == "plan for service web (spec version 2): create 1, stop 0, replace 2, unchanged 0", text
    assert any(line.split() == ["alpha", "2", "0", "1", "0"] for line in lines), text
    assert any(line.split() == ["beta", "0", "1", "0", "0"] for line in lines), text
    assert "move slot 2: beta -> alpha" in lines

    nowhere = make_service("db", 1, constraints=["node.labels.zone==c"])
    text = render(plan_change(world(svc, tasks, NODES), nowhere, NOW), {})
    assert text.splitlines()[-1] == ("pending slot 1: no suitable node (constraint node.labels.zone==c not "
                                     "satisfied on 2 nodes)"), text


def test_a_global_service_plans_one_task_per_fitting_node() -> None:
    from tests.sim.cp_fakes import service_of

    web = make_service("web", 1)
    agent = service_of("agent", mode={"global": {}}, constraints=["node.labels.zone==b"])
    nodes = [*NODES, make_node("n3", labels={"zone": "b"}), make_node("n4", labels={"zone": "b"}, state="down")]
    out = plan_change(world(web, [], nodes), agent, NOW)
    assert sorted(e["node_id"] for e in out["create"]) == ["n2", "n3"]
    assert out["summary"]["pending"] == 0


def test_a_job_plans_every_completion() -> None:
    from tests.sim.cp_fakes import service_of

    web = make_service("web", 1)
    job = service_of("batch", mode={"replicated_job": {"max_concurrent": 2, "total_completions": 5}})
    out = plan_change(world(web, [], NODES), job, NOW)
    assert out["converged"] and out["summary"]["create"] == 5
    assert sorted(e["slot"] for e in out["create"]) == [0, 1, 2, 3, 4]
