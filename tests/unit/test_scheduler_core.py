"""The scheduler's pure core: filters and their explanations, constraints, resources, spread, batching."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.models.objects import Obj, new_task, task_status
from shoal.models.states import TaskState
from shoal.planning.scheduler import nodeinfo
from shoal.planning.scheduler.constraints import Constraint
from shoal.planning.scheduler.core import Debouncer, no_suitable_node, plan, schedule, spread_key
from shoal.planning.scheduler.filters import Pipeline, TaskInfo
from shoal.planning.scheduler.nodeinfo import FailureLog
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


def failed_five_times_on_n1() -> tuple[Obj, list[Obj], list[Obj], list[Obj]]:
    """A service whose tasks failed five times on n1 (ten seconds ago) and that runs three tasks on n2."""
    web = make_service("web", 1)
    nodes = [make_node("n1"), make_node("n2")]
    failures = [running_on(web, i, "n1", state="failed", desired="shutdown", ts=NOW - 10) for i in range(5)]
    busy = [running_on(web, 10 + i, "n2") for i in range(3)]
    return web, nodes, failures, busy


def test_faulty_nodes_sort_last() -> None:
    web, nodes, failures, busy = failed_five_times_on_n1()
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
    d.reset(9.99)  # a pass ran a moment ago: work arriving now is part of a burst
    d.note(10.0)
    assert not d.due(10.04) and d.due(10.05)
    for i in range(1, 40):  # a steady trickle: never quiet, so the 1 s cap applies
        d.note(10.0 + i * 0.03)
    assert d.deadline() == 11.0 and d.due(11.0)
    d.reset()
    assert not d.waiting


def test_debouncer_leading_edge_places_work_after_a_quiet_spell_at_once() -> None:
    d = Debouncer(gap=0.05, max_latency=1.0)
    d.note(5.0)  # no pass yet: nothing was arriving, nothing to gather
    assert d.due(5.0)
    d.note(5.01)  # more before the pass: still due (the pass takes it too)
    assert d.due(5.01)
    d.reset(5.02)
    d.note(5.05)  # within the gap of that pass: a burst, debounced
    assert not d.due(5.09) and d.due(5.10)
    d.reset(5.10)
    d.note(5.16)  # a gap's quiet after the last pass: at once again
    assert d.due(5.16) and d.deadline() == 5.16


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


# ---- host-mode published ports -------------------------------------------------------------------------------
def with_host_port(task: Obj, port: int, protocol: str = "tcp") -> Obj:
    """A task as the allocator leaves it: the service's endpoint ports copied into `task.endpoint`."""
    return {**task, "endpoint": {"ports": [{"protocol": protocol, "target_port": 80, "published_port": port,
                                            "publish_mode": "host"}]}}


def test_host_ports_keep_publishers_apart_across_services() -> None:
    web, api = make_service("web", 3), make_service("api", 1)
    nodes = [make_node("n1"), make_node("n2"), make_node("n3")]
    busy = with_host_port(running_on(api, 1, "n1"), 8080)
    ds = schedule([with_host_port(pending(web, i), 8080) for i in (1, 2, 3)], nodes, [busy], now=NOW)
    assert sorted(str(d.node_id) for d in ds) == ["None", "n2", "n3"]  # one per node, none on n1
    [err] = [d.err for d in ds if d.node_id is None]
    assert err == "no suitable node (host-mode port 8080/tcp in use on 3 nodes)"
    # another protocol, or an ingress port, or a port the engine picks (0) does not clash
    [d] = schedule([with_host_port(pending(web, 4), 8080, "udp")], nodes[:1], [busy], now=NOW)
    assert d.node_id == "n1"
    ingress = {**pending(web, 5), "endpoint": {"ports": [{"protocol": "tcp", "published_port": 8080,
                                                          "publish_mode": "ingress"}]}}
    assert schedule([ingress], nodes[:1], [busy], now=NOW)[0].node_id == "n1"
    assert schedule([with_host_port(pending(web, 6), 0)], nodes[:1], [busy], now=NOW)[0].node_id == "n1"
    # a stopped publisher frees the port
    stopped = {**busy, "status": task_status("shutdown", NOW)}
    assert schedule([with_host_port(pending(web, 7), 8080)], nodes[:1], [stopped], now=NOW)[0].node_id == "n1"


def test_plan_writes_only_assigned_fields() -> None:
    web = make_service("web", 1)
    out, _ = plan([with_host_port(pending(web, 1), 8080)], [make_node("n1")], NOW)
    [op] = out.ops
    assert op["object"]["node_id"] == "n1" and "assigned_generic_resources" not in op["object"]


# ---- constraints on node.ip and engine labels ----------------------------------------------------------------
def test_node_ip_cidr_and_engine_labels_place_tasks() -> None:
    nodes = [make_node("a", addr="10.1.2.3:4331"), make_node("b", addr="192.168.0.7"),
             make_node("c", addr="[fd00::5]:4331")]
    nodes[1]["description"]["engine"] = {"labels": {"storage": "SSD"}}
    by_cidr = make_service("cidr", 1, constraints=["node.ip==10.1.0.0/16"])
    assert schedule([pending(by_cidr, 1)], nodes, [], now=NOW)[0].node_id == "a"
    v6 = make_service("v6", 1, constraints=["node.ip==fd00::/64"])
    assert schedule([pending(v6, 1)], nodes, [], now=NOW)[0].node_id == "c"
    not_in = make_service("notin", 2, constraints=["node.ip!=10.0.0.0/8", "node.ip!=fd00::5"])
    assert schedule([pending(not_in, 1)], nodes, [], now=NOW)[0].node_id == "b"
    ssd = make_service("ssd", 1, constraints=["engine.labels.storage==ssd"])
    assert schedule([pending(ssd, 1)], nodes, [], now=NOW)[0].node_id == "b"
    [d] = schedule([pending(ssd, 1)], [nodes[0], nodes[2]], [], now=NOW)
    assert d.err == "no suitable node (constraint engine.labels.storage==ssd not satisfied on 2 nodes)"
    bad = make_service("bad", 1, constraints=["node.ip==not-an-ip"])
    assert schedule([pending(bad, 1)], nodes, [], now=NOW)[0].node_id is None


# ---- named generic resources ---------------------------------------------------------------------------------
def gpu_service(name: str, n: int, replicas: int = 1) -> Obj:
    svc = make_service(name, replicas)
    svc["spec"]["task"]["resources"]["reservations"]["generic"] = [{"kind": "gpu", "value": n}]
    return svc


def test_named_generic_resources_are_claimed_and_recorded() -> None:
    svc = gpu_service("ml", 2, replicas=3)
    node = make_node("g")
    node["description"]["resources"]["generic"] = [{"kind": "gpu", "named": ["GPU-2", "GPU-0", "GPU-1"]},
                                                   {"kind": "gpu", "value": "GPU-3"}]
    holder = running_on(svc, 9, "g")
    holder["assigned_generic_resources"] = [{"kind": "gpu", "named": ["GPU-0", "GPU-2"]}]
    out, ds = plan([pending(svc, 1), pending(svc, 2), holder], [node], NOW)
    assert [d.node_id for d in ds] == ["g", None]
    assert ds[0].generic == ({"kind": "gpu", "named": ["GPU-1", "GPU-3"]},)  # the free ones
    assert ds[1].err == "no suitable node (insufficient gpu on 1 node)"
    [written] = [o["object"] for o in out.ops if o["object"]["id"] == ds[0].task_id]
    assert written["assigned_generic_resources"] == [{"kind": "gpu", "named": ["GPU-1", "GPU-3"]}]
    # once the holder stops, its items are free again
    done = {**holder, "status": task_status("complete", NOW)}
    ds = schedule([pending(svc, 1), pending(svc, 2)], [node], [done], now=NOW)
    assert [d.generic for d in ds] == [({"kind": "gpu", "named": ["GPU-0", "GPU-1"]},),
                                       ({"kind": "gpu", "named": ["GPU-2", "GPU-3"]},)]


def test_discrete_generic_resources_are_recorded_as_counts() -> None:
    svc = make_service("fpga", 2)
    svc["spec"]["task"]["resources"]["reservations"]["generic"] = [{"kind": "fpga", "value": 2}]
    node = make_node("f")
    node["description"]["resources"]["generic"] = [{"kind": "fpga", "value": 3}]
    ds = schedule([pending(svc, 1), pending(svc, 2)], [node], [], now=NOW)
    assert ds[0].generic == ({"kind": "fpga", "value": 2},) and ds[1].node_id is None


def test_a_preassigned_task_claims_named_resources_too() -> None:
    svc = gpu_service("ml", 1)
    node = make_node("g")
    node["description"]["resources"]["generic"] = [{"kind": "gpu", "named": ["a", "b"]}]
    [d] = schedule([pending(svc, 0, node="g")], [node], [], now=NOW)
    assert d.node_id == "g" and d.generic == ({"kind": "gpu", "named": ["a"]},)


# ---- nested placement preferences ----------------------------------------------------------------------------
def test_nested_preferences_even_out_each_level_with_the_empty_group_as_a_peer() -> None:
    svc = with_placement(make_service("web", 8), preferences=[{"spread": "node.labels.zone"},
                                                              {"spread": "node.labels.rack"}])
    nodes = [make_node("a-r1-1", labels={"zone": "a", "rack": "r1"}),
             make_node("a-r1-2", labels={"zone": "a", "rack": "r1"}),
             make_node("a-r1-3", labels={"zone": "a", "rack": "r1"}),
             make_node("a-r2-1", labels={"zone": "a", "rack": "r2"}),
             make_node("b-none", labels={"zone": "b"}),  # zone b, no rack: the "" rack of zone b
             make_node("b-r1-1", labels={"zone": "b", "rack": "r1"}),
             make_node("nozone", labels={"rack": "r9"})]  # no zone: the "" zone, a peer of a and b
    ds = schedule([pending(svc, i) for i in range(1, 10)], nodes, [], now=NOW)
    placed = Counter(d.node_id for d in ds)
    zone = Counter(str(n).split("-")[0] for n in placed.elements())
    assert zone == {"a": 3, "b": 3, "nozone": 3}  # 9 tasks over three zone values
    assert placed["a-r2-1"] in (1, 2) and sum(placed[n] for n in ("a-r1-1", "a-r1-2", "a-r1-3")) in (1, 2)
    assert {placed["b-none"], placed["b-r1-1"]} == {1, 2}  # the "" rack is a peer of r1 inside zone b


def test_preferences_count_existing_tasks_and_skip_branches_that_stop_fitting() -> None:
    svc = with_placement(make_service("web", 4, reservations={"memory_bytes": 3 * GiB}),
                         preferences=[{"spread": "node.labels.zone"}])
    nodes = [make_node("a1", labels={"zone": "a"}, memory=4 * GiB), make_node("b1", labels={"zone": "b"}),
             make_node("b2", labels={"zone": "b"})]
    existing = [running_on(svc, 9, "b1"), running_on(svc, 8, "b2")]  # zone b already has 2
    ds = schedule([pending(svc, i) for i in range(1, 5)], nodes, existing, now=NOW)
    # zone a takes one (its only node is then full), the rest go to zone b although it has more
    assert Counter(d.node_id for d in ds) == {"a1": 1, "b1": 1, "b2": 1, None: 1}


# ---- faulty nodes --------------------------------------------------------------------------------------------
def test_failures_count_per_spec_version_and_outlive_the_reaper() -> None:
    web, nodes, failures, busy = failed_five_times_on_n1()
    assert schedule([pending(web, 1)], nodes, failures + busy, now=NOW)[0].node_id == "n2"
    v2 = {**pending(web, 1), "spec_version": 2}  # a new spec version is not punished for the old one's failures
    assert schedule([v2], nodes, failures + busy, now=NOW)[0].node_id == "n1"
    log = FailureLog()
    counts = log.observe(failures + busy, NOW)
    assert counts == {("n1", web["id"], 1): 5}
    assert log.observe(busy, NOW + 1) == counts  # the failed tasks were reaped: still remembered
    assert schedule([pending(web, 1)], nodes, busy, now=NOW, failures=log.observe(busy, NOW + 1))[0].node_id == "n2"
    assert log.observe(busy, NOW + 300) == {}  # out of the window


def test_among_faulty_nodes_fewer_failures_first() -> None:
    web = make_service("web", 1)
    nodes = [make_node("n1"), make_node("n2")]
    failures = {("n1", web["id"], 1): 7, ("n2", web["id"], 1): 5}
    busy = [running_on(web, 10 + i, "n2") for i in range(3)]
    assert schedule([pending(web, 1)], nodes, busy, now=NOW, failures=failures)[0].node_id == "n2"


def test_job_tasks_meant_to_complete_are_scheduled() -> None:
    job = make_service("job", 1)
    [d] = schedule([pending(job, 0, desired="complete")], [make_node("n1")], [], now=NOW)
    assert d.node_id == "n1"
    out, ds = plan([pending(job, 0, desired="complete")], [make_node("n1")], NOW)
    assert ds[0].node_id == "n1" and out.ops[0]["object"]["status"]["state"] == "assigned"


# ---- the optimised placer agrees with the plain greedy definition ---------------------------------------------
def reference(tasks: list[Obj], nodes: list[Obj], existing: list[Obj]) -> list[tuple[str | None, str | None]]:
    """The definition, computed the slow way: every task (in slot order) runs the whole pipeline on every node,
    then descends the preference levels toward the value with the fewest tasks of the service — counted over
    the nodes that fit the group at its start, among values that still have a fitting node — and takes the
    node with the lowest spread key."""
    pipe = Pipeline()
    infos = nodeinfo.build(nodes, existing, NOW)
    ordered = nodeinfo.by_id(infos)
    ti = TaskInfo.of(tasks[0])
    initial = [i for i in ordered if pipe.check(ti, i) is None]
    out: list[tuple[str | None, str | None]] = []
    for task in sorted(tasks, key=lambda x: (x["slot"], x["id"])):
        rejections: Counter[tuple[int, str]] = Counter()
        fits = []
        for info in ordered:
            r = pipe.check(ti, info)
            if r is None:
                fits.append(info)
            else:
                rejections[r] += 1
        if not fits:
            out.append((None, no_suitable_node(pipe.explain(rejections))))
            continue
        group, base = fits, initial
        for d in ti.preferences:
            values = {i.attribute(d) or "" for i in group}
            best = min(values, key=lambda v: (sum(i.active_by_service.get(ti.service_id, 0) for i in base
                                                  if (i.attribute(d) or "") == v), v))
            group = [i for i in group if (i.attribute(d) or "") == best]
            base = [i for i in base if (i.attribute(d) or "") == best]
        node = min(group, key=lambda i: spread_key(i, ti))
        node.add(task, ti.reservation, ti.host_ports)
        out.append((node.id, None))
    return out


@settings(max_examples=60, deadline=None)
@given(n_nodes=st.integers(1, 12), n_tasks=st.integers(1, 25), data=st.data())
def test_heap_placement_matches_the_reference(n_nodes: int, n_tasks: int, data: st.DataObject) -> None:
    prefs = data.draw(st.sampled_from([[], [{"spread": "node.labels.zone"}],
                                       [{"spread": "node.labels.zone"}, {"spread": "node.labels.rack"}]]))
    svc = with_placement(make_service("web", n_tasks, reservations={"memory_bytes": data.draw(st.integers(0, 3)) * GiB},
                                      max_replicas=data.draw(st.integers(0, 4))), preferences=prefs)
    other = make_service("other", 1)
    nodes = []
    for i in range(n_nodes):
        labels = {k: v for k, v in (("zone", data.draw(st.sampled_from(["", "a", "b"]))),
                                    ("rack", data.draw(st.sampled_from(["", "r1", "r2"])))) if v}
        nodes.append(make_node(f"n{i:02d}", memory=data.draw(st.integers(1, 8)) * GiB, labels=labels,
                               state=data.draw(st.sampled_from(["ready", "ready", "ready", "down"]))))
    existing = []
    for j in range(data.draw(st.integers(0, 10))):
        owner = data.draw(st.sampled_from([svc, other]))
        existing.append(running_on(owner, 100 + j, f"n{data.draw(st.integers(0, n_nodes - 1)):02d}"))
    host = data.draw(st.booleans())
    tasks = [pending(svc, i) for i in range(1, n_tasks + 1)]
    if host:
        tasks = [with_host_port(x, 8080) for x in tasks]
        existing = [with_host_port(x, 8080) if x["service_id"] == other["id"] else x for x in existing]
    got = {d.task_id: (d.node_id, d.err) for d in schedule(tasks, nodes, existing, now=NOW)}
    want = reference(tasks, nodes, existing)
    assert [got[x["id"]] for x in sorted(tasks, key=lambda x: x["slot"])] == want
