"""The orchestrator's skipped passes (issue 13): from a full pass that planned nothing, any sequence of changes
`quiet.benign` accepts leaves a full pass with nothing to plan (and the same timer) — so skipping it changes no
decision. Random worlds: replicated and global services, restarts, a rolling update run to completion, paused
updates, tasks moving forward, failing, being assigned to good, drained and down nodes, clocks moving."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.enforcer import NodeChecked, version_of
from shoal.planning.orchestrator.modes import UPDATE
from shoal.planning.orchestrator.quiet import TaskMarks, benign
from shoal.planning.orchestrator.restart import RestartHistory, RestartNote, status_time
from shoal.store import txn as t
from tests.sim.cp_fakes import World, make_node, respec, service_of, set_env, set_node_state

ORDER = [TaskState.NEW, TaskState.PENDING, TaskState.ASSIGNED, TaskState.ACCEPTED, TaskState.PREPARING,
         TaskState.READY, TaskState.STARTING, TaskState.RUNNING]


class Shell:
    """What services/orchestrator/loop.py keeps between passes, over a World."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.history = RestartHistory()
        self.running_at: dict[str, float] = {}
        self.checked: dict[str, int] = {}
        self.marks = TaskMarks()
        self.marks.rebuild(w.mem.list(Kind.TASK))

    def view(self) -> View:
        w = self.w
        return View({s["id"]: s for s in w.mem.list(Kind.SERVICE)}, {x["id"]: x for x in w.mem.list(Kind.TASK)},
                    {n["id"]: n for n in w.mem.list(Kind.NODE)})

    def observe(self, task: Obj) -> None:
        if task.get("created_by") == UPDATE and state_of(task) == TaskState.RUNNING:
            self.running_at.setdefault(task["id"], status_time(task))

    def reconcile(self) -> Any:
        v = self.view()
        seen = Seen(running_at=dict(self.running_at), since=0.0, nodes_checked=dict(self.checked))
        return reconcile(v, self.history, self.w.now, seen=seen)

    def write(self, plan: Any) -> None:
        for g in plan.groups:
            res = self.w.apply(g.ops)
            for c in res.changes:
                if c.kind == Kind.TASK:
                    self.marks.update(c.id, None if c.action == "delete" else c.object)
                    if c.action != "delete":
                        self.observe(c.object)
            if isinstance(g.note, RestartNote):
                self.history.record(g.note)
            elif isinstance(g.note, NodeChecked):
                self.checked[g.note.node_id] = g.note.version
        pending = {g.note.node_id for g in plan.groups if isinstance(g.note, NodeChecked)}
        for nid, node in self.view().nodes.items():
            if nid not in pending:
                self.checked[nid] = version_of(node)


def setup(rng: random.Random) -> World:
    w = World(1000.0)
    for n in ("n1", "n2", "n3"):
        w.put(Kind.NODE, make_node(n))
    w.put(Kind.NODE, make_node("drained", availability="drain"))
    w.put(Kind.NODE, set_node_state(make_node("down"), "down", w.now))
    w.put(Kind.SERVICE, service_of("web", rng.randrange(1, 5), restart={"delay": "1s"},
                                   update={"parallelism": 1, "monitor": "1s",
                                           "order": rng.choice(["stop-first", "start-first"])}))
    w.put(Kind.SERVICE, service_of("api", rng.randrange(1, 4), restart={"condition": "on-failure", "delay": "0s"}))
    w.put(Kind.SERVICE, service_of("node-agent", mode={"global": {}}, restart={"delay": "1s"}))
    return w


def mutate(rng: random.Random, w: World) -> str | None:
    """One thing the rest of the cluster does to a task; its id."""
    tasks = [x for x in w.mem.list(Kind.TASK)]
    if not tasks:
        return None
    x = dict(rng.choice(tasks))
    s = state_of(x)
    roll = rng.random()
    if roll < 0.7 and s <= TaskState.RUNNING:  # moves forward (assigned somewhere once scheduled)
        nxt = rng.choice(ORDER[ORDER.index(s):])
        if nxt >= TaskState.ASSIGNED and not x.get("node_id"):
            x["node_id"] = rng.choice(["n1", "n2", "n3", "n1", "n2", "n3", "drained", "down"])
        x["status"] = task_status(nxt, w.now)
    elif roll < 0.8 and s <= TaskState.RUNNING:
        x["status"] = task_status(rng.choice([TaskState.FAILED, TaskState.COMPLETE]), w.now)
    elif roll < 0.95 and desired_of(x) > TaskState.RUNNING and s <= TaskState.RUNNING:
        x["status"] = task_status(TaskState.SHUTDOWN, w.now)
    else:
        return None
    w.apply([t.update(Kind.TASK, x)])
    return str(x["id"])


@pytest.mark.parametrize("seed", range(20))
def test_benign_changes_leave_a_full_pass_nothing_to_do(seed: int) -> None:
    rng = random.Random(seed)
    w = setup(rng)
    sh = Shell(w)
    quiet_until: float | None = None
    checked_benign = 0
    for step in range(400):
        if step == 150:  # a rolling update, to see its tasks and its completion
            web = next(s for s in w.mem.list(Kind.SERVICE) if s["spec"]["name"] == "web")
            w.replace(Kind.SERVICE, respec(web, set_env("2")))
            quiet_until = None
        if rng.random() < 0.1:
            w.now += rng.choice([0.2, 1.0, 3.0])
        if quiet_until is None or w.now >= quiet_until:
            plan = sh.reconcile()
            if plan:
                sh.write(plan)
                quiet_until = None
                continue
            quiet_until = float("inf") if plan.wake_at is None else plan.wake_at
        tid = mutate(rng, w)
        if tid is None:
            continue
        task = next(x for x in w.mem.list(Kind.TASK) if x["id"] == tid)
        old = sh.marks.update(tid, task)
        sh.observe(task)
        v = sh.view()
        if benign(old, task, v.services, v.nodes, sh.marks) and w.now < quiet_until:
            plan = sh.reconcile()
            assert not plan, (step, task, plan.ops)
            assert (plan.wake_at or float("inf")) == quiet_until
            checked_benign += 1
        else:
            quiet_until = None
    assert checked_benign > 5  # the property was put to the test


def test_marks_count_runnable_tasks_per_slot_and_node() -> None:
    w = World(1000.0)
    w.put(Kind.NODE, make_node("n1"))
    w.put(Kind.SERVICE, service_of("web", 2))
    sh = Shell(w)
    sh.write(sh.reconcile())
    tasks = w.mem.list(Kind.TASK)
    sid = tasks[0]["service_id"]
    assert len(tasks) == 2 and sh.marks.live == {(sid, "slot", 1): 1, (sid, "slot", 2): 1, (sid, "node", ""): 2}
    fresh = TaskMarks()
    fresh.rebuild(tasks)
    assert fresh.live == sh.marks.live and fresh.marks == sh.marks.marks
    x = {**tasks[0], "desired_state": "shutdown"}
    old = sh.marks.update(x["id"], x)
    assert old is not None and not benign(old, x, sh.view().services, sh.view().nodes, sh.marks)
    assert sum(sh.marks.live.values()) == 2  # one slot and the unassigned "node" left
