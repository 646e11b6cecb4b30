"""SwarmKit's restart and slot subtleties (semantics §5 points 2 and 3) by name, drain and health-check failures,
over the pure core with fake agents."""

from __future__ import annotations

from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import RestartHistory
from tests.sim.cp_fakes import make_node, with_meta
from tests.unit.orchestrator_bench import Bench, service_of


def replicated(b: Bench, n: int, **kw: object) -> str:
    svc = b.add(service_of("web", n, **kw))  # type: ignore[arg-type]
    b.run(5, until=lambda: len(b.running(svc["id"])) == n)
    return str(svc["id"])


def in_slot(b: Bench, sid: str, slot: int) -> list[Obj]:
    return [x for x in b.tasks(sid) if x["slot"] == slot]


# ---- §5 point 2: no restart of a task ------------------------------------------------------------------------
def test_s5_2_a_restart_is_a_new_task_in_the_same_slot() -> None:
    b = Bench()
    sid = replicated(b, 1, restart={"delay": 2})
    [old] = b.running(sid)
    b.fail(old)
    b.orchestrate()
    old_now, new = sorted(in_slot(b, sid, old["slot"]), key=lambda x: x["meta"]["created_at"])
    assert old_now["id"] == old["id"] and state_of(old_now) == TaskState.FAILED  # never revived
    assert desired_of(old_now) == TaskState.SHUTDOWN
    assert new["id"] != old["id"] and desired_of(new) == TaskState.READY and state_of(new) == TaskState.NEW


def test_s5_2_the_replacement_waits_for_the_old_task_to_stop() -> None:
    b = Bench()
    sid = replicated(b, 1, restart={"delay": 2})
    [old] = b.running(sid)
    b.down.add(old["node_id"])  # its agent is slow to answer: the old task still runs
    b.node(old["node_id"], availability="drain")
    b.orchestrate()
    [new] = [x for x in in_slot(b, sid, old["slot"]) if x["id"] != old["id"]]
    b.w.now += 5
    b.orchestrate()
    assert desired_of(b.task(new["id"])) == TaskState.READY  # no delay on a drain, but the old one runs
    b.down.discard(old["node_id"])
    b.agents()  # the old task reports SHUTDOWN
    b.orchestrate()
    assert desired_of(b.task(new["id"])) == TaskState.RUNNING


def test_s5_2_the_delay_applies_when_a_task_fails_before_running() -> None:
    b = Bench()
    svc = b.add(service_of("web", 1, restart={"delay": 3}))
    b.orchestrate()
    b.schedule()
    [first] = b.tasks(svc["id"])
    b.fail(first, TaskState.REJECTED)  # never reached RUNNING
    b.orchestrate()
    [repl] = [x for x in b.tasks(svc["id"]) if x["id"] != first["id"]]
    b.w.now += 2.9
    b.orchestrate()
    assert desired_of(b.task(repl["id"])) == TaskState.READY
    b.w.now += 0.2
    b.orchestrate()
    assert desired_of(b.task(repl["id"])) == TaskState.RUNNING


def test_health_check_failure_is_restarted_like_any_failure() -> None:
    b = Bench()
    svc = service_of("web", 1, restart={"delay": 1})
    svc["spec"]["task"]["process"]["healthcheck"] = {"test": ["CMD", "false"], "interval": 0.1, "retries": 1}
    sid = b.add(svc)["id"]
    b.orchestrate()
    b.schedule()
    [task] = b.tasks(sid)
    # The agent holds the task in STARTING until healthy; an unhealthy task fails from there (SwarmKit: FAILED).
    starting = {**b.task(task["id"]), "status": task_status(TaskState.STARTING, b.now)}
    b.w.apply([{"op": "update", "kind": "task", "object": starting}])
    unhealthy = {**b.task(task["id"]), "status": task_status(TaskState.FAILED, b.now, "unhealthy",
                                                             err="task: unhealthy container")}
    b.w.apply([{"op": "update", "kind": "task", "object": unhealthy}])
    b.run(5, until=lambda: len(b.running(sid)) == 1)
    assert b.running(sid)[0]["id"] != task["id"]
    assert desired_of(b.task(task["id"])) == TaskState.SHUTDOWN


# ---- drain ---------------------------------------------------------------------------------------------------
def test_drained_tasks_are_restarted_elsewhere_without_the_delay() -> None:
    b = Bench()
    sid = replicated(b, 2, restart={"delay": 30})
    b.node("n1", availability="drain")
    b.run(3, until=lambda: len(b.running(sid)) == 2 and all(x["node_id"] == "n2" for x in b.running(sid)))


# ---- §5 point 3: slots are implicit --------------------------------------------------------------------------
def mk(svc: Obj, slot: int, state: str = "running", desired: str = "running", node: str | None = "n1",
       created: float = 0.0) -> Obj:
    from shoal.planning.orchestrator.modes import make_task
    task = {**make_task(svc, slot, created), "desired_state": desired, "node_id": node,
            "status": task_status(state, created)}
    return with_meta(task, created_at=created)


def plan_for(svc: Obj, tasks: list[Obj]) -> list[dict[str, object]]:
    nodes = {n: make_node(n) for n in ("n1", "n2")}
    return reconcile(View({svc["id"]: svc}, {x["id"]: x for x in tasks}, nodes), RestartHistory(), 10.0).ops


def test_s5_3_slot_numbers_may_be_noncontiguous() -> None:
    svc = with_meta(service_of("web", 3))
    ops = plan_for(svc, [mk(svc, 2), mk(svc, 7), mk(svc, 9)])
    assert not ops  # three occupied slots: nothing to do, nothing renumbered


def test_s5_3_several_tasks_may_share_a_slot_and_count_once() -> None:
    svc = with_meta(service_of("web", 2))
    ops = plan_for(svc, [mk(svc, 1), mk(svc, 1, node="n2")])  # e.g. a partition, or start-first
    assert [o["object"]["slot"] for o in ops if o["op"] == "create"] == [2]  # type: ignore[index]


def test_s5_3_dead_slots_are_reused_keeping_their_history() -> None:
    svc = with_meta(service_of("web", 2, restart={"condition": "on-failure"}))
    dead = mk(svc, 1, state="failed", desired="remove")
    ops = plan_for(svc, [dead, mk(svc, 3)])
    assert [o["object"]["slot"] for o in ops if o["op"] == "create"] == [1]  # type: ignore[index]


def test_s5_3_scale_down_balances_nodes_then_prefers_non_running_then_higher_slots() -> None:
    svc = with_meta(service_of("web", 2))
    tasks = [mk(svc, 1, node="n1"), mk(svc, 2, node="n1"), mk(svc, 3, node="n1"), mk(svc, 4, node="n2"),
             mk(svc, 5, node="n2", state="starting")]
    ops = plan_for(svc, tasks)
    removed = sorted(o["object"]["slot"] for o in ops  # type: ignore[index]
                     if o["op"] == "update" and o["object"]["desired_state"] == "remove")  # type: ignore[index]
    # n1 has 3 copies, n2 has 2: keep one per node (slot 1 on n1; the running slot 4 on n2)
    assert removed == [2, 3, 5]
