"""Whole-control-plane simulation: the pure cores of orchestrator, allocator and scheduler, fake agents and a fake
dispatcher over one MemoryStore and a fake clock, driven by seeded random schedules (task failures, nodes going
down and up, drains, node label changes, scale changes, spec updates (rolling updates, stop-first and
start-first, some rolled back automatically), manual rollbacks, job completions, orchestrator failovers, stale
views) over replicated and global services and replicated and global jobs. After every step the store's history
is checked:
- observed and desired states never decrease; a task's node never changes once set;
- one owner per transition (orchestrator creates/deletes tasks and sets desired state, and writes observed
  REJECTED only as the constraint enforcer; allocator NEW→PENDING; scheduler PENDING→ASSIGNED/SHUTDOWN and
  node_id, only onto nodes READY and ACTIVE in its view; the agent of the task's node everything from ASSIGNED
  on); on services the orchestrator writes only `update_status` (and the spec swap of an automatic rollback);
- at most one runnable task per slot (node, for global modes), except two during a start-first update; no
  node's reservations exceed its resources;
- a task is deleted only once it cannot run (< ASSIGNED or > RUNNING);
- a replacement is released (to RUNNING, or COMPLETE for jobs) only after its restart delay (none for update
  tasks), and only once the task it replaces stopped, its node went down, or the one-minute timeout passed.
Finally, with faults stopped (and paused updates re-issued by the "user"), every service converges to exactly
the desired tasks at its current spec: `replicas` running tasks, one per node for global services, all
completions of the current iteration for jobs, and no update left in progress."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.allocator import core as allocator
from shoal.cluster import default_cluster
from shoal.errors import ShoalError
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.plan import Plan, pack
from shoal.planning.orchestrator import enforcer
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.enforcer import NodeChecked, version_of
from shoal.planning.orchestrator.modes import UPDATE, by_node, is_job, slot_key
from shoal.planning.orchestrator.restart import (
    STOP_TIMEOUT,
    RestartHistory,
    RestartNote,
    RestartPolicy,
    live,
    status_time,
    stopped,
)
from shoal.planning.scheduler import core as scheduler
from shoal.planning.scheduler.nodeinfo import Reservation
from shoal.store import txn as t
from shoal.store.memory import MemoryStore
from shoal.store.txn import Change, TxnResult
from tests.sim.cp_fakes import (
    CPU,
    GiB,
    agent_ops,
    make_node,
    report,
    respec,
    service_of,
    set_env,
    set_node_state,
)

pytestmark = pytest.mark.timeout(120)

KINDS = (Kind.SERVICE, Kind.TASK, Kind.NODE, Kind.CLUSTER)
NODES = ("n1", "n2", "n3", "n4")


class ActorView:
    """An actor's possibly stale copy of the store (a StoreMirror without the I/O), with its own writes folded in."""

    def __init__(self, mem: MemoryStore) -> None:
        self.mem = mem
        self.tables: dict[str, dict[str, Obj]] = {}
        self.refresh()

    def refresh(self) -> None:
        # Shallow: stored objects are replaced on every write, never changed in place (and no core mutates
        # its input), so sharing them with the store is safe and keeps the simulation fast.
        self.tables = {k: {o["id"]: o for o in self.mem.list(k)} for k in KINDS}

    def fold(self, res: TxnResult) -> None:
        for c in res.changes:
            if c.action == "delete":
                self.tables[c.kind].pop(c.id, None)
            else:
                self.tables[c.kind][c.id] = c.object


@dataclass
class Sim:
    seed: int
    ids: Callable[[], str] | None = None  # task ids (None: shoal.ids.new_id)
    mem: MemoryStore = field(default_factory=MemoryStore)
    now: float = 1_000_000.0
    writer: dict[int, str] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    checked: int = 0
    history: RestartHistory = field(default_factory=RestartHistory)
    services: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    before: dict[str, Obj] = field(default_factory=dict)  # last seen version of every task
    services_seen: dict[str, Obj] = field(default_factory=dict)  # last seen version of every service
    planned_from: dict[str, dict[str, dict[str, Obj]]] = field(default_factory=dict)  # view behind a plan
    drained: set[str] = field(default_factory=set)
    cold: set[str] = field(default_factory=set)  # nodes labelled tier=cold ("api" avoids them)
    start_first: set[str] = field(default_factory=set)  # update tasks created to start before the old stop
    running_at: dict[str, float] = field(default_factory=dict)  # the orchestrator's memory (lost on failover)
    nodes_checked: dict[str, int] = field(default_factory=dict)
    since: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.write("dispatcher", [t.create(Kind.CLUSTER, default_cluster())]
                   + [t.create(Kind.NODE, make_node(n, cpus=2, memory=3 * GiB)) for n in NODES])
        monitor = {"monitor": 3.0}
        specs = [service_of("web", 3, restart={"delay": 2}, reservations={"nano_cpus": CPU},
                            update={**monitor, "parallelism": 2, "delay": 1.0}),
                 service_of("api", 2, restart={"delay": 0, "condition": "on-failure"},
                            reservations={"memory_bytes": GiB}, constraints=["node.labels.tier!=cold"],
                            update={**monitor, "order": "start-first", "failure_action": "rollback"},
                            rollback={**monitor, "parallelism": 0}),
                 service_of("batch", 1, restart={"delay": 7}, update={**monitor, "failure_action": "continue"}),
                 service_of("agentd", mode={"global": {}}, restart={"delay": 1}, update=monitor),
                 service_of("crunch", mode={"replicated_job": {"max_concurrent": 2, "total_completions": 4}},
                            restart={"delay": 1, "condition": "on-failure"}),
                 service_of("sweep", mode={"global_job": {}}, restart={"delay": 1, "condition": "on-failure"})]
        self.write("gateway", [t.create(Kind.SERVICE, s) for s in specs])
        self.services = [s["id"] for s in specs]
        self.views = {name: ActorView(self.mem) for name in ("orchestrator", "allocator", "scheduler")}
        self.since = self.now

    # ---- writing ---------------------------------------------------------------------------------------------
    def write(self, actor: str, ops: list[t.Op]) -> TxnResult | None:
        rev = self.mem.revision + 1
        self.writer[rev] = actor
        try:
            res = self.mem.apply({"ops": ops, "time": self.now}, rev)
        except ShoalError:
            self.stats["conflicts"] = self.stats.get("conflicts", 0) + 1
            return None
        self.check()
        return res

    def write_plan(self, actor: str, plan: Plan) -> None:
        view = self.views[actor]
        for batch in pack(plan.groups, max_ops=self.rng.choice([1, 5, 199])):
            res = self.write(actor, [op for g in batch for op in g.ops])
            if res is None:
                view.refresh()  # a stale view: re-read (the mirror would catch up) and plan again later
                return
            view.fold(res)
            for g in batch:
                if isinstance(g.note, RestartNote):
                    self.history.record(g.note)
                elif isinstance(g.note, NodeChecked):
                    self.nodes_checked[g.note.node_id] = g.note.version

    # ---- actors ----------------------------------------------------------------------------------------------
    def maybe_refresh(self, actor: str, fresh: bool) -> ActorView:
        view = self.views[actor]
        if fresh or self.rng.random() < 0.6:
            view.refresh()
        return view

    def orchestrate(self, fresh: bool = False) -> None:
        """One pass of the orchestrator, keeping its in-memory state as `services.orchestrator.loop` does."""
        v = self.maybe_refresh("orchestrator", fresh).tables
        self.planned_from["orchestrator"] = {k: dict(objs) for k, objs in v.items()}
        for task in v[Kind.TASK].values():
            if task.get("created_by") == UPDATE and state_of(task) == TaskState.RUNNING:
                self.running_at.setdefault(task["id"], status_time(task))
        seen = Seen(dict(self.running_at), since=self.since, nodes_checked=dict(self.nodes_checked))
        plan = reconcile(View(v[Kind.SERVICE], v[Kind.TASK], v[Kind.NODE], v[Kind.CLUSTER].get("default"),
                              ids=self.ids), self.history, self.now, seen=seen)
        pending = {g.note.node_id for g in plan.groups if isinstance(g.note, NodeChecked)}
        self.nodes_checked = {nid: (self.nodes_checked.get(nid, -1) if nid in pending else version_of(node))
                              for nid, node in v[Kind.NODE].items()}
        self.write_plan("orchestrator", plan)

    def failover(self) -> None:
        """A new orchestrator leader: its memory is rebuilt from the store."""
        self.history = RestartHistory.rebuild(self.table(Kind.SERVICE), self.mem.list(Kind.TASK))
        self.running_at = {}
        self.nodes_checked = {}
        self.since = self.now
        self.views["orchestrator"].refresh()
        self.stats["failovers"] = self.stats.get("failovers", 0) + 1

    def table(self, kind: str) -> dict[str, Obj]:
        return {o["id"]: o for o in self.mem.list(kind)}

    def allocate(self, fresh: bool = False) -> None:
        tasks = self.maybe_refresh("allocator", fresh).tables[Kind.TASK].values()
        self.write_plan("allocator", allocator.plan(tasks, allocator.AllocatorState(), self.now))

    def schedule(self, fresh: bool = False) -> None:
        v = self.maybe_refresh("scheduler", fresh).tables
        self.planned_from["scheduler"] = {k: dict(objs) for k, objs in v.items()}
        plan, _ = scheduler.plan(v[Kind.TASK].values(), v[Kind.NODE].values(), self.now)
        self.write_plan("scheduler", plan)

    def agent(self, node: str, all_the_way: bool) -> None:
        if node in self.down:
            return
        for op in agent_ops(self.mem.list(Kind.TASK), node, self.now, all_the_way=all_the_way):
            self.write("agent:" + node, [op])

    def finish_job_task(self) -> None:
        """A running job task's process exits 0."""
        jobs = {sid for sid in self.services if is_job(self.mem.get(Kind.SERVICE, sid))}
        done = [x for x in self.mem.list(Kind.TASK) if x["service_id"] in jobs and x.get("node_id") not in self.down
                and state_of(x) == TaskState.RUNNING]
        if done:
            x = self.rng.choice(done)
            self.write("agent:" + x["node_id"], [t.update(Kind.TASK, report(x, TaskState.COMPLETE, self.now))])

    def fail_one(self) -> None:
        victims = [x for x in self.mem.list(Kind.TASK) if x.get("node_id") and x["node_id"] not in self.down
                   and TaskState.ASSIGNED <= state_of(x) <= TaskState.RUNNING]
        if victims:
            x = self.rng.choice(victims)
            state = self.rng.choice([TaskState.FAILED, TaskState.FAILED, TaskState.COMPLETE, TaskState.REJECTED])
            if state == TaskState.COMPLETE and RestartPolicy.of(x).condition != "any":
                # An on-failure task that completes is (rightly) never replaced and keeps its slot, which the
                # final "exactly N running" check could not tell from a bug; unit tests cover that rule.
                state = TaskState.FAILED
            if state == TaskState.REJECTED and state_of(x) >= TaskState.STARTING:
                state = TaskState.FAILED
            self.write("agent:" + x["node_id"], [t.update(Kind.TASK, report(x, state, self.now, "boom"))])
            self.stats["failures"] = self.stats.get("failures", 0) + 1

    def node_state(self, node: str, up: bool) -> None:
        obj = self.mem.get(Kind.NODE, node)
        if self.write("dispatcher", [t.update(Kind.NODE, set_node_state(obj, "ready" if up else "down", self.now))]):
            (self.down.discard if up else self.down.add)(node)

    def availability(self, node: str, drain: bool) -> None:
        """The gateway drains a node (its tasks are restarted elsewhere without delay) or re-activates it."""
        obj = self.mem.get(Kind.NODE, node)
        spec = {**obj["spec"], "availability": "drain" if drain else "active"}
        if self.write("gateway", [t.update(Kind.NODE, {**obj, "spec": spec})]):
            (self.drained.add if drain else self.drained.discard)(node)

    def label(self, node: str, cold: bool) -> None:
        """The gateway labels a node tier=cold (the constraint enforcer moves "api" off it) or clears it."""
        obj = self.mem.get(Kind.NODE, node)
        spec = {**obj["spec"], "labels": {"tier": "cold"} if cold else {}}
        if self.write("gateway", [t.update(Kind.NODE, {**obj, "spec": spec})]):
            (self.cold.add if cold else self.cold.discard)(node)

    def user_update(self, svc: Obj, change: Any) -> None:
        self.write("gateway", [t.update(Kind.SERVICE, respec(svc, change),
                                        expect_version=svc["meta"]["version"])])

    def scale(self) -> None:
        replicated = [sid for sid in self.services if "replicated" in self.mem.get(Kind.SERVICE, sid)["spec"]["mode"]]
        svc = self.mem.get(Kind.SERVICE, self.rng.choice(replicated))
        n = self.rng.randint(0, 5)
        self.user_update(svc, lambda spec: spec.__setitem__("mode", {"replicated": {"replicas": n}}))

    def update_spec(self) -> None:
        """A user changes a service's task spec (a rolling update; a new iteration for a job)."""
        svc = self.mem.get(Kind.SERVICE, self.rng.choice(self.services))
        if self.rng.random() < 0.3:
            def force(spec: Obj) -> None:
                spec["task"]["force_update"] = int(spec["task"].get("force_update", 0)) + 1
            self.user_update(svc, force)
        else:
            self.user_update(svc, set_env(str(self.rng.randint(0, 3))))
        self.stats["updates"] = self.stats.get("updates", 0) + 1

    def manual_rollback(self) -> None:
        candidates = [self.mem.get(Kind.SERVICE, sid) for sid in self.services]
        candidates = [s for s in candidates if s.get("previous_spec") and not is_job(s)]
        if candidates:
            svc = self.rng.choice(candidates)
            new = {**svc, "spec": svc["previous_spec"], "previous_spec": svc["spec"],
                   "spec_version": svc["spec_version"] + 1,
                   "update_status": {"state": "rollback_started", "message": "manually requested rollback",
                                     "started_at": self.now}}
            self.write("gateway", [t.update(Kind.SERVICE, new, expect_version=svc["meta"]["version"])])

    # ---- invariants ------------------------------------------------------------------------------------------
    def check(self) -> None:
        for ev in self.mem.events_since(self.checked):
            actor = self.writer[ev.revision]
            for c in ev.changes:
                if c.kind == Kind.TASK:
                    self.check_task_change(actor, c)
                elif c.kind == Kind.SERVICE and actor == "orchestrator":
                    self.check_service_change(c)
                if c.kind == Kind.SERVICE and c.action != "delete":
                    self.services_seen[c.id] = c.object
            self.checked = ev.revision
        self.check_state()

    def check_service_change(self, c: Change) -> None:
        """The orchestrator writes a service's update_status; only an automatic rollback also swaps the spec."""
        old, new = self.services_seen[c.id], c.object
        changed = {k for k in set(old) | set(new) if k != "meta" and old.get(k) != new.get(k)}
        if changed <= {"update_status"}:
            return
        assert changed <= {"update_status", "spec", "previous_spec", "spec_version"}, changed
        assert new["update_status"]["state"] == "rollback_started" and new["previous_spec"] is None
        assert new["spec"] == old["previous_spec"] and new["spec_version"] == old["spec_version"] + 1
        self.stats["auto_rollbacks"] = self.stats.get("auto_rollbacks", 0) + 1

    def check_task_change(self, actor: str, c: Change) -> None:
        before = self.before.get(c.id)
        new = c.object
        if c.action == "create":
            assert actor == "orchestrator" and state_of(new) == TaskState.NEW, (actor, new)
            if new.get("created_by") == UPDATE and desired_of(new) == TaskState.RUNNING:
                self.start_first.add(c.id)
            self.before[c.id] = new
            return
        if c.action == "delete":
            assert actor == "orchestrator", actor
            s = state_of(c.object)
            # Two-phase removal: never delete a task that may still run (resources would be freed under it).
            assert s < TaskState.ASSIGNED or s > TaskState.RUNNING, f"deleted a task in state {s}"
            self.before.pop(c.id, None)
            return
        assert before is not None
        s0, s1 = state_of(before), state_of(new)
        d0, d1 = desired_of(before), desired_of(new)
        assert s1 >= s0, f"observed state went back {s0} -> {s1} by {actor}"
        assert d1 >= d0, f"desired state went back {d0} -> {d1} by {actor}"
        if before.get("node_id"):
            assert new.get("node_id") == before["node_id"], "node binding changed"
        if d1 != d0:
            assert actor == "orchestrator", f"desired state written by {actor}"
            if d0 == TaskState.READY and d1 in (TaskState.RUNNING, TaskState.COMPLETE):
                self.check_release(new)
        if new.get("node_id") != before.get("node_id"):
            assert actor == "scheduler", f"node_id written by {actor}"
            node = self.planned_from["scheduler"][Kind.NODE][new["node_id"]]
            assert node["status"]["state"] == "ready" and node["spec"]["availability"] == "active", \
                "assigned to a node that was not ready and active in the scheduler's view"
        if actor == "orchestrator" and s1 != s0:
            # the constraint enforcer: the one observed state the orchestrator writes
            assert s1 == TaskState.REJECTED and TaskState.ASSIGNED <= s0 <= TaskState.RUNNING, (s0, s1)
            assert new["status"]["err"] == enforcer.ERR
            self.stats["enforced"] = self.stats.get("enforced", 0) + 1
        elif s1 != s0 or new["status"] != before["status"]:
            owner = {TaskState.NEW: "allocator", TaskState.PENDING: "scheduler"}.get(s0, "agent")
            assert actor.startswith(owner), f"{s0}->{s1} written by {actor}, owner is {owner}"
            assert actor != "orchestrator"
            if owner == "agent":
                assert actor == "agent:" + str(new.get("node_id")), "only the task's node reports on it"
        self.before[c.id] = new

    def check_release(self, task: Obj) -> None:
        """SwarmKit's DelayStart: the delay first, then the old task stopped (or its node down) or 1 minute —
        judged on the view the orchestrator planned from (a view may lag, never lead: states only increase)."""
        view = self.planned_from["orchestrator"]
        created = task["meta"]["created_at"]
        service = view[Kind.SERVICE].get(task["service_id"])
        key = slot_key(task, service)
        olds = [o for o in view[Kind.TASK].values() if slot_key(o, service) == key and o["id"] != task["id"]]
        drained = any(view[Kind.NODE].get(o.get("node_id") or "", {}).get("spec", {}).get("availability")
                      == "drain" for o in olds)
        delay = 0.0 if drained or task.get("created_by") == UPDATE else RestartPolicy.of(task).delay
        assert self.now >= created + delay, "replacement released before its restart delay"
        if self.now >= created + delay + STOP_TIMEOUT:
            return
        for o in olds:
            assert stopped(o, view[Kind.NODE]), "replacement released while the old task may still run"
        self.stats["releases"] = self.stats.get("releases", 0) + 1

    def check_state(self) -> None:
        tasks = self.mem.list(Kind.TASK)
        slots: dict[tuple[str, object], list[Obj]] = {}
        used: dict[str, list[int]] = {n: [0, 0] for n in NODES}
        for x in tasks:
            svc = self.services_seen.get(x["service_id"])
            if svc is not None:
                slots.setdefault(slot_key(x, svc), []).append(x)
            if x.get("node_id") and TaskState.ASSIGNED <= state_of(x) <= TaskState.RUNNING:
                r = Reservation.of(x)
                used[x["node_id"]][0] += r.nano_cpus
                used[x["node_id"]][1] += r.memory_bytes
        for n, (cpu, mem) in used.items():
            assert cpu <= 2 * CPU and mem <= 3 * GiB, f"node {n} overcommitted"
        for key, group in slots.items():
            job = is_job(self.services_seen[key[0]])
            runnable = [x for x in group if live(x, job)]
            # Two only in a start-first window: a start-first update task starts beside the task it replaces,
            # which is shut down once the new one runs.
            assert len(runnable) <= 1 or (len(runnable) == 2 and any(o["id"] in self.start_first for o in runnable)), \
                f"{len(runnable)} runnable tasks in slot {key}"

    # ---- schedules -------------------------------------------------------------------------------------------
    def random_step(self) -> None:
        r = self.rng.random()
        if r < 0.15:
            self.orchestrate()
        elif r < 0.25:
            self.allocate()
        elif r < 0.36:
            self.schedule()
        elif r < 0.58:
            self.agent(self.rng.choice(NODES), all_the_way=self.rng.random() < 0.5)
        elif r < 0.64:
            self.fail_one()
        elif r < 0.67:
            self.finish_job_task()
        elif r < 0.70:
            up = [n for n in NODES if n not in self.down]
            if len(up) > 1:
                self.node_state(self.rng.choice(up), up=False)
        elif r < 0.75:
            if self.down:
                self.node_state(self.rng.choice(sorted(self.down)), up=True)
        elif r < 0.77:
            self.scale()
        elif r < 0.79:
            node = self.rng.choice(NODES)
            self.availability(node, drain=node not in self.drained and len(self.drained) < 2)
        elif r < 0.81:
            node = self.rng.choice(NODES)
            self.label(node, cold=node not in self.cold and len(self.cold) < 2)
        elif r < 0.84:
            self.update_spec()
        elif r < 0.845:
            self.manual_rollback()
        elif r < 0.85:
            self.failover()
        else:
            self.now += self.rng.choice([0.1, 0.5, 1.0, 3.0, 10.0])

    def round(self) -> None:
        """Everyone acts once on a fresh view, job tasks that run finish, then time moves on."""
        self.orchestrate(fresh=True)
        self.allocate(fresh=True)
        self.schedule(fresh=True)
        for n in NODES:
            self.agent(n, all_the_way=True)
        jobs = {sid for sid in self.services if is_job(self.mem.get(Kind.SERVICE, sid))}
        for x in self.mem.list(Kind.TASK):
            if x["service_id"] in jobs and state_of(x) == TaskState.RUNNING:
                self.write("agent:" + x["node_id"], [t.update(Kind.TASK, report(x, TaskState.COMPLETE, self.now))])
        self.now += 1.0

    def unpause(self) -> None:
        """The user re-issues paused updates (a paused update waits for a spec change)."""
        for sid in self.services:
            svc = self.mem.get(Kind.SERVICE, sid)
            if (svc.get("update_status") or {}).get("state") in ("paused", "rollback_paused"):
                self.user_update(svc, set_env("final"))

    def converged(self) -> bool:
        return all(not self.lagging(sid) for sid in self.services)

    def lagging(self, sid: str) -> str | None:
        """Why service `sid` is not (yet) exactly as desired at its current spec, or None."""
        svc = self.mem.get(Kind.SERVICE, sid)
        tasks = self.mem.list(Kind.TASK, service_id=sid)
        if any(desired_of(x) == TaskState.REMOVE for x in tasks):
            return "the reaper has not finished"
        if (svc.get("update_status") or {}).get("state") not in (None, "completed", "rollback_completed"):
            return f"update {svc['update_status']['state']}"
        mode = svc["spec"]["mode"]
        if is_job(svc):
            it = svc["job_status"]["job_iteration"]
            current = [x for x in tasks if x.get("job_iteration") == it]
            # Completions per slot (node): a task shut down on a node that went down may still complete once
            # its node is back, after its replacement did — at least once, never "not at all".
            done = {slot_key(x, svc) for x in current if state_of(x) == TaskState.COMPLETE}
            slots: list[object] = (list(range(mode["replicated_job"]["total_completions"]))
                                   if "replicated_job" in mode else list(NODES))
            if done != {(sid, n) for n in slots} or any(live(x, job=True) for x in current):
                return f"{len(done)}/{len(slots)} slots completed"
            return None
        runnable = [x for x in tasks if desired_of(x) <= TaskState.RUNNING]
        count = len(NODES) if by_node(svc) else int(mode["replicated"]["replicas"])
        if len(runnable) != count or any(desired_of(x) != TaskState.RUNNING or state_of(x) != TaskState.RUNNING
                                        or x["spec"] != svc["spec"]["task"] for x in runnable):
            return f"{len(runnable)} runnable of {count}, or some not running the current spec"
        if by_node(svc) and sorted(x["node_id"] for x in runnable) != sorted(NODES):
            return "not one task per node"
        return None



def seeded_ids(monkeypatch: pytest.MonkeyPatch, seed: int) -> Callable[[], str]:
    """Object ids from the seed too, so a failing seed replays exactly (ids order several iterations): the
    orchestrator's tasks get them through its View (`ids`), the fake services through cp_fakes."""
    rng = random.Random(f"ids-{seed}")
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

    def new_id() -> str:
        return "".join(rng.choice(alphabet) for _ in range(25))

    monkeypatch.setattr("tests.sim.cp_fakes.new_id", new_id)
    return new_id


@pytest.mark.parametrize("seed", range(10))
def test_random_faults_keep_invariants_and_converge(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = Sim(seed, ids=seeded_ids(monkeypatch, seed))
    for _ in range(600):
        sim.random_step()
    # Faults stop: every node comes back, and the control plane must converge.
    for n in sorted(sim.down):
        sim.node_state(n, up=True)
    for n in sorted(sim.drained):
        sim.availability(n, drain=False)
    for n in sorted(sim.cold):
        sim.label(n, cold=False)
    rounds = 0
    while not sim.converged():
        rounds += 1
        assert rounds < 200, f"no convergence: {summary(sim)}"
        sim.unpause()
        sim.round()
    # Stable: after the reaper's last trims (history of tasks the agents stopped in the last round), more
    # rounds change nothing but time.
    for _ in range(2):
        sim.round()
    assert sim.converged()
    rev = sim.mem.revision
    for _ in range(3):
        sim.round()
    assert sim.mem.revision == rev, "converged state is not a fixed point"
    assert sim.stats.get("failures", 0) > 0 and sim.stats.get("updates", 0) > 0


def summary(sim: Sim) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sid in sim.services:
        svc = sim.mem.get(Kind.SERVICE, sid)
        out[svc["spec"]["name"]] = (sim.lagging(sid), svc["spec_version"],
                                    sorted((x.get("slot"), str(desired_of(x)), str(state_of(x)), str(x.get("node_id")),
                                            x["spec_version"]) for x in sim.mem.list(Kind.TASK, service_id=sid)))
    return out
