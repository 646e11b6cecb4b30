"""The orchestrator's pure core: reconcile (scale up/down), restart supervisor, release gating, reaper."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.cluster import default_cluster
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, new_task, state_of, task_status
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import (
    STOP_TIMEOUT,
    RestartHistory,
    RestartNote,
    release,
    restart_decision,
)
from tests.sim.cp_fakes import World, make_node, make_service, scaled, set_node_state, with_meta

NOW = 1000.0


# ---- helpers -------------------------------------------------------------------------------------------------
def mk_task(svc: Obj, slot: int, *, state: str = "running", desired: str = "running", node: str | None = "n1",
            created: float = 0.0, ts: float | None = None, spec_version: int | None = None) -> Obj:
    x = new_task(svc, slot, created)
    x["desired_state"] = desired
    x["node_id"] = node
    x["status"] = task_status(state, created if ts is None else ts)
    if spec_version is not None:
        x["spec_version"] = spec_version
    return with_meta(x, created_at=created)


def view(services: list[Obj], tasks: list[Obj], nodes: list[Obj] | None = None,
         cluster: Obj | None = None) -> View:
    nodes = [make_node("n1"), make_node("n2")] if nodes is None else nodes
    return View({s["id"]: s for s in services}, {x["id"]: x for x in tasks}, {n["id"]: n for n in nodes},
                cluster)


def world_view(w: World) -> View:
    return View(w.table(Kind.SERVICE), w.table(Kind.TASK), w.table(Kind.NODE),
                w.mem.find(Kind.CLUSTER, "default"))


def ops_of(plan: Plan, op: str) -> list[dict[str, Any]]:
    return [o for o in plan.ops if o["op"] == op]


def desired_changes(plan: Plan) -> dict[str, str]:
    return {o["object"]["id"]: o["object"]["desired_state"] for o in ops_of(plan, "update")}


def created(plan: Plan) -> list[Obj]:
    return [o["object"] for o in ops_of(plan, "create")]


def deleted(plan: Plan) -> set[str]:
    return {o["id"] for o in ops_of(plan, "delete")}


def settle(w: World, history: RestartHistory | None = None, passes: int = 10) -> int:
    """Apply reconcile plans until one is empty; returns the number of non-empty passes."""
    history = history or RestartHistory()
    for i in range(passes):
        plan = reconcile(world_view(w), history, w.now)
        if not plan:
            return i
        for g in plan.groups:
            w.apply(g.ops)
            if isinstance(g.note, RestartNote):
                history.record(g.note)
    raise AssertionError("reconcile did not settle")


def world(svc: Obj, nodes: tuple[str, ...] = ("n1", "n2")) -> World:
    w = World(NOW)
    for n in nodes:
        w.put(Kind.NODE, make_node(n))
    w.put(Kind.SERVICE, svc)
    return w


# ---- scale up ------------------------------------------------------------------------------------------------
def test_scale_up_from_zero_creates_new_tasks_in_slots_1_to_n() -> None:
    svc = with_meta(make_service("web", 3))
    plan = reconcile(view([svc], []), RestartHistory(), NOW)
    new = created(plan)
    assert sorted(x["slot"] for x in new) == [1, 2, 3]
    for x in new:
        assert state_of(x) == TaskState.NEW and desired_of(x) == TaskState.RUNNING
        assert x["service_id"] == svc["id"] and x["spec"] == svc["spec"]["task"] and x["node_id"] is None


def test_scale_up_fills_lowest_free_slots_and_reuses_dead_ones() -> None:
    svc = with_meta(make_service("web", 4))
    tasks = [mk_task(svc, 1), mk_task(svc, 3),
             # slot 2 is dead: its only task was removed and is gone from the node
             mk_task(svc, 2, state="shutdown", desired="remove")]
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    assert sorted(x["slot"] for x in created(plan)) == [2, 4]


def test_runnable_slots_are_counted_not_tasks() -> None:
    svc = with_meta(make_service("web", 2))
    # Two runnable tasks share slot 1 (e.g. a partition): still only one occupied slot.
    tasks = [mk_task(svc, 1), mk_task(svc, 1, node="n2")]
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    assert [x["slot"] for x in created(plan)] == [2]


def test_reconcile_is_idempotent_once_written() -> None:
    svc = make_service("web", 5)
    w = world(svc)
    assert settle(w) == 1
    assert len(w.tasks()) == 5


# ---- scale down ----------------------------------------------------------------------------------------------
def removed_slots(plan: Plan, tasks: list[Obj]) -> set[int]:
    by_id = {x["id"]: x for x in tasks}
    return {by_id[i]["slot"] for i, d in desired_changes(plan).items() if d == "remove"}


def test_scale_down_takes_from_nodes_with_most_copies_first() -> None:
    svc = with_meta(make_service("web", 2))
    tasks = [mk_task(svc, 1, node="n1"), mk_task(svc, 2, node="n1"), mk_task(svc, 3, node="n1"),
             mk_task(svc, 4, node="n2")]
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    assert removed_slots(plan, tasks) == {2, 3}


def test_scale_down_prefers_non_running_tasks() -> None:
    svc = with_meta(make_service("web", 2))
    tasks = [mk_task(svc, 1, node="n1", state="starting"), mk_task(svc, 2, node="n1"),
             mk_task(svc, 3, node="n2"), mk_task(svc, 4, node="n2")]
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    # One from each node (balance); on n1 the non-running one, on n2 the higher slot.
    assert removed_slots(plan, tasks) == {1, 4}


def test_scale_down_ties_remove_higher_slots() -> None:
    svc = with_meta(make_service("web", 2))
    nodes = [make_node(f"n{i}") for i in range(1, 5)]
    tasks = [mk_task(svc, i, node=f"n{i}") for i in range(1, 5)]
    plan = reconcile(view([svc], tasks, nodes), RestartHistory(), NOW)
    assert removed_slots(plan, tasks) == {3, 4}


def test_scale_down_removes_unplaced_slots_first() -> None:
    svc = with_meta(make_service("web", 2))
    tasks = [mk_task(svc, 1, node="n1"), mk_task(svc, 2, node="n1"),
             mk_task(svc, 3, node=None, state="pending")]
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    assert removed_slots(plan, tasks) == {3}


def test_scale_down_sets_remove_never_deletes_running_tasks() -> None:
    svc = make_service("web", 3)
    w = world(svc)
    settle(w)
    for x in w.tasks():
        w.replace(Kind.TASK, {**x, "node_id": "n1", "status": task_status("running", NOW)})
    w.replace(Kind.SERVICE, scaled(svc, 1))
    settle(w)
    left = w.tasks()
    assert len(left) == 3  # still running: the agent must stop them before the reaper deletes them
    assert sorted(desired_of(x) for x in left) == sorted([TaskState.RUNNING, TaskState.REMOVE, TaskState.REMOVE])
    for x in left:
        if desired_of(x) == TaskState.REMOVE:
            w.replace(Kind.TASK, {**x, "status": task_status("shutdown", NOW)})
    settle(w)
    assert [desired_of(x) for x in w.tasks()] == [TaskState.RUNNING]


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 8), target=st.integers(0, 8),
       nodes=st.lists(st.sampled_from(["n1", "n2", "n3", None]), min_size=8, max_size=8))
def test_scale_reaches_exactly_the_replica_count(start: int, target: int, nodes: list[str | None]) -> None:
    svc = make_service("web", start)
    w = world(svc, ("n1", "n2", "n3"))
    settle(w)
    for x in w.tasks():  # place and run them somewhere
        node = nodes[x["slot"] - 1]
        state = "running" if node else "pending"
        w.replace(Kind.TASK, {**x, "node_id": node, "status": task_status(state, NOW)})
    w.replace(Kind.SERVICE, scaled(svc, target))
    settle(w)
    live = [x for x in w.tasks() if desired_of(x) <= TaskState.RUNNING]
    assert len(live) == target
    assert len({x["slot"] for x in live}) == target


# ---- deleted service -----------------------------------------------------------------------------------------
def test_tasks_of_a_deleted_service_get_desired_remove() -> None:
    svc = with_meta(make_service("web", 2))
    tasks = [mk_task(svc, 1), mk_task(svc, 2, state="assigned")]
    plan = reconcile(view([], tasks), RestartHistory(), NOW)
    assert set(desired_changes(plan).values()) == {"remove"} and len(desired_changes(plan)) == 2
    assert not deleted(plan)  # still possibly running: the reaper waits


# ---- restart supervisor --------------------------------------------------------------------------------------
def test_failed_task_is_shut_down_and_replaced_atomically() -> None:
    svc = with_meta(make_service("web", 1))
    old = mk_task(svc, 1, state="failed", ts=NOW - 1)
    plan = reconcile(view([svc], [old]), RestartHistory(), NOW)
    assert len(plan.groups) == 1  # one atomic group: old → SHUTDOWN + its replacement
    group = plan.groups[0].ops
    assert group[0]["object"]["id"] == old["id"] and group[0]["object"]["desired_state"] == "shutdown"
    repl = group[1]["object"]
    assert group[1]["op"] == "create" and repl["slot"] == 1 and desired_of(repl) == TaskState.READY
    assert plan.wake_at == NOW + 5.0  # default restart delay


def test_node_down_or_deleted_restarts_running_tasks() -> None:
    svc = with_meta(make_service("web", 2))
    tasks = [mk_task(svc, 1, node="n1"), mk_task(svc, 2, node="gone")]
    nodes = [set_node_state(make_node("n1"), "down", NOW), make_node("n2")]
    plan = reconcile(view([svc], tasks, nodes), RestartHistory(), NOW)
    assert desired_changes(plan) == {tasks[0]["id"]: "shutdown", tasks[1]["id"]: "shutdown"}
    assert sorted(x["slot"] for x in created(plan)) == [1, 2]
    assert all(desired_of(x) == TaskState.READY for x in created(plan))


def test_no_restart_while_node_is_only_disconnected() -> None:
    svc = with_meta(make_service("web", 1))
    nodes = [set_node_state(make_node("n1"), "disconnected", NOW)]
    plan = reconcile(view([svc], [mk_task(svc, 1)], nodes), RestartHistory(), NOW)
    assert not plan


def test_restart_condition_none_never_replaces_and_keeps_the_slot() -> None:
    svc = with_meta(make_service("web", 1, restart={"condition": "none"}))
    old = mk_task(svc, 1, state="failed")
    plan = reconcile(view([svc], [old]), RestartHistory(), NOW)
    assert desired_changes(plan) == {old["id"]: "shutdown"} and not created(plan)
    stopped = {**old, "desired_state": "shutdown"}
    assert not reconcile(view([svc], [stopped]), RestartHistory(), NOW)  # no scale-up "healing" either


def test_restart_on_failure_skips_complete_but_replaces_failed() -> None:
    svc = with_meta(make_service("web", 2, restart={"condition": "on-failure"}))
    done, failed = mk_task(svc, 1, state="complete"), mk_task(svc, 2, state="failed")
    plan = reconcile(view([svc], [done, failed]), RestartHistory(), NOW)
    assert [x["slot"] for x in created(plan)] == [2]
    assert desired_changes(plan) == {done["id"]: "shutdown", failed["id"]: "shutdown"}


def test_restart_any_replaces_complete_tasks() -> None:
    svc = with_meta(make_service("web", 1, restart={"condition": "any"}))
    plan = reconcile(view([svc], [mk_task(svc, 1, state="complete")]), RestartHistory(), NOW)
    assert [x["slot"] for x in created(plan)] == [1]


def test_drained_node_restarts_without_delay() -> None:
    svc = with_meta(make_service("web", 1))
    old = mk_task(svc, 1)
    nodes = [make_node("n1", availability="drain"), make_node("n2")]
    w_view = view([svc], [old], nodes)
    plan = reconcile(w_view, RestartHistory(), NOW)
    repl = with_meta(created(plan)[0], created_at=NOW)
    old2 = {**old, "desired_state": "shutdown"}
    go, _ = release(repl, [old2, repl], w_view.nodes, NOW)
    assert go is False  # no delay, but the old task still runs on the drained node: wait for it to stop
    go, _ = release(repl, [{**old2, "status": task_status("shutdown", NOW)}, repl], w_view.nodes, NOW)
    assert go is True


# ---- release gating: delay AND old task stopped ------------------------------------------------------------
def ready_pair(svc: Obj, *, old_state: str, old_ts: float, repl_created: float) -> tuple[Obj, Obj]:
    old = mk_task(svc, 1, state=old_state, desired="shutdown", created=0.0, ts=old_ts)
    repl = mk_task(svc, 1, state="assigned", desired="ready", node="n2", created=repl_created)
    return old, repl


def test_replacement_waits_for_the_restart_delay() -> None:
    svc = with_meta(make_service("web", 1, restart={"delay": 5}))
    old, repl = ready_pair(svc, old_state="failed", old_ts=NOW, repl_created=NOW)
    v = view([svc], [old, repl])
    plan = reconcile(v, RestartHistory(), NOW + 4.9)
    assert not plan.groups and plan.wake_at == NOW + 5
    plan = reconcile(v, RestartHistory(), NOW + 5)
    assert desired_changes(plan) == {repl["id"]: "running"}


def test_delay_counts_from_the_restart_not_the_old_status() -> None:
    svc = with_meta(make_service("web", 1, restart={"delay": 5}))
    # The old task's last status is old (it was RUNNING when its node went down); the replacement was only
    # created now, when the restart supervisor acted: the delay counts from then.
    old, repl = ready_pair(svc, old_state="failed", old_ts=NOW - 100, repl_created=NOW)
    plan = reconcile(view([svc], [old, repl]), RestartHistory(), NOW + 1)
    assert not plan.groups and plan.wake_at == NOW + 5


def test_replacement_waits_for_the_old_task_to_stop() -> None:
    svc = with_meta(make_service("web", 1, restart={"delay": 1}))
    old, repl = ready_pair(svc, old_state="running", old_ts=NOW, repl_created=NOW)
    v = view([svc], [old, repl])
    plan = reconcile(v, RestartHistory(), NOW + 2)
    assert not plan.groups and plan.wake_at == NOW + 1 + STOP_TIMEOUT
    # stops → released
    stopped = {**old, "status": task_status("shutdown", NOW + 2)}
    assert desired_changes(reconcile(view([svc], [stopped, repl]), RestartHistory(), NOW + 2)) == \
        {repl["id"]: "running"}
    # or its node goes down → released
    down = [set_node_state(make_node("n1"), "down", NOW), make_node("n2")]
    assert desired_changes(reconcile(view([svc], [old, repl], down), RestartHistory(), NOW + 2)) == \
        {repl["id"]: "running"}
    # or the 1-minute timeout passes → released anyway
    assert desired_changes(reconcile(v, RestartHistory(), NOW + 1 + STOP_TIMEOUT)) == {repl["id"]: "running"}


def test_failure_during_the_delay_waits_for_the_delay() -> None:
    svc = with_meta(make_service("web", 1, restart={"delay": 5}))
    old, repl = ready_pair(svc, old_state="failed", old_ts=NOW, repl_created=NOW)
    repl = {**repl, "status": task_status("rejected", NOW + 1)}
    plan = reconcile(view([svc], [old, repl]), RestartHistory(), NOW + 2)
    assert not plan.groups and plan.wake_at == NOW + 5
    plan = reconcile(view([svc], [old, repl]), RestartHistory(), NOW + 5)
    assert desired_changes(plan) == {repl["id"]: "shutdown"} and [x["slot"] for x in created(plan)] == [1]


def test_activation_re_arms_ready_tasks() -> None:
    # The previous orchestrator created a replacement and died: the first pass releases it when due.
    svc = with_meta(make_service("web", 1, restart={"delay": 2}))
    old, repl = ready_pair(svc, old_state="failed", old_ts=NOW - 10, repl_created=NOW - 10)
    assert desired_changes(reconcile(view([svc], [old, repl]), RestartHistory(), NOW)) == {repl["id"]: "running"}


# ---- max attempts and window ---------------------------------------------------------------------------------
def fail_and_restart(w: World, history: RestartHistory, step: float = 10.0) -> int:
    """Fail the live task of slot 1, reconcile; returns how many replacements exist afterwards."""
    w.now += step
    live = [x for x in w.tasks() if desired_of(x) <= TaskState.RUNNING]
    for x in live:
        w.replace(Kind.TASK, {**x, "node_id": "n1", "status": task_status("failed", w.now)})
    settle(w, history)
    return len(w.tasks()) - 1


def test_max_attempts_without_window() -> None:
    svc = make_service("web", 1, restart={"max_attempts": 2, "delay": 0})
    w = world(svc)
    history = RestartHistory()
    settle(w, history)
    assert [fail_and_restart(w, history) for _ in range(4)] == [1, 2, 2, 2]
    assert not [x for x in w.tasks() if desired_of(x) <= TaskState.RUNNING]  # gave up; slot kept, not healed


def test_max_attempts_window_slides() -> None:
    svc = make_service("web", 1, restart={"max_attempts": 2, "window": 30, "delay": 0})
    w = world(svc)
    history = RestartHistory()
    settle(w, history)
    assert [fail_and_restart(w, history, step=5) for _ in range(3)] == [1, 2, 2]
    # The plan asks to be woken when the oldest restart leaves the window; then the slot is refilled.
    plan = reconcile(world_view(w), history, w.now)
    assert plan.wake_at is not None and not plan.groups
    w.now = plan.wake_at
    settle(w, history)
    assert len([x for x in w.tasks() if desired_of(x) <= TaskState.RUNNING]) == 1


def test_restart_decision_history_resets_on_spec_version() -> None:
    svc = with_meta(make_service("web", 1, restart={"max_attempts": 1}))
    failed = mk_task(svc, 1, state="failed")
    h = RestartHistory()
    h.record(RestartNote((svc["id"], 1), 1, NOW, 1))
    assert restart_decision(failed, h, NOW) == (False, None)
    assert restart_decision({**failed, "spec_version": 2}, h, NOW) == (True, None)
    h.record(RestartNote((svc["id"], 1), 2, NOW, 1))
    assert h.slots[(svc["id"], 1)].total == 1 and h.slots[(svc["id"], 1)].spec_version == 2


def test_restart_note_only_when_attempts_are_limited() -> None:
    unlimited = with_meta(make_service("a", 1))
    limited = with_meta(make_service("b", 1, restart={"max_attempts": 3}))
    plan = reconcile(view([unlimited, limited], [mk_task(unlimited, 1, state="failed"),
                                                 mk_task(limited, 1, state="failed")]), RestartHistory(), NOW)
    notes = [g.note for g in plan.groups if g.note is not None]
    assert len(notes) == 1 and notes[0].key == (limited["id"], 1) and notes[0].max_attempts == 3


def test_history_is_rebuilt_from_tasks_on_activation() -> None:
    svc = with_meta(make_service("web", 1, restart={"max_attempts": 2}))
    tasks = [mk_task(svc, 1, state="failed", desired="shutdown", created=1.0),
             mk_task(svc, 1, state="failed", desired="shutdown", created=2.0),
             mk_task(svc, 1, state="failed", created=3.0)]
    h = RestartHistory.rebuild({svc["id"]: svc}, tasks)
    assert h.slots[(svc["id"], 1)].total == 2
    plan = reconcile(view([svc], tasks), h, NOW)
    assert not created(plan)  # max attempts already used before the failover


# ---- reaper --------------------------------------------------------------------------------------------------
def history_slot(svc: Obj, n_dead: int, *, live: bool = True) -> list[Obj]:
    tasks = [mk_task(svc, 1, state="failed", desired="shutdown", created=float(i)) for i in range(n_dead)]
    if live:
        tasks.append(mk_task(svc, 1, created=float(n_dead)))
    return tasks


def test_reaper_keeps_task_history_limit_per_slot_oldest_first() -> None:
    svc = with_meta(make_service("web", 1))
    tasks = history_slot(svc, 6)
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    assert deleted(plan) == {tasks[0]["id"], tasks[1]["id"]}  # 7 → 5 (the running one counts)


def test_reaper_limit_comes_from_the_cluster_object() -> None:
    svc = with_meta(make_service("web", 1))
    cluster = default_cluster()
    cluster["spec"]["orchestration"]["task_history_retention_limit"] = 2
    tasks = history_slot(svc, 3)
    assert len(deleted(reconcile(view([svc], tasks, cluster=cluster), RestartHistory(), NOW))) == 2
    cluster["spec"]["orchestration"]["task_history_retention_limit"] = -1
    assert not deleted(reconcile(view([svc], tasks, cluster=cluster), RestartHistory(), NOW))


def test_reaper_retention_covers_max_attempts() -> None:
    svc = with_meta(make_service("web", 1, restart={"max_attempts": 7}))
    tasks = history_slot(svc, 8)  # 9 tasks; retention max(5, 7 + 1) = 8
    assert deleted(reconcile(view([svc], tasks), RestartHistory(), NOW)) == {tasks[0]["id"]}


def test_reaper_never_deletes_possibly_running_history() -> None:
    svc = with_meta(make_service("web", 1))
    # Six old tasks still running on a partitioned node (desired shutdown, observed running): all kept.
    tasks = [mk_task(svc, 1, state="running", desired="shutdown", created=float(i)) for i in range(6)]
    tasks.append(mk_task(svc, 1, created=7.0, node="n2"))
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    assert not deleted(plan)


def test_reaper_deletes_removed_tasks_once_stopped_or_unassigned() -> None:
    svc = with_meta(make_service("web", 0))
    tasks = {s: mk_task(svc, i, state=s, desired="remove", node=None if s == "new" else "n1")
             for i, s in enumerate(["new", "pending", "assigned", "running", "complete", "shutdown", "failed"], 1)}
    plan = reconcile(view([svc], list(tasks.values())), RestartHistory(), NOW)
    assert deleted(plan) == {tasks[s]["id"] for s in ("new", "pending", "complete", "shutdown", "failed")}


def test_reaper_deletes_tasks_of_deleted_services_once_safe() -> None:
    svc = with_meta(make_service("web", 3))
    tasks = [mk_task(svc, 1, state="running", desired="remove"), mk_task(svc, 2, state="failed", desired="remove"),
             mk_task(svc, 3, state="pending", desired="remove", node=None),
             mk_task(svc, 4, state="running", desired="remove", node="deleted-node")]
    plan = reconcile(view([], tasks), RestartHistory(), NOW)
    assert deleted(plan) == {tasks[1]["id"], tasks[2]["id"], tasks[3]["id"]}


def test_plans_never_lower_desired_state() -> None:
    svc = with_meta(make_service("web", 0))
    tasks = [mk_task(svc, 1, desired="remove"), mk_task(svc, 2, desired="shutdown")]
    plan = reconcile(view([svc], tasks), RestartHistory(), NOW)
    before = {x["id"]: desired_of(x) for x in tasks}
    for i, d in desired_changes(plan).items():
        assert TaskState(d) >= before[i]


def test_groups_stay_small_so_big_plans_split_into_bounded_transactions() -> None:
    svc = with_meta(make_service("wide", 450))
    plan = reconcile(view([svc], []), RestartHistory(), NOW)
    assert len(plan.ops) == 450 and max(len(g.ops) for g in plan.groups) == 1


@settings(max_examples=40, deadline=None)
@given(states=st.lists(st.tuples(st.sampled_from(["new", "pending", "running", "failed", "complete", "shutdown"]),
                                  st.sampled_from(["ready", "running", "shutdown", "remove"]),
                                  st.integers(1, 6), st.sampled_from(["n1", "n2", "gone", None])),
                        max_size=12),
       replicas=st.integers(0, 6), deleted=st.booleans())
def test_reconcile_never_mutates_its_input(states: list[tuple[str, str, int, str | None]], replicas: int,
                                           deleted: bool) -> None:
    svc = with_meta(make_service("web", replicas, restart={"max_attempts": 2}))
    tasks = [mk_task(svc, slot, state=s, desired=d, node=n, created=float(i))
             for i, (s, d, slot, n) in enumerate(states)]
    v = view([] if deleted else [svc], tasks,
             [set_node_state(make_node("n1"), "down", NOW), make_node("n2", availability="drain")])
    frozen = copy.deepcopy(v)
    plan = reconcile(v, RestartHistory(), NOW)
    assert v == frozen
    # and every update expects the version it read, never lowers desired state, never touches status
    by_id = {x["id"]: x for x in tasks}
    for op in ops_of(plan, "update"):
        if op["kind"] == Kind.SERVICE:  # the update supervisor's status (two runnable tasks make a slot dirty)
            assert op["expect_version"] == svc["meta"]["version"]
            continue
        old = by_id[op["object"]["id"]]
        assert op["expect_version"] == old["meta"]["version"]
        assert desired_of(op["object"]) > desired_of(old)
        assert op["object"]["status"] == old["status"]


def test_job_history_is_never_trimmed_and_deleting_a_job_removes_its_tasks() -> None:
    job = with_meta(make_service("job", 1))
    job["spec"] = {**job["spec"], "mode": {"replicated_job": {"max_concurrent": 2, "total_completions": 2}}}
    done = mk_task(job, 0, state="complete", desired="complete")
    history = [mk_task(job, 1, state="complete", desired="complete", created=float(i)) for i in range(8)]
    for x in [done, *history]:
        x["job_iteration"] = 0
    plan = reconcile(view([job], [done, *history]), RestartHistory(), NOW)
    assert not plan  # both slots completed: nothing to create, restart or trim
    # ... but deleting such a service still removes (and then reaps) its tasks
    plan = reconcile(view([], [done]), RestartHistory(), NOW)
    assert desired_changes(plan) == {done["id"]: "remove"}
