"""The allocator's pure core: NEW → PENDING, voting, bounded passes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocator.core import (
    PENDING_MESSAGE,
    Allocation,
    AllocatorState,
    Deferred,
    allocate,
    plan,
)
from shoal.models.objects import Obj, new_task, task_status
from tests.sim.cp_fakes import make_service, with_meta

NOW = 1000.0


def task(state: str = "new", desired: str = "running", created: float = 0.0) -> Obj:
    x = new_task(make_service("web", 1), 1, created)
    x["status"] = task_status(state, created)
    x["desired_state"] = desired
    return with_meta(x, created_at=created)


def test_new_tasks_become_pending_with_swarmkit_message() -> None:
    x = task()
    out = plan([x], AllocatorState(), NOW)
    [op] = out.ops
    assert op["op"] == "update" and op["expect_version"] == x["meta"]["version"]
    status = op["object"]["status"]
    assert status["state"] == "pending" and status["message"] == PENDING_MESSAGE and status["timestamp"] == NOW


def test_only_new_tasks_meant_to_run_are_allocated() -> None:
    tasks = [task("pending"), task("running"), task("new", desired="shutdown"), task("new", desired="remove"),
             task("new", desired="ready")]
    out = plan(tasks, AllocatorState(), NOW)
    assert [o["object"]["id"] for o in out.ops] == [tasks[4]["id"]]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 500), limit=st.integers(1, 250))
def test_a_pass_is_bounded_and_takes_oldest_first(n: int, limit: int) -> None:
    tasks = [task(created=float(n - i)) for i in range(n)]
    out = plan(tasks, AllocatorState(), NOW, limit=limit)
    assert len(out.ops) == min(n, limit)
    times = [o["object"]["meta"]["created_at"] for o in out.ops]
    assert times == sorted(times)
    assert times == sorted(x["meta"]["created_at"] for x in tasks)[: len(times)]


def test_voters_all_agree_or_the_task_waits_with_a_reason() -> None:
    def network(x: Obj, state: AllocatorState) -> Allocation | Deferred:
        return Allocation({"networks": [{"addresses": ["10.0.0.2/24"]}]})

    def ports(x: Obj, state: AllocatorState) -> Allocation | Deferred:
        return Deferred("no free ingress port")

    x = task()
    assert allocate(x, AllocatorState(), [network]) == Allocation({"networks": [{"addresses": ["10.0.0.2/24"]}]})
    assert allocate(x, AllocatorState(), [network, ports]) == Deferred("no free ingress port")
    out = plan([x], AllocatorState(), NOW, voters=[network, ports])
    [op] = out.ops
    assert op["object"]["status"]["state"] == "new" and op["object"]["status"]["err"] == "no free ingress port"
    # the reason is written once, not on every pass
    assert not plan([op["object"]], AllocatorState(), NOW, voters=[network, ports])
    out = plan([x], AllocatorState(), NOW, voters=[network])
    assert out.ops[0]["object"]["networks"] == [{"addresses": ["10.0.0.2/24"]}]
