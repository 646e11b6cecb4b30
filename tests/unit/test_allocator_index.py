"""The allocator's `TaskIndex` (issue 13): fed only the tasks that change, a pass planned from it (the tasks
that want an allocation, the addresses the others hold) equals the pass over every task, through random
creates, allocations, state moves, failures and deletes on two networks — and a pass over a change set reads
no other task."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.allocator.core import AllocatorState, plan
from services.allocator.index import TaskIndex
from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from shoal.clock import FakeClock
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, new_task, task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.mirror import StoreMirror
from tests.sim.cp_fakes import World
from tests.unit.test_allocator_network import network, service, tick

STATES = ["new", "pending", "assigned", "running", "failed", "shutdown"]


def full_plan(w: World) -> Any:
    tasks = w.mem.list(Kind.TASK)
    state = AllocatorState.build(tasks, w.mem.list(Kind.NETWORK), w.mem.list(Kind.SERVICE))
    return plan(tasks, state, w.now, limit=7)


def index_plan(w: World, index: TaskIndex) -> Any:
    state = AllocatorState.build((), w.mem.list(Kind.NETWORK), w.mem.list(Kind.SERVICE), holds=index.holds())
    return plan(index.oldest_first(), state, w.now, limit=7, ordered=True)


@pytest.mark.parametrize("seed", range(15))
def test_a_pass_from_the_index_equals_the_full_pass(seed: int) -> None:
    rng = random.Random(seed)
    w = World()
    a, b = network(w, "a"), network(w, "b")
    svcs = [service(w, "both", networks=(a["id"], b["id"])), service(w, "one", networks=(a["id"],)),
            service(w, "none")]
    index = TaskIndex()
    for step in range(60):
        changed: set[str] = set()
        roll = rng.random()
        tasks = w.mem.list(Kind.TASK)
        if roll < 0.4 or not tasks:
            svc = w.mem.get(Kind.SERVICE, rng.choice(svcs)["id"])
            x = w.put(Kind.TASK, new_task(svc, rng.randrange(1, 9), w.now), at=tick())
            changed.add(x["id"])
        elif roll < 0.8:
            x = dict(rng.choice(tasks))
            x["status"] = task_status(rng.choice(STATES), w.now)
            x["desired_state"] = rng.choice(["running", "running", "shutdown"])
            w.apply([t.update(Kind.TASK, x)])
            changed.add(x["id"])
        else:
            x = rng.choice(tasks)
            w.apply([t.delete(Kind.TASK, x["id"])])
            changed.add(x["id"])
        for tid in changed:
            index.update(tid, next((x for x in w.mem.list(Kind.TASK) if x["id"] == tid), None))
        want, got = full_plan(w), index_plan(w, index)
        assert got.ops == want.ops, step
        if got.ops and rng.random() < 0.7:  # the pass's writes land (and are changes of the next)
            res = w.apply(got.ops)
            for obj in res.objects:
                if "status" in obj:  # a task (the networks' subnets are written too)
                    index.update(obj["id"], obj)
    again = TaskIndex()
    again.rebuild(w.mem.list(Kind.TASK))
    assert again.held == index.held and again.wanting == index.wanting


def test_tasks_that_need_nothing_cost_nothing() -> None:
    store = LocalStore()
    alloc = Allocator(store, None, FakeClock(1000.0), AllocatorSettings())
    mirror = StoreMirror(store, Allocator.kinds, track_changes=True)
    w = World()
    svc = service(w, "plain")
    running = {}
    for i in range(100):
        x = new_task(svc, i, w.now)
        x["status"] = task_status("running", w.now)
        running[x["id"]] = {**x, "meta": {"version": 5, "created_at": 1.0}}
    mirror.objects[Kind.TASK].update(running)
    mirror.objects[Kind.SERVICE][svc["id"]] = {**svc, "endpoint": {"spec": {"mode": "vip", "ports": []},
                                                                   "ports": [], "virtual_ips": []}}
    assert not alloc.plan(mirror, 1000.0, None)
    assert not alloc.index.wanting and not alloc.index.held

    class Exploding(dict[str, Obj]):
        def values(self) -> Any:
            raise AssertionError("an incremental pass walked every task")

    mirror.objects[Kind.TASK] = Exploding(running)
    fresh = {**new_task(svc, 200, w.now), "meta": {"version": 1, "created_at": 2.0}}
    mirror.objects[Kind.TASK][fresh["id"]] = fresh
    [op] = alloc.plan(mirror, 1001.0, {Kind.TASK: {fresh["id"]}}).ops
    assert op["object"]["id"] == fresh["id"] and op["object"]["status"]["state"] == "pending"
