"""The verdicts of following a service (shoal/cli/progress.py, pure) and the plain renderer: converged only
when every task meant to run runs the current spec; paused and rolled-back updates, tasks pending with a reason
past the bound and repeated failures end the follow with the reason; old failures are history."""

from __future__ import annotations

import io
from typing import Any

import pytest

from shoal.cli.follow import PlainRenderer
from shoal.cli.progress import Tracker

SPEC = {"process": {"command": ["sleep", "300"]}}
NEW = {"process": {"command": ["sleep", "301"]}}


def service(replicas: int = 2, task: dict[str, Any] | None = None, update: str | None = None,
            message: str = "", mode: str = "replicated") -> dict[str, Any]:
    spec_mode = {"replicated": {"replicas": replicas}} if mode == "replicated" else {mode: {}}
    return {"id": "s1", "spec": {"name": "web", "mode": spec_mode, "task": task or SPEC},
            "status": {"desired": replicas, "running": 0, "completed": 0},
            "update_status": {"state": update, "message": message} if update else None}


def task(tid: str, slot: int, state: str, *, spec: dict[str, Any] | None = None, desired: str = "running",
         err: str | None = None, created: float = 1.0) -> dict[str, Any]:
    return {"id": tid, "service_id": "s1", "service_name": "web", "slot": slot, "node_id": "n1",
            "desired_state": desired, "spec": spec or SPEC, "meta": {"created_at": created},
            "status": {"state": state, "message": state, "err": err, "timestamp": created}}


def test_converged_only_when_every_slot_runs_the_current_spec() -> None:
    tr = Tracker()
    _, v = tr.observe(service(), [task("a", 1, "running"), task("b", 2, "preparing")], 0)
    assert (v.done, v.summary) == (False, "1/2 running")
    _, v = tr.observe(service(), [task("a", 1, "running"), task("b", 2, "running")], 1)
    assert (v.done, v.ok, v.summary) == (True, True, "2/2 running")
    # after an update: tasks of the previous spec do not count, nor while the update is in progress
    old = [task("a", 1, "running"), task("b", 2, "running")]
    _, v = Tracker().observe(service(task=NEW), old, 0)
    assert not v.done and v.summary == "0/2 running"
    _, v = Tracker().observe(service(task=NEW, update="updating"),
                             [task("c", 1, "running", spec=NEW, created=2), task("d", 2, "running", spec=NEW)], 0)
    assert not v.done and v.summary == "2/2 running (updating)"


def test_scaling_down_waits_for_the_extra_tasks_to_be_told_to_stop() -> None:
    tasks = [task("a", 1, "running"), task("b", 2, "running")]
    assert not Tracker().observe(service(replicas=1), tasks, 0)[1].done
    tasks[1]["desired_state"] = "shutdown"
    assert Tracker().observe(service(replicas=1), tasks, 0)[1].done


def test_a_paused_update_fails_naming_the_task_error() -> None:
    failed = task("t9abcdefgh", 1, "failed", spec=NEW, err="task: non-zero exit (3)", created=3)
    svc = service(task=NEW, update="paused",
                  message="update paused due to failure or early termination of task t9abcdefgh")
    _, v = Tracker().observe(svc, [failed, task("b", 2, "running")], 0)
    assert (v.done, v.ok) == (True, False)
    assert v.reason == ("web: update paused: update paused due to failure or early termination of task "
                        "t9abcdefgh (task web.1: task: non-zero exit (3))")


def test_an_automatic_rollback_fails_the_update_but_is_success_for_a_rollback() -> None:
    tasks = [task("a", 1, "running"), task("b", 2, "running"),
             task("f", 1, "failed", spec=NEW, err="task: non-zero exit (3)", created=0.5, desired="shutdown")]
    svc = service(update="rollback_completed", message="rollback completed")
    _, v = Tracker().observe(svc, tasks, 0)
    assert not v.ok and "the update was rolled back" in v.reason and "non-zero exit (3)" in v.reason
    _, v = Tracker(rollback=True).observe(svc, tasks, 0)
    assert (v.done, v.ok) == (True, True)


def test_a_task_pending_with_a_reason_past_the_bound_fails_saying_why() -> None:
    why = "no suitable node (scheduling constraints not satisfied on 2 nodes)"
    tr = Tracker(pending_bound=5)
    pending = [task("a", 1, "pending", err=why)]
    assert not tr.observe(service(1), pending, 100)[1].done
    assert not tr.observe(service(1), pending, 104)[1].done
    _, v = tr.observe(service(1), pending, 105)
    assert (v.done, v.ok) == (True, False)
    assert v.reason == f"web: task web.1 is still pending after 5s (the bound is 5s): {why}"
    # pending without a reason (the scheduler has not looked yet) is just progress
    assert not Tracker(pending_bound=0).observe(service(1), [task("a", 1, "pending")], 0)[1].done


def test_repeated_failures_of_the_current_spec_fail_but_old_ones_are_history() -> None:
    history = [task(f"old{i}", 1, "failed", err="boom", created=i) for i in range(5)]
    tr = Tracker(failure_limit=3)
    assert not tr.observe(service(1), [*history, task("a", 1, "starting", created=9)], 0)[1].done
    new = [task(f"new{i}", 1, "failed", err=f"task: non-zero exit ({i})", created=10 + i) for i in range(3)]
    _, v = tr.observe(service(1), [*history, *new], 1)
    assert not v.ok and v.reason == "web: 3 tasks failed (last: web.1: task: non-zero exit (2))"


def test_jobs_are_done_when_their_completions_are() -> None:
    svc = service(mode="replicated_job")
    svc["spec"]["mode"] = {"replicated_job": {"total_completions": 2}}
    svc["status"] = {"desired": 2, "running": 0, "completed": 1}
    assert not Tracker().observe(svc, [], 0)[1].done
    svc["status"]["completed"] = 2
    assert Tracker().observe(svc, [], 0)[1].done


def test_plain_output_prints_a_line_per_change() -> None:
    out = io.StringIO()
    r = PlainRenderer(out)
    tr = Tracker()
    for tasks in ([task("a", 1, "pending")], [task("a", 1, "pending")], [task("a", 1, "running")]):
        slots, v = tr.observe(service(1), tasks, 0)
        r.show("web", slots, v, {"n1": "host-1"})
    assert out.getvalue().splitlines() == ["  web.1: pending on host-1: pending", "web: 0/1 running",
                                           "  web.1: running on host-1: running", "web: 1/1 running"]


def test_a_global_service_without_tasks_is_done_once_it_had_time_to_get_some() -> None:
    svc = service(mode="global")
    svc["status"]["desired"] = 0
    tr = Tracker(pending_bound=5)
    assert not tr.observe(svc, [], 100)[1].done
    _, v = tr.observe(svc, [], 105)
    assert (v.done, v.ok, v.summary) == (True, True, "0/0 running (no eligible node)")


def test_following_rides_out_an_unavailable_gateway_but_not_for_ever() -> None:
    import httpx

    from shoal.cli.client import CliError, Gateway
    from shoal.cli.follow import NoRenderer, follow

    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503, json={"message": "no raft leader", "code": "unavailable"})
        if request.url.path == "/v1/services/web":
            return httpx.Response(200, json={**service(1), "status": {"desired": 1, "running": 1, "completed": 0}})
        return httpx.Response(200, json={"items": [task("a", 1, "running")] if "tasks" in request.url.path
                                         else [{"id": "n1", "description": {"hostname": "host-1"}}]})

    gw = Gateway("http://gw", httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gw"))
    out = io.StringIO()
    follow(gw, "web", Tracker(), NoRenderer(), out=out, sleep=lambda _: None)
    assert out.getvalue() == "verify: service web converged\n"

    clock = iter(range(0, 1000, 10))
    always = Gateway("http://gw", httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(503, json={"message": "no raft leader", "code": "unavailable"})),
        base_url="http://gw"))
    with pytest.raises(CliError, match="no raft leader"):
        follow(always, "web", Tracker(), NoRenderer(), out=out, sleep=lambda _: None, now=lambda: float(next(clock)))
