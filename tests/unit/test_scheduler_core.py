"""The scheduler's pure core: filters and their explanations, constraints, resources, spread, batching."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.constraints import Constraint
from services.scheduler.core import Debouncer, plan, schedule
from shoal.models.objects import Obj, new_task, task_status
from shoal.models.states import TaskState
from tests.sim.cp_fakes import GiB, make_node, make_service, with_meta

NOW = 1000.0


def pending(svc: Obj, slot: int, *, node: str | None = None, desired: str = "running") -> Obj:
    x = new_task(svc, slot, NOW)
    x["status"] = task_status("pending", NOW, "pending task scheduling")
    x["desired_state"] = desired
    x["node_id"] = node
    return with_meta(x, created_at=NOW)


def running_on(svc: Obj, slot: int, node: str, state: str = "running", desired: str = "running",
               ts: float = NOW) -> Obj:
    x = new_task(svc, slot, NOW)
    x["status"] = task_status(state, ts)
    x["node_id"] = node
    x["desired_state"] = desired
    return with_meta(x, created_at=NOW)


def placements(decisions: list) -> dict[str, str | None]:  # type: ignore[type-arg]
    return {d.task_id: d.node_id for d in decisions}


# ---- filters and explanations --------------------------------------------------------------------------------
def test_only_ready_and_active_nodes_take_tasks() -> None:
    svc = make_service("web", 1)
    nodes = [make_node("down", state="down"), make_node("drained", availability="drain"),
             make_node("paused", availability="pause"), make_node("ok")]
    [d] = schedule([pending(svc, 1)], nodes, [], now=NOW)
    assert d.node_id == "ok"
    [d] = schedule([pending(svc, 1)], nodes[:3], [], now=NOW)
    assert d.node_id is None and d.err == "no suitable node (3 nodes not available for new tasks)"


def test_runtime_must_be_supported() -> None:
    svc = make_service("web", 1, runtime="container")
    nodes = [make_node("p", executors=("process",)), make_node("c", executors=("container",))]
    assert schedule([pending(svc, 1)], nodes, [], now=NOW)[0].node_id == "c"
    [d] = schedule([pending(svc, 1)], nodes[:1], [], now=NOW)
    assert d.err == "no suitable node (runtime container not supported on 1 node)"


def test_resources_subtract_reservations_of_tasks_not_yet_stopped() -> None:
    svc = make_service("big", 1, reservations={"memory_bytes": 3 * GiB})
    nodes = [make_node("n1", memory=4 * GiB), make_node("n2", memory=4 * GiB)]
    on_n1 = running_on(svc, 9, "n1")  # 3 GiB reserved on n1
    on_n2 = running_on(svc, 8, "n2", state="running", desired="shutdown")  # still running: still counts
    [d] = schedule([pending(svc, 1)], nodes, [on_n1, on_n2], now=NOW)
    assert d.err == "no suitable node (insufficient memory on 2 nodes)"
    stopped = {**on_n2, "status": task_status("shutdown", NOW)}  # observed > RUNNING frees it
    assert schedule([pending(svc, 1)], nodes, [on_n1, stopped], now=NOW)[0].node_id == "n2"


def test_resources_account_for_tasks_placed_in_the_same_pass() -> None:
    svc = make_service("cpu", 3, reservations={"nano_cpus": 2_000_000_000})
    nodes = [make_node("n1", cpus=4), make_node("n2", cpus=1)]
    ds = schedule([pending(svc, i) for i in (1, 2, 3)], nodes, [], now=NOW)
    assert sorted(str(d.node_id) for d in ds) == ["None", "n1", "n1"]
    err = next(d.err for d in ds if d.node_id is None)
    assert err == "no suitable node (insufficient cpu on 2 nodes)"


def test_explanation_counts_each_node_once_most_common_first() -> None:
    svc = make_service("web", 1, reservations={"memory_bytes": 6 * GiB}, constraints=["node.labels.zone==a"])
    nodes = [make_node("small1", memory=4 * GiB, labels={"zone": "a"}),
             make_node("small2", memory=4 * GiB), make_node("wrongzone", labels={"zone": "b"}),
             make_node("gone", state="down")]
    [d] = schedule([pending(svc, 1)], nodes, [], now=NOW)
    assert d.err == ("no suitable node (insufficient memory on 2 nodes; 1 node not available for new tasks; "
                     "constraint node.labels.zone==a not satisfied on 1 node)")


def test_no_nodes_at_all() -> None:
    [d] = schedule([pending(make_service("web", 1), 1)], [], [], now=NOW)
    assert d.err == "no suitable node"


def test_max_replicas_per_node() -> None:
    svc = make_service("web", 3, max_replicas=1)
    ds = schedule([pending(svc, i) for i in (1, 2, 3)], [make_node("n1"), make_node("n2")], [], now=NOW)
    assert Counter(d.node_id for d in ds) == {"n1": 1, "n2": 1, None: 1}


# ---- constraints ---------------------------------------------------------------------------------------------
def test_constraint_keys_values_and_operators() -> None:
    node = make_node("abc", hostname="Host-1", labels={"zone": "EU", "Tier": "db"}, role="manager",
                     addr="10.1.2.3:4331")
    assert Constraint.parse("node.id==abc").matches(node)
    assert Constraint.parse("node.hostname==host-1").matches(node)  # values compare case-insensitively
    assert Constraint.parse("node.role == manager").matches(node)
    assert Constraint.parse("node.role!=worker").matches(node)
    assert Constraint.parse("node.labels.zone==eu").matches(node)
    assert not Constraint.parse("node.labels.tier==db").matches(node)  # label keys are case-sensitive...
    assert Constraint.parse("node.labels.tier!=db").matches(node)  # ...so "tier" is missing, i.e. ""
    assert Constraint.parse("node.labels.missing==").matches(node)
    assert Constraint.parse("node.platform.os==LINUX").matches(node)
    assert Constraint.parse("node.ip==10.1.2.3").matches(node)
    assert Constraint.parse("node.ip==10.1.0.0/16").matches(node)
    assert Constraint.parse("node.ip!=10.9.0.0/16").matches(node)
    assert not Constraint.parse("engine.labels.x==y").matches(node)
    # An unknown key never matches, whatever the operator.
    assert not Constraint.parse("node.color==red").matches(node)
    assert not Constraint.parse("node.color!=red").matches(node)


def test_constraints_are_anded_and_explained() -> None:
    svc = make_service("web", 1, constraints=["node.labels.zone==a", "node.role==worker"])
    nodes = [make_node("n1", labels={"zone": "a"}, role="manager"), make_node("n2", labels={"zone": "a"})]
    assert schedule([pending(svc, 1)], nodes, [], now=NOW)[0].node_id == "n2"
    [d] = schedule([pending(svc, 1)], nodes[:1], [], now=NOW)
    assert d.err == "no suitable node (constraint node.role==worker not satisfied on 1 node)"


# ---- spread --------------------------------------------------------------------------------------------------
def test_spread_prefers_fewest_tasks_of_the_service_then_fewest_total() -> None:
    web, other = make_service("web", 1), make_service("other", 1)
    nodes = [make_node("n1"), make_node("n2"), make_node("n3")]
    existing = [running_on(web, 1, "n1"), running_on(other, 1, "n2"), running_on(other, 2, "n2")]
    [d] = schedule([pending(web, 2)], nodes, existing, now=NOW)
    assert d.node_id == "n3"  # n2 and n3 have no web task; n3 has fewer tasks in total
    existing.append(running_on(other, 3, "n3"))
    existing.append(running_on(other, 4, "n3"))
    existing.append(running_on(other, 5, "n3"))
    [d] = schedule([pending(web, 2)], nodes, existing, now=NOW)
    assert d.node_id == "n2"


def test_tasks_being_removed_do_not_count_for_spread() -> None:
    web = make_service("web", 1)
    nodes = [make_node("n1"), make_node("n2")]
    existing = [running_on(web, 1, "n1", desired="remove"), running_on(web, 2, "n2")]
    assert schedule([pending(web, 3)], nodes, existing, now=NOW)[0].node_id == "n1"


def test_faulty_nodes_sort_last() -> None:
    web = make_service("web", 1)
    nodes = [make_node("n1"), make_node("n2")]
    failures = [running_on(web, i, "n1", state="failed", desired="shutdown", ts=NOW - 10) for i in range(5)]
    busy = [running_on(web, 10 + i, "n2") for i in range(3)]
    assert schedule([pending(web, 1)], nodes, failures + busy, now=NOW)[0].node_id == "n2"
    # Old failures (beyond 5 minutes) do not count.
    assert schedule([pending(web, 1)], nodes, failures + busy, now=NOW + 301)[0].node_id == "n1"


@settings(max_examples=50, deadline=None)
@given(n_tasks=st.integers(1, 30), n_nodes=st.integers(1, 6))
def test_spread_is_even_across_equal_nodes(n_tasks: int, n_nodes: int) -> None:
    svc = make_service("web", n_tasks)
    nodes = [make_node(f"n{i}") for i in range(n_nodes)]
    ds = schedule([pending(svc, i) for i in range(1, n_tasks + 1)], nodes, [], now=NOW)
    counts = Counter(d.node_id for d in ds)
    assert None not in counts
    assert max(counts.values()) - min(counts.get(n["id"], 0) for n in nodes) <= 1


@settings(max_examples=50, deadline=None)
@given(mems=st.lists(st.integers(0, 8), min_size=1, max_size=5), need=st.integers(1, 4),
       n_tasks=st.integers(1, 12))
def test_never_overcommits_memory(mems: list[int], need: int, n_tasks: int) -> None:
    svc = make_service("web", n_tasks, reservations={"memory_bytes": need * GiB})
    nodes = [make_node(f"n{i}", memory=m * GiB) for i, m in enumerate(mems)]
    ds = schedule([pending(svc, i) for i in range(1, n_tasks + 1)], nodes, [], now=NOW)
    placed = Counter(d.node_id for d in ds if d.node_id)
    for i, m in enumerate(mems):
        assert placed.get(f"n{i}", 0) * need <= m
    # and greedy placement leaves nothing pending that would have fit somewhere
    fits = sum(m // need for m in mems)
    assert sum(placed.values()) == min(n_tasks, fits)


# ---- plans ---------------------------------------------------------------------------------------------------
def test_plan_assigns_and_writes_errors_only_when_they_change() -> None:
    web = make_service("web", 1)
    big = make_service("big", 1, reservations={"memory_bytes": 64 * GiB})
    t1, t2 = pending(web, 1), pending(big, 1)
    out, _ = plan([t1, t2], [make_node("n1")], NOW)
    by_id = {o["object"]["id"]: o["object"] for o in out.ops}
    assert by_id[t1["id"]]["node_id"] == "n1" and by_id[t1["id"]]["status"]["state"] == "assigned"
    assert by_id[t1["id"]]["status"]["err"] is None
    err = "no suitable node (insufficient memory on 1 node)"
    assert by_id[t2["id"]]["status"]["state"] == "pending" and by_id[t2["id"]]["status"]["err"] == err
    assert all(o["expect_version"] == o["object"]["meta"]["version"] for o in out.ops)
    # Same situation again, error already written: no write at all (no loop).
    again, _ = plan([by_id[t2["id"]]], [make_node("n1")], NOW + 1)
    assert not again


def test_pending_tasks_not_meant_to_run_are_shut_down_not_placed() -> None:
    web = make_service("web", 1)
    doomed = pending(web, 1, desired="shutdown")
    out, decisions = plan([doomed], [make_node("n1")], NOW)
    [op] = out.ops
    assert op["object"]["status"]["state"] == TaskState.SHUTDOWN and op["object"]["node_id"] is None
    assert decisions == []


def test_preassigned_tasks_are_only_validated_on_their_node() -> None:
    web = make_service("web", 1)
    nodes = [make_node("n1", state="down"), make_node("n2")]
    [d] = schedule([pending(web, 0, node="n1")], nodes, [], now=NOW)
    assert d.node_id is None and d.err == "no suitable node (1 node not available for new tasks)"
    assert schedule([pending(web, 0, node="n2")], nodes, [], now=NOW)[0].node_id == "n2"


def test_tasks_are_grouped_by_service_and_spec_version() -> None:
    a, b = make_service("a", 2), make_service("b", 2)
    tasks = [pending(b, 2), pending(a, 1), pending(b, 1), pending(a, 2)]
    ds = schedule(tasks, [make_node("n1")], [], now=NOW)
    order = [next(x["service_id"] for x in tasks if x["id"] == d.task_id) for d in ds]
    assert order in ([a["id"]] * 2 + [b["id"]] * 2, [b["id"]] * 2 + [a["id"]] * 2)


def test_debouncer_waits_for_a_quiet_gap_but_not_too_long() -> None:
    d = Debouncer(gap=0.05, max_latency=1.0)
    assert d.due(0.0) and not d.waiting
    d.note(10.0)
    assert not d.due(10.04) and d.due(10.05)
    for i in range(1, 40):  # a steady trickle: never quiet, so the 1 s cap applies
        d.note(10.0 + i * 0.03)
    assert d.deadline() == 11.0 and d.due(11.0)
    d.reset()
    assert not d.waiting


# ---- platforms, generic resources, preferences ---------------------------------------------------------------
def with_placement(svc: Obj, **placement: Any) -> Obj:
    task = {**svc["spec"]["task"], "placement": {**svc["spec"]["task"]["placement"], **placement}}
    return {**svc, "spec": {**svc["spec"], "task": task}}


def test_platforms_match_os_and_arch_with_aliases() -> None:
    svc = with_placement(make_service("web", 1), platforms=[{"os": "linux", "arch": "amd64"}])
    arm = make_node("arm")
    arm["description"]["platform"] = {"os": "linux", "arch": "aarch64"}
    x86 = make_node("x86")  # reports x86_64, which is amd64
    assert schedule([pending(svc, 1)], [arm, x86], [], now=NOW)[0].node_id == "x86"
    [d] = schedule([pending(svc, 1)], [arm], [], now=NOW)
    assert d.err == "no suitable node (unsupported platform on 1 node)"
    any_arch = with_placement(make_service("web", 1), platforms=[{"os": "LINUX"}])
    assert schedule([pending(any_arch, 1)], [arm], [], now=NOW)[0].node_id == "arm"


def test_generic_resources_are_counted() -> None:
    svc = make_service("gpu", 2)
    task = svc["spec"]["task"]
    task["resources"]["reservations"]["generic"] = [{"kind": "gpu", "value": 2}]
    plain = make_node("plain")
    gpus = make_node("gpus")
    gpus["description"]["resources"]["generic"] = [{"kind": "gpu", "value": "UUID1"},
                                                   {"kind": "gpu", "value": "UUID2"}, {"kind": "fpga", "value": 1}]
    ds = schedule([pending(svc, 1), pending(svc, 2)], [plain, gpus], [], now=NOW)
    assert [d.node_id for d in ds] == ["gpus", None]
    assert ds[1].err == "no suitable node (insufficient gpu on 2 nodes)"


def test_placement_preferences_even_out_label_values_first() -> None:
    svc = with_placement(make_service("web", 4), preferences=[{"spread": "node.labels.zone"}])
    nodes = [make_node("a1", labels={"zone": "a"}), make_node("a2", labels={"zone": "a"}),
             make_node("a3", labels={"zone": "a"}), make_node("b1", labels={"zone": "b"})]
    ds = schedule([pending(svc, i) for i in range(1, 5)], nodes, [], now=NOW)
    zones = Counter(d.node_id[0] for d in ds if d.node_id)
    assert zones == {"a": 2, "b": 2}  # plain spread would put 3 in zone a
    nolabel = [make_node("x"), make_node("b2", labels={"zone": "b"})]
    ds = schedule([pending(svc, i) for i in range(1, 5)], nolabel, [], now=NOW)
    assert Counter(d.node_id for d in ds) == {"x": 2, "b2": 2}  # nodes without the label are a peer group
