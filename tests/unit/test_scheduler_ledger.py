"""The scheduler's `Ledger` (issue 13): fed only the tasks that change, it knows each node exactly as
`nodeinfo.build` does from every task, and a pass planned from it equals the full pass over all tasks —
across random creates, state moves, reassignments, reservations, host ports, generic resources and deletes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.clock import FakeClock
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, new_task, task_status
from shoal.planning.scheduler import core, nodeinfo
from shoal.planning.scheduler.ledger import Ledger
from shoal.planning.scheduler.nodeinfo import FailureLog, NodeInfo
from shoal.store.local import LocalStore
from shoal.store.mirror import StoreMirror
from tests.sim.cp_fakes import GiB, make_node, make_service, with_meta

NOW = 1000.0
STATES = ["new", "pending", "assigned", "accepted", "preparing", "starting", "running", "complete", "failed",
          "shutdown", "rejected"]
DESIRED = ["ready", "running", "complete", "shutdown", "remove"]


def services() -> list[Obj]:
    plain = make_service("plain", 1)
    big = make_service("big", 1)
    big["spec"]["task"]["resources"]["reservations"].update({"nano_cpus": 1_000_000_000, "memory_bytes": GiB})
    gpu = make_service("gpu", 1)
    gpu["spec"]["task"]["resources"]["reservations"]["generic"] = [{"kind": "gpu", "value": 1}]
    return [plain, big, gpu]


def nodes() -> list[Obj]:
    out = [make_node(f"n{i}", cpus=2, memory=4 * GiB) for i in range(4)]
    out[0]["description"]["resources"]["generic"] = [{"kind": "gpu", "named": ["G0", "G1", "G2"]}]
    out[1]["description"]["resources"]["generic"] = {"gpu": 2}
    return out


class World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.services = services()
        self.nodes = nodes()
        self.tasks: dict[str, Obj] = {}
        self.n = 0

    def task(self, tid: str | None = None) -> Obj:
        r = self.rng
        svc = r.choice(self.services)
        if tid is None:
            self.n += 1
            tid = f"t{self.n:04d}"
        x = new_task(svc, r.randrange(1, 6), NOW, ids=lambda: tid)
        x["status"] = task_status(r.choice(STATES), NOW - r.choice([1, 100, 400]))
        x["desired_state"] = r.choice(DESIRED)
        x["node_id"] = r.choice([None, "n0", "n1", "n2", "n3", "gone"])
        if r.random() < 0.2:
            x["endpoint"] = {"ports": [{"protocol": "tcp", "target_port": 80, "published_port": r.choice([80, 81]),
                                        "publish_mode": "host"}]}
        if svc["spec"]["task"]["resources"]["reservations"].get("generic") and r.random() < 0.7:
            x["assigned_generic_resources"] = [{"kind": "gpu", "named": [r.choice(["G0", "G1", "G2"])]}]
        return with_meta(x, created_at=NOW)

    def step(self) -> tuple[str, Obj | None]:
        r = self.rng
        roll = r.random()
        if roll < 0.5 or not self.tasks:
            x = self.task()
        elif roll < 0.85:
            x = self.task(r.choice(sorted(self.tasks)))
        else:
            tid = r.choice(sorted(self.tasks))
            del self.tasks[tid]
            return tid, None
        self.tasks[x["id"]] = x
        return x["id"], x


def same_info(a: NodeInfo, b: NodeInfo) -> None:
    for f in ("id", "nano_cpus", "memory_bytes", "generic", "named", "active_by_service", "active", "host_ports",
              "failures", "ready"):
        assert getattr(a, f) == getattr(b, f), f


def sorted_ops(plan: Any) -> list[Obj]:
    return sorted((op for g in plan.groups for op in g.ops), key=lambda op: op["object"]["id"])


@pytest.mark.parametrize("seed", range(40))
def test_ledger_equals_a_full_build_and_its_plan_the_full_plan(seed: int) -> None:
    w = World(seed)
    ledger = Ledger()
    log = FailureLog()
    for _ in range(w.rng.randrange(20, 120)):
        tid, task = w.step()
        ledger.update(tid, task)
        if w.rng.random() < 0.2:  # a pass now and then
            failures = log.observe(list(w.tasks.values()), NOW)
            full = nodeinfo.build(w.nodes, list(w.tasks.values()), NOW, failures=failures)
            inc = ledger.infos(w.nodes, failures)
            assert list(full) == list(inc)
            for nid in full:
                same_info(full[nid], inc[nid])
            want, want_d = core.plan(list(w.tasks.values()), w.nodes, NOW, failures=failures)
            got, got_d = core.plan_pending(list(ledger.pending.values()), list(ledger.doomed.values()), w.nodes,
                                           NOW, infos=ledger.infos(w.nodes, failures))
            assert sorted_ops(got) == sorted_ops(want)
            assert sorted(got_d, key=lambda d: d.task_id) == sorted(want_d, key=lambda d: d.task_id)
    again = Ledger()
    again.rebuild(w.tasks.values())
    assert again.tracked == ledger.tracked
    assert again.pending == ledger.pending and again.doomed == ledger.doomed


def test_a_pass_with_nothing_pending_places_nothing_and_reads_no_task() -> None:
    """The shell's pass over a change set: what changed is all it reads (a full pass only when told None)."""
    store = LocalStore()
    sched = Scheduler(store, None, FakeClock(NOW), SchedulerSettings())
    mirror = StoreMirror(store, Scheduler.kinds, track_changes=True)
    svc = make_service("web", 1)
    running = {f"r{i}": with_meta({**new_task(svc, i, NOW, ids=lambda i=i: f"r{i}"), "node_id": "n0",
                                   "status": task_status("running", NOW)}, version=3) for i in range(50)}
    mirror.objects[Kind.TASK].update(running)
    mirror.objects[Kind.NODE]["n0"] = with_meta(make_node("n0"), version=1)
    assert not sched.plan(mirror, NOW, None)  # full pass: nothing pending
    assert sched.ledger.loads["n0"].active == 50

    class Exploding(dict[str, Obj]):
        def values(self) -> Any:
            raise AssertionError("an incremental pass walked every task")

    mirror.objects[Kind.TASK] = Exploding(running)
    fresh = with_meta({**new_task(svc, 99, NOW, ids=lambda: "p1"), "status": task_status("pending", NOW)}, version=2)
    mirror.objects[Kind.TASK]["p1"] = fresh
    out = sched.plan(mirror, NOW + 1, {Kind.TASK: {"p1"}, Kind.NODE: set()})
    [op] = [op for g in out.groups for op in g.ops]
    assert op["object"]["id"] == "p1" and op["object"]["node_id"] == "n0"
    mirror.objects[Kind.TASK]["p1"] = with_meta(op["object"], version=3)  # the write landed
    assert not sched.plan(mirror, NOW + 2, {Kind.TASK: {"p1"}, Kind.NODE: set()})
    assert sched.ledger.loads["n0"].active == 51 and not sched.ledger.pending
