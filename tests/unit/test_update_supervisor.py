"""The update supervisor (rolling updates, rollbacks, update_status) and the dirty check, over the pure core.

SwarmKit subtleties (semantics §5) by name: point 9 → `test_s5_9_*`, point 10 → `test_s5_10_*`."""

from __future__ import annotations

from typing import Any

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.dirty import slot_dirty, task_dirty
from shoal.planning.orchestrator.modes import UPDATE, make_task
from shoal.planning.orchestrator.restart import STOP_TIMEOUT, RestartHistory
from shoal.planning.orchestrator.updater import Config, failed
from tests.sim.cp_fakes import make_node, with_meta
from tests.unit.orchestrator_bench import Bench, service_of, set_env

FAST = {"monitor": 2.0}


def bench_with(n: int = 4, *, update: dict[str, Any] | None = None, rollback: dict[str, Any] | None = None,
               **kw: Any) -> tuple[Bench, str]:
    b = Bench()
    kw.setdefault("restart", {"delay": 1})
    svc = b.add(service_of("web", n, update={**FAST, **(update or {})}, rollback={**FAST, **(rollback or {})},
                           **kw))
    b.run(5, until=lambda: len(b.running(svc["id"])) == n)
    return b, svc["id"]


def new_version_tasks(b: Bench, sid: str) -> list[Obj]:
    version = b.service(sid)["spec_version"]
    return [x for x in b.tasks(sid) if x["spec_version"] == version]


# ---- dirty check (§5 point 10) -------------------------------------------------------------------------------
def placed(svc: Obj, node: str = "n1", **changes: Any) -> Obj:
    task = with_meta(make_task(svc, 1, 0.0))
    return {**task, "node_id": node, "status": task_status("running", 0.0), **changes}


def test_s5_10_constraint_only_change_is_clean_while_the_node_still_matches() -> None:
    svc = with_meta(service_of("web"))
    task = placed(svc)
    new = {**svc, "spec_version": 2, "spec": {**svc["spec"], "task": {
        **svc["spec"]["task"], "placement": {**svc["spec"]["task"]["placement"],
                                             "constraints": ["node.labels.zone==a"]}}}}
    assert not task_dirty(new, task, make_node("n1", labels={"zone": "a"}))
    assert task_dirty(new, task, make_node("n1", labels={"zone": "b"}))  # the node no longer matches
    assert task_dirty(new, task, None)  # no node: nothing to match


def test_s5_10_other_changes_alongside_constraints_are_dirty() -> None:
    svc = with_meta(service_of("web"))
    task = placed(svc)
    spec_task = {**svc["spec"]["task"], "placement": {**svc["spec"]["task"]["placement"],
                                                      "constraints": ["node.labels.zone==a"]},
                 "process": {**svc["spec"]["task"]["process"], "env": {"X": "1"}}}
    new = {**svc, "spec_version": 2, "spec": {**svc["spec"], "task": spec_task}}
    assert task_dirty(new, task, make_node("n1", labels={"zone": "a"}))


def test_s5_10_force_update_forces_a_redeploy() -> None:
    svc = with_meta(service_of("web"))
    task = placed(svc)
    new = {**svc, "spec_version": 2, "spec": {**svc["spec"], "task": {**svc["spec"]["task"], "force_update": 1}}}
    assert task_dirty(new, task, make_node("n1"))


def test_s5_10_endpoint_spec_is_compared_too() -> None:
    svc = with_meta(service_of("web"))
    task = placed(svc)
    endpoint = {"mode": "vip", "ports": [{"protocol": "tcp", "target_port": 80, "published_port": 8080,
                                          "publish_mode": "ingress"}]}
    new = {**svc, "spec_version": 2, "spec": {**svc["spec"], "endpoint": endpoint}}
    assert task_dirty(new, task, make_node("n1"))
    assert not task_dirty({**svc, "spec_version": 2}, task, make_node("n1"))  # same spec, newer version


def test_s5_10_same_spec_version_is_clean_without_comparing() -> None:
    svc = with_meta(service_of("web"))
    task = {**placed(svc), "spec": {"process": {"command": ["other"]}}}
    assert not task_dirty(svc, task, make_node("n1"))


def test_s5_10_a_slot_with_two_runnable_tasks_is_dirty() -> None:
    svc = with_meta(service_of("web"))
    assert slot_dirty(svc, [placed(svc), placed(svc, "n2")], {})
    assert not slot_dirty(svc, [placed(svc)], {"n1": make_node("n1")})


def test_s5_10_constraint_only_update_redeploys_nothing() -> None:
    b, sid = bench_with(2)
    b.node("n1", labels={"zone": "a"})
    b.node("n2", labels={"zone": "a"})
    before = {x["id"] for x in b.running(sid)}

    def constrain(spec: Obj) -> None:
        spec["task"]["placement"]["constraints"] = ["node.labels.zone==a"]
    b.update(sid, constrain)
    b.run(10)
    assert {x["id"] for x in b.running(sid)} == before
    assert b.status(sid) is None  # nothing dirty: no update ran at all


# ---- rolling update ------------------------------------------------------------------------------------------
def test_update_status_is_written_first_with_a_version_precondition() -> None:
    b, sid = bench_with(2)
    svc = b.update(sid, set_env("2"))
    plan = b.plan()
    ops = plan.ops
    assert len(ops) == 1 and ops[0]["kind"] == Kind.SERVICE
    assert ops[0]["expect_version"] == svc["meta"]["version"]
    status = ops[0]["object"]["update_status"]
    assert status["state"] == "updating" and status["message"] == "update in progress"
    assert status["started_at"] == b.now


def test_scale_only_change_starts_no_update() -> None:
    b, sid = bench_with(2)

    def scale(spec: Obj) -> None:
        spec["mode"] = {"replicated": {"replicas": 3}}
    b.update(sid, scale)
    b.run(5)
    assert b.status(sid) is None and len(b.running(sid)) == 3


def test_s5_9_parallelism_limits_the_slots_in_progress() -> None:
    b, sid = bench_with(4, update={"parallelism": 2})
    b.update(sid, set_env("2"))
    b.orchestrate()  # update_status
    plan = b.orchestrate()
    new = [o["object"] for o in plan.ops if o["op"] == "create"]
    assert len(new) == 2 and all(x["created_by"] == UPDATE for x in new)
    assert all(desired_of(x) == TaskState.READY for x in new)  # stop-first
    shut = [o["object"] for o in plan.ops if o["op"] == "update" and o["object"]["desired_state"] == "shutdown"]
    assert len(shut) == 2
    # Each new task is created in the same transaction (group) as the shutdown of the task it replaces.
    for g in plan.groups:
        kinds = sorted(o["op"] for o in g.ops)
        assert kinds == ["create", "update"]
    assert not b.orchestrate()  # both workers busy until their tasks run


def test_s5_9_parallelism_zero_means_every_dirty_slot_at_once() -> None:
    b, sid = bench_with(4, update={"parallelism": 0})
    b.update(sid, set_env("2"))
    b.orchestrate()
    plan = b.orchestrate()
    assert len([o for o in plan.ops if o["op"] == "create"]) == 4


def test_s5_9_a_missing_update_config_defaults_to_parallelism_one() -> None:
    assert Config.of({"spec": {}}, rollback=False) == Config(1, 0.0, "pause", 5.0, 0.0, "stop-first")
    b, sid = bench_with(3)
    svc = b.service(sid)
    spec = {k: v for k, v in svc["spec"].items() if k != "update_config"}
    b.put({**svc, "spec": spec})
    b.update(sid, set_env("2"))
    b.orchestrate()
    assert len([o for o in b.orchestrate().ops if o["op"] == "create"]) == 1


def test_rolling_update_replaces_every_slot_and_completes() -> None:
    b, sid = bench_with(4, update={"parallelism": 2})
    b.update(sid, set_env("2"))
    version = b.service(sid)["spec_version"]
    b.run(30, until=lambda: b.status(sid) == "completed")
    assert len(b.running(sid, version)) == 4 and len(b.live(sid)) == 4
    status = b.service(sid)["update_status"]
    assert status["message"] == "update completed" and status["completed_at"] >= status["started_at"]


def test_delay_between_batches() -> None:
    b, sid = bench_with(2, update={"delay": 3.0})
    b.update(sid, set_env("2"))
    b.run(10, until=lambda: len(new_version_tasks(b, sid)) == 2)
    first, second = sorted(new_version_tasks(b, sid), key=lambda x: x["meta"]["created_at"])
    assert second["meta"]["created_at"] - b.running_at[first["id"]] >= 3.0


def test_stop_first_new_task_waits_for_the_old_one_to_stop() -> None:
    b, sid = bench_with(1)
    old = b.running(sid)[0]
    b.update(sid, set_env("2"))
    b.orchestrate()
    b.orchestrate()
    new = new_version_tasks(b, sid)[0]
    assert desired_of(b.task(old["id"])) == TaskState.SHUTDOWN and desired_of(new) == TaskState.READY
    b.down.add(old["node_id"])  # the old task's agent does not answer (node still READY)
    b.schedule()
    b.agents()
    b.w.now += 1
    b.orchestrate()
    assert desired_of(b.task(new["id"])) == TaskState.READY  # old task may still run: not released
    b.w.now += STOP_TIMEOUT
    b.orchestrate()
    assert desired_of(b.task(new["id"])) == TaskState.RUNNING  # SwarmKit's one-minute limit


def test_stop_first_release_is_immediate_once_the_old_task_stopped() -> None:
    b, sid = bench_with(1, restart={"delay": 30})
    b.update(sid, set_env("2"))
    b.orchestrate()
    b.orchestrate()
    b.agents()  # the old task reports SHUTDOWN
    b.schedule()
    b.orchestrate()
    new = new_version_tasks(b, sid)[0]
    assert desired_of(b.task(new["id"])) == TaskState.RUNNING  # no restart delay for update tasks


def test_start_first_starts_the_new_task_before_stopping_the_old() -> None:
    b, sid = bench_with(1, update={"order": "start-first"})
    old = b.running(sid)[0]
    b.update(sid, set_env("2"))
    b.orchestrate()
    b.orchestrate()
    new = new_version_tasks(b, sid)[0]
    assert desired_of(new) == TaskState.RUNNING and desired_of(b.task(old["id"])) == TaskState.RUNNING
    b.schedule()
    b.orchestrate()
    assert desired_of(b.task(old["id"])) == TaskState.RUNNING  # the new task is not running yet
    b.agents()
    b.orchestrate()
    assert state_of(b.task(new["id"])) == TaskState.RUNNING
    assert desired_of(b.task(old["id"])) == TaskState.SHUTDOWN


# ---- failures ------------------------------------------------------------------------------------------------
def start_update(b: Bench, sid: str, value: str = "2") -> None:
    b.update(sid, set_env(value))
    b.orchestrate()
    b.orchestrate()


def test_s5_9_a_failure_before_running_pauses_the_update() -> None:
    b, sid = bench_with(3)
    start_update(b, sid)
    new = new_version_tasks(b, sid)[0]
    b.schedule()
    b.fail(new, TaskState.REJECTED)
    b.orchestrate()
    status = b.service(sid)["update_status"]
    assert status["state"] == "paused"
    assert status["message"] == f"update paused due to failure or early termination of task {new['id']}"


def test_s5_9_a_paused_update_stays_paused_until_the_spec_changes() -> None:
    b, sid = bench_with(3)
    start_update(b, sid)
    b.schedule()
    b.fail(new_version_tasks(b, sid)[0])
    b.run(20)
    assert b.status(sid) == "paused"
    assert len(new_version_tasks(b, sid)) == 2  # the failed task and its restart replacement: no new slots
    b.update(sid, set_env("3"))
    b.run(30, until=lambda: b.status(sid) == "completed")
    assert len(b.running(sid, b.service(sid)["spec_version"])) == 3


def test_s5_9_failures_count_only_within_monitor_after_running() -> None:
    seen = Seen(running_at={"t": 100.0}, since=0.0)
    task = {"id": "t", "desired_state": "running", "status": task_status("failed", 104.0),
            "meta": {"created_at": 90.0}}
    assert failed(task, 5.0, seen)
    assert not failed({**task, "status": task_status("failed", 106.0)}, 5.0, seen)
    assert not failed({**task, "status": task_status("shutdown", 101.0)}, 5.0, seen)  # asked to stop: not a failure


def test_s5_9_failure_of_a_task_never_seen_running() -> None:
    task = {"id": "t", "desired_state": "running", "status": task_status("failed", 200.0),
            "meta": {"created_at": 100.0}}
    assert failed(task, 5.0, Seen(since=150.0))  # failed while this leader watched: counts (SwarmKit too)
    # failed before this leader started watching, long after it was made: SwarmKit's new updater never knew it
    assert not failed(task, 5.0, Seen(since=250.0))
    assert failed({**task, "meta": {"created_at": 198.0}}, 5.0, Seen(since=250.0))  # within monitor of creation


def test_s5_9_a_task_that_ran_past_monitor_then_failed_does_not_count() -> None:
    b, sid = bench_with(2, update={"monitor": 2.0, "delay": 5.0})
    start_update(b, sid)
    b.run(3, until=lambda: len(b.running(sid, b.service(sid)["spec_version"])) == 1)
    first = b.running(sid, b.service(sid)["spec_version"])[0]
    b.run(3)
    b.fail(first)
    b.run(20, until=lambda: b.status(sid) in ("completed", "paused"))
    assert b.status(sid) == "completed"


def test_s5_9_failure_ratio_is_over_dirty_slots_and_strict() -> None:
    b, sid = bench_with(4, update={"parallelism": 0, "max_failure_ratio": 0.5})
    start_update(b, sid)
    b.schedule()
    new = new_version_tasks(b, sid)
    b.fail(new[0])
    b.fail(new[1])
    b.orchestrate()
    assert b.status(sid) == "updating"  # 2/4 is not > 0.5
    b.fail(new[2])
    b.orchestrate()
    assert b.status(sid) == "paused"  # 3/4 is


def test_s5_9_failures_count_only_tasks_created_by_this_update() -> None:
    b, sid = bench_with(3)
    start_update(b, sid)
    old = [x for x in b.running(sid) if x["spec_version"] == 1]
    b.fail(old[0])  # an old task failing is the restart supervisor's business
    b.orchestrate()
    assert b.status(sid) == "updating"
    # nor does a restart replacement at the new spec (it was not created by the update)
    b.run(3)
    repl = [x for x in new_version_tasks(b, sid) if x.get("created_by") == "restart"]
    assert repl
    b.fail(repl[0])
    b.orchestrate()
    assert b.status(sid) == "updating"


def test_failure_action_continue_ignores_failures() -> None:
    b, sid = bench_with(3, update={"failure_action": "continue"})
    start_update(b, sid)
    b.schedule()
    b.fail(new_version_tasks(b, sid)[0])
    b.run(40, until=lambda: b.status(sid) == "completed")
    assert len(b.running(sid, b.service(sid)["spec_version"])) == 3


def test_s5_9_failure_action_rollback_restores_the_previous_spec() -> None:
    b, sid = bench_with(3, update={"failure_action": "rollback"}, rollback={"parallelism": 0})
    original = b.service(sid)["spec"]
    start_update(b, sid)
    bad = new_version_tasks(b, sid)[0]
    b.schedule()
    b.fail(bad)
    b.orchestrate()
    svc = b.service(sid)
    assert svc["spec"] == original and svc["previous_spec"] is None  # automatic rollback clears it
    assert svc["spec_version"] == 3
    status = svc["update_status"]
    assert status["state"] == "rollback_started"
    assert status["message"] == f"update rolled back due to failure or early termination of task {bad['id']}"
    b.run(40, until=lambda: b.status(sid) == "rollback_completed")
    assert b.service(sid)["update_status"]["message"] == "rollback completed"
    live = b.running(sid)
    assert len(live) == 3 and all(x["spec"] == original["task"] for x in live)


def test_s5_9_a_rollback_never_rolls_back_again() -> None:
    b, sid = bench_with(3, update={"failure_action": "rollback"})
    start_update(b, sid)
    b.schedule()
    b.fail(new_version_tasks(b, sid)[0])
    b.orchestrate()
    assert b.status(sid) == "rollback_started"
    b.orchestrate()  # the rollback replaces the failed update's slot
    b.schedule()
    rb = [x for x in new_version_tasks(b, sid) if x.get("created_by") == UPDATE]
    assert rb
    b.fail(rb[0])
    b.orchestrate()
    svc = b.service(sid)
    assert svc["update_status"]["state"] == "rollback_paused"
    assert svc["update_status"]["message"].startswith("rollback paused due to failure")


def test_s5_9_manual_rollback_swaps_and_runs_with_the_rollback_config() -> None:
    b, sid = bench_with(3, rollback={"parallelism": 0})
    b.update(sid, set_env("2"))
    b.run(40, until=lambda: b.status(sid) == "completed")
    svc = b.service(sid)
    b.put({**svc, "spec": svc["previous_spec"], "previous_spec": svc["spec"], "spec_version": svc["spec_version"] + 1,
           "update_status": {"state": "rollback_started", "message": "manually requested rollback",
                             "started_at": b.now}})
    plan = b.orchestrate()
    assert len([o for o in plan.ops if o["op"] == "create"]) == 3  # rollback_config parallelism 0
    b.run(30, until=lambda: b.status(sid) == "rollback_completed")
    assert b.service(sid)["previous_spec"]["task"]["process"]["env"] == {"V": "2"}  # swapped, not cleared


def test_s5_9_monitoring_continues_after_the_last_slot() -> None:
    b, sid = bench_with(1, update={"monitor": 4.0})
    start_update(b, sid)
    b.run(5, until=lambda: len(b.running(sid, b.service(sid)["spec_version"])) == 1)
    ran = b.running(sid, b.service(sid)["spec_version"])[0]["status"]["timestamp"]
    b.run(10, until=lambda: b.status(sid) == "completed")
    assert b.service(sid)["update_status"]["completed_at"] >= ran + 4.0
    # ... and a failure during that time still counts
    b2, sid2 = bench_with(1, update={"monitor": 4.0})
    start_update(b2, sid2)
    b2.run(5, until=lambda: len(b2.running(sid2, b2.service(sid2)["spec_version"])) == 1)
    b2.w.now += 2
    b2.fail(b2.running(sid2, b2.service(sid2)["spec_version"])[0])
    b2.orchestrate()
    assert b2.status(sid2) == "paused"


def test_s5_9_a_new_spec_cancels_the_running_update() -> None:
    b, sid = bench_with(4)
    start_update(b, sid, "2")
    b.run(1)
    b.update(sid, set_env("3"))
    assert b.status(sid) is None
    b.run(60, until=lambda: b.status(sid) == "completed")
    version = b.service(sid)["spec_version"]
    assert len(b.running(sid, version)) == 4 and len(b.live(sid)) == 4
    assert all(x["spec"]["process"]["env"] == {"V": "3"} for x in b.running(sid))


def test_s5_9_a_failover_resumes_the_update_from_the_store() -> None:
    b, sid = bench_with(4, update={"parallelism": 1})
    start_update(b, sid)
    b.run(3)
    updated = len([x for x in b.running(sid) if x["spec_version"] == 2])
    assert 0 < updated < 4
    b.failover()  # a new orchestrator leader: nothing in memory
    b.run(60, until=lambda: b.status(sid) == "completed")
    assert len(b.running(sid, 2)) == 4
    assert len([x for x in b.tasks(sid) if x.get("created_by") == UPDATE]) == 4  # no slot updated twice


def test_update_never_has_two_runnable_tasks_in_a_slot_with_stop_first() -> None:
    b, sid = bench_with(4, update={"parallelism": 2})
    b.update(sid, set_env("2"))
    for _ in range(60):
        b.step()
        for slot in range(1, 5):
            live = [x for x in b.tasks(sid) if x["slot"] == slot and desired_of(x) == TaskState.RUNNING
                    and state_of(x) <= TaskState.RUNNING]
            assert len(live) <= 1


def test_reconcile_for_an_updating_service_without_dirty_slots_completes_at_once() -> None:
    svc = with_meta({**service_of("web", 0), "update_status": {"state": "updating", "started_at": 1.0}})
    plan = reconcile(View({svc["id"]: svc}, {}, {}), RestartHistory(), 10.0)
    [op] = plan.ops
    assert op["object"]["update_status"]["state"] == "completed"
