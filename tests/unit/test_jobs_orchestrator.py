"""Replicated and global jobs over the pure core. SwarmKit subtleties (semantics §5 point 16) by name:
`test_s5_16_*`."""

from __future__ import annotations

from typing import Any

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.specs import MAX_COUNT
from shoal.models.states import TaskState
from shoal.planning.orchestrator import jobs
from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import RestartHistory
from tests.sim.cp_fakes import make_node, with_meta
from tests.unit.orchestrator_bench import Bench, service_of, set_env


def rjob(concurrent: int, total: int) -> dict[str, Any]:
    return {"replicated_job": {"max_concurrent": concurrent, "total_completions": total}}


def job_bench(mode: dict[str, Any], nodes: tuple[str, ...] = ("n1", "n2"), **kw: Any) -> tuple[Bench, str]:
    b = Bench(nodes)
    kw.setdefault("restart", {"delay": 1})
    svc = b.add(service_of("batch", mode=mode, **kw))
    return b, svc["id"]


def current(b: Bench, sid: str) -> list[Obj]:
    it = b.service(sid)["job_status"]["job_iteration"]
    return [x for x in b.tasks(sid) if x.get("job_iteration") == it]


def running_now(b: Bench, sid: str) -> list[Obj]:
    return [x for x in current(b, sid) if state_of(x) == TaskState.RUNNING]


def completed(b: Bench, sid: str) -> list[Obj]:
    return [x for x in current(b, sid) if state_of(x) == TaskState.COMPLETE]


def finish_running(b: Bench, sid: str, state: TaskState = TaskState.COMPLETE) -> int:
    tasks = running_now(b, sid)
    for x in tasks:
        b.fail(x, state)
    return len(tasks)


def test_s5_16_slots_are_zero_based_and_tasks_carry_the_iteration() -> None:
    svc = with_meta(service_of("batch", mode=rjob(2, 5)))
    plan = reconcile(View({svc["id"]: svc}, {}, {"n1": make_node("n1")}), RestartHistory(), 10.0)
    new = [o["object"] for o in plan.ops]
    assert sorted(x["slot"] for x in new) == [0, 1]  # max_concurrent at a time
    assert all(x["job_iteration"] == 0 and desired_of(x) == jobs.create_state() for x in new)


def test_job_tasks_are_created_meant_to_complete_and_get_scheduled() -> None:
    b, sid = job_bench(rjob(1, 1))
    b.orchestrate()
    [task] = b.tasks(sid)
    assert desired_of(task) == TaskState.COMPLETE  # SwarmKit creates job tasks with desired COMPLETE
    b.schedule()
    assert state_of(b.task(task["id"])) >= TaskState.ASSIGNED


def test_job_tasks_left_with_desired_running_are_raised_to_complete_once_assigned() -> None:
    b, sid = job_bench(rjob(1, 1))
    b.orchestrate()
    [task] = b.tasks(sid)
    b.put({**task, "desired_state": str(TaskState.RUNNING)}, Kind.TASK)  # as an older orchestrator wrote them
    b.schedule()
    b.orchestrate()
    assert desired_of(b.task(task["id"])) == TaskState.COMPLETE


def test_replicated_job_completes_exactly_total_completions_max_concurrent_at_a_time() -> None:
    b, sid = job_bench(rjob(2, 5))
    for _ in range(40):
        b.step()
        assert len([x for x in current(b, sid) if state_of(x) <= TaskState.RUNNING
                    and desired_of(x) <= TaskState.COMPLETE]) <= 2
        finish_running(b, sid)
    assert len(completed(b, sid)) == 5
    assert sorted(x["slot"] for x in completed(b, sid)) == [0, 1, 2, 3, 4]
    assert len(b.tasks(sid)) == 5


def test_s5_16_completed_tasks_are_never_restarted_even_with_condition_any() -> None:
    b, sid = job_bench(rjob(1, 1), restart={"condition": "any", "delay": 0})
    b.run(3, until=lambda: bool(running_now(b, sid)))
    finish_running(b, sid)
    b.run(5)
    assert len(b.tasks(sid)) == 1 and len(completed(b, sid)) == 1


def test_a_failed_job_task_is_restarted_in_its_slot_and_released_to_complete() -> None:
    b, sid = job_bench(rjob(1, 1), restart={"delay": 1})
    b.run(3, until=lambda: bool(running_now(b, sid)))
    [first] = running_now(b, sid)
    b.fail(first)
    plan = b.orchestrate()
    [repl] = [o["object"] for o in plan.ops if o["op"] == "create"]
    assert repl["slot"] == 0 and desired_of(repl) == TaskState.READY and repl["job_iteration"] == 0
    b.run(5, until=lambda: desired_of(b.task(repl["id"])) == TaskState.COMPLETE)
    b.run(3, until=lambda: bool(running_now(b, sid)))
    finish_running(b, sid)
    b.run(2)
    assert len(completed(b, sid)) == 1 and len(b.tasks(sid)) == 2


def test_a_job_slot_whose_task_may_not_restart_stays_unfinished() -> None:
    b, sid = job_bench(rjob(2, 2), restart={"condition": "none"})
    b.run(3, until=lambda: len(running_now(b, sid)) == 2)
    one, two = running_now(b, sid)
    b.fail(one)
    b.fail(two, TaskState.COMPLETE)
    b.run(5)
    assert len(b.tasks(sid)) == 2  # the failed slot is not retried elsewhere


def test_s5_16_a_spec_update_removes_old_iteration_tasks_and_reruns_the_job() -> None:
    b, sid = job_bench(rjob(2, 3))
    b.run(3, until=lambda: len(running_now(b, sid)) == 2)
    done = running_now(b, sid)[0]
    b.fail(done, TaskState.COMPLETE)
    b.run(2, until=lambda: len(running_now(b, sid)) == 2)
    old_running = running_now(b, sid)
    b.update(sid, set_env("2"))
    assert b.service(sid)["job_status"]["job_iteration"] == 1
    b.orchestrate()
    for x in old_running:
        assert desired_of(b.task(x["id"])) == TaskState.REMOVE
    assert desired_of(b.task(done["id"])) < TaskState.REMOVE  # finished history stays
    for _ in range(40):
        b.step()
        finish_running(b, sid)
    assert len(completed(b, sid)) == 3 and all(x["job_iteration"] == 1 for x in completed(b, sid))


def test_s5_16_the_reaper_keeps_job_history() -> None:
    b, sid = job_bench(rjob(1, 8))
    for _ in range(60):
        b.step()
        finish_running(b, sid)
    assert len(completed(b, sid)) == 8 and len(b.tasks(sid)) == 8  # above the retention limit of 5


def test_s5_16_huge_counts_do_not_overflow_or_explode() -> None:
    svc = with_meta(service_of("huge", mode=rjob(MAX_COUNT, MAX_COUNT)))
    plan = reconcile(View({svc["id"]: svc}, {}, {"n1": make_node("n1")}), RestartHistory(), 10.0)
    assert len(plan.ops) == jobs.MAX_NEW_PER_PASS


def test_replicated_job_task_on_a_drained_node_is_restarted_elsewhere() -> None:
    b, sid = job_bench(rjob(2, 2))
    b.run(3, until=lambda: len(running_now(b, sid)) == 2)
    b.node("n1", availability="drain")
    b.run(5, until=lambda: len(running_now(b, sid)) == 2 and all(x["node_id"] == "n2" for x in running_now(b, sid)))


def test_global_job_runs_once_to_completion_on_every_eligible_node() -> None:
    b, sid = job_bench({"global_job": {}}, nodes=("n1", "n2", "n3"))
    b.node("n3", availability="pause")
    b.run(3, until=lambda: len(running_now(b, sid)) == 2)
    assert sorted(x["node_id"] for x in current(b, sid)) == ["n1", "n2"]
    finish_running(b, sid)
    b.run(3)
    assert len(completed(b, sid)) == 2 and len(b.tasks(sid)) == 2  # done: never re-run
    b.add_node("n4")
    b.node("n3", availability="active")
    b.run(3, until=lambda: len(running_now(b, sid)) == 2)
    assert sorted(x["node_id"] for x in running_now(b, sid)) == ["n3", "n4"]


def test_global_job_task_on_a_drained_node_is_shut_down() -> None:
    b, sid = job_bench({"global_job": {}})
    b.run(3, until=lambda: len(running_now(b, sid)) == 2)
    b.node("n1", availability="drain")
    b.run(3)
    live = [x for x in current(b, sid) if desired_of(x) <= TaskState.COMPLETE]
    assert [x["node_id"] for x in live] == ["n2"]
