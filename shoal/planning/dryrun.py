"""Dry-run plans: what a proposed service spec would do, computed by the real cores and writing nothing
(Nomad's `job plan`; `POST /v1/services/{ref}/plan`).

`plan_change(view, proposed, now)` copies the store's state, puts the proposed service in it and runs the
control plane to a fixed point in memory: each round is one orchestrator pass (`orchestrator.core.reconcile`,
restart history recorded as its shell does) and one scheduler pass (`scheduler.core.plan`), their ops applied
to the copy, then the workers as the plan assumes them: every allocation succeeds (NEW → PENDING), every
assigned task starts (→ RUNNING, → READY for a stop-first replacement, → COMPLETE for a job task) and every task
asked to stop stops. The clock then moves on by `STEP` (past update delays, monitor periods, restart delays
and the stop timeout), so a rolling update is played through all of its waves. Tasks never fail in a plan.

The answer is about the proposed service's tasks only (other services' in-flight work is simulated so that
placement sees it, but not reported):
- `create`: new tasks that do not replace one (scale-up, a new service, a global service's new node);
- `stop`: running tasks stopped without a replacement (scale-down, a node that no longer fits);
- `replace`: an old task stopped and a task created for the same slot (by the updater, or by the restart
  supervisor after the constraint enforcer rejected the old one) — on the same or another node (`moved`);
- `unchanged`: live tasks that keep running;
- `pending`: created tasks the scheduler could not place, with its reason (`status.err`, as it writes it).
`converged` is False when the rounds (or the work budget, `MAX_WORK`) ran out before a round changed nothing:
the plan is then partial."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, is_attachment, state_of, task_status
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.planning.orchestrator.core import Seen, View, reconcile
from shoal.planning.orchestrator.enforcer import version_of
from shoal.planning.orchestrator.modes import slot_key
from shoal.planning.orchestrator.restart import RestartHistory, RestartNote
from shoal.planning.scheduler import core as scheduler

#: simulated seconds per round: longer than the stop timeout (60 s) and than any update delay or monitor
#: period a plan needs to see through
STEP = 3600.0
#: rounds: a base plus a few per task of the service (a rolling update needs ~3 rounds per wave)
BASE_ROUNDS = 30
ROUNDS_PER_TASK = 6
MAX_ROUNDS = 3000
#: and at most this many (tasks + nodes) * rounds: a plan is answered within seconds, not minutes (a 1,000-task
#: service updated one task at a time is partial: `converged` False)
MAX_WORK = 150_000


@dataclass
class _Copy:
    services: dict[str, Obj]
    tasks: dict[str, Obj]
    nodes: Mapping[str, Obj]
    cluster: Obj | None
    now: float
    version: int = 0

    def meta(self, old: Obj | None) -> Obj:
        self.version += 1
        created = ((old or {}).get("meta") or {}).get("created_at", self.now)
        return {"version": self.version, "created_at": created, "updated_at": self.now}

    def apply(self, plan: Plan) -> list[Obj]:
        """Write the plan's ops into the copy; the tasks it created."""
        created: list[Obj] = []
        for group in plan.groups:
            for op in group.ops:
                table = self.tasks if op["kind"] == Kind.TASK else self.services if op["kind"] == Kind.SERVICE \
                    else None
                if table is None:
                    continue
                if op["op"] == "delete":
                    table.pop(op["id"], None)
                    continue
                obj = op["object"]
                old = table.get(obj["id"])
                table[obj["id"]] = {**obj, "meta": self.meta(old)}
                if op["op"] == "create" and op["kind"] == Kind.TASK:
                    created.append(table[obj["id"]])
        return created

    def workers(self) -> bool:
        """The workers and the allocator as a plan assumes them; whether any task changed."""
        changed = False
        for tid, x in list(self.tasks.items()):
            if is_attachment(x):
                continue
            state, desired = state_of(x), desired_of(x)
            new: TaskState | None = None
            if state == TaskState.NEW and desired <= TaskState.COMPLETE:
                new = TaskState.PENDING
            elif TaskState.ASSIGNED <= state <= TaskState.RUNNING and desired >= TaskState.SHUTDOWN:
                new = TaskState.SHUTDOWN
            elif TaskState.ASSIGNED <= state < TaskState.RUNNING and desired == TaskState.RUNNING:
                new = TaskState.RUNNING
            elif TaskState.ASSIGNED <= state < TaskState.READY and desired == TaskState.READY:
                new = TaskState.READY
            elif TaskState.ASSIGNED <= state <= TaskState.RUNNING and desired == TaskState.COMPLETE:
                new = TaskState.COMPLETE
            if new is not None:
                self.tasks[tid] = {**x, "status": task_status(new, self.now, "plan"), "meta": self.meta(x)}
                changed = True
        return changed


def _slot(task: Obj, service: Obj) -> str:
    return str(slot_key(task, service)[1])


def _entry(task: Obj) -> Obj:
    return {"task_id": task["id"], "slot": int(task.get("slot") or 0), "node_id": task.get("node_id") or None}


def plan_change(view: View, proposed: Obj, now: float, *, max_rounds: int | None = None) -> Obj:
    """The plan for writing `proposed` (a service object as the gateway would write it) over `view`."""
    sid = proposed["id"]
    proposed = {**proposed, "meta": proposed.get("meta") or {"version": 0, "created_at": now, "updated_at": now}}
    c = _Copy(services={**copy.deepcopy(dict(view.services)), sid: copy.deepcopy(proposed)},
              tasks=copy.deepcopy(dict(view.tasks)), nodes=view.nodes, cluster=view.cluster, now=now)
    c.version = max([0, *(int((x.get("meta") or {}).get("version") or 0)
                          for x in [*c.tasks.values(), *c.services.values()])])
    before = {tid: x for tid, x in c.tasks.items() if x.get("service_id") == sid}
    live_before = {tid for tid, x in before.items() if desired_of(x) <= TaskState.RUNNING}
    history = RestartHistory.rebuild(c.services, c.tasks.values())
    rounds = max_rounds if max_rounds is not None else min(MAX_ROUNDS, BASE_ROUNDS + ROUNDS_PER_TASK * max(
        len(live_before), _wanted(proposed), len(view.nodes)))
    created: dict[str, Obj] = {}
    last: Obj = {}
    converged = False
    checked: dict[str, int] | None = None  # the enforcer looks at every node once: nodes do not change here
    work = 0
    for _ in range(rounds):
        p = reconcile(View(c.services, c.tasks, c.nodes, c.cluster), history, c.now,
                      seen=Seen(since=now, nodes_checked=checked))
        checked = {nid: version_of(node) for nid, node in c.nodes.items()}
        for x in c.apply(p):
            if x.get("service_id") == sid:
                created[x["id"]] = x
        for g in p.groups:
            if isinstance(g.note, RestartNote):
                history.record(g.note)
        sp, _decisions = scheduler.plan(list(c.tasks.values()), c.nodes.values(), c.now)
        c.apply(sp)
        moved = c.workers()
        for tid in list(created):
            if tid in c.tasks:
                last[tid] = c.tasks[tid]
        if not p.groups and not sp.groups and not moved:
            converged = True
            break
        work += len(c.tasks) + len(c.nodes)
        if work > MAX_WORK:
            break
        c.now += STEP
    return _summarise(c.services.get(sid) or proposed, before, live_before, created, last, c.tasks, converged)


def _wanted(service: Obj) -> int:
    mode = (service.get("spec") or {}).get("mode") or {}
    if "replicated" in mode:
        return int((mode.get("replicated") or {}).get("replicas", 1))
    if "replicated_job" in mode:
        job = mode.get("replicated_job") or {}
        return int(job.get("total_completions") or job.get("max_concurrent") or 1)
    return 0


def _summarise(service: Obj, before: Mapping[str, Obj], live_before: set[str], created: Mapping[str, Obj],
               last: Mapping[str, Obj], tasks: Mapping[str, Obj], converged: bool) -> Obj:
    stopped = [before[tid] for tid in sorted(live_before)
               if tid not in tasks or desired_of(tasks[tid]) > TaskState.RUNNING]
    final = {tid: last.get(tid, x) for tid, x in created.items()}
    # a created task that the simulation itself stopped again (e.g. a restart of a restart) is not reported
    made = [x for x in final.values() if desired_of(x) <= TaskState.COMPLETE]
    by_slot: dict[str, list[Obj]] = {}
    for x in stopped:
        by_slot.setdefault(_slot(x, service), []).append(x)
    replace: list[Obj] = []
    create: list[Obj] = []
    for x in sorted(made, key=lambda x: (int(x.get("slot") or 0), str(x.get("node_id") or ""), x["id"])):
        olds = by_slot.get(_slot(x, service))  # the updater's or, after a rejection, the restarter's task
        if olds:
            old = olds.pop(0)
            replace.append({"old": _entry(old), "new": _entry(x),
                            "moved": bool(x.get("node_id")) and x.get("node_id") != old.get("node_id")})
        else:
            create.append(_entry(x))
    stop = [_entry(x) for group in by_slot.values() for x in group]
    gone = {e["task_id"] for e in stop} | {r["old"]["task_id"] for r in replace}
    unchanged = [_entry(before[tid]) for tid in sorted(live_before) if tid not in gone]
    not_yet = "not placed before the plan was cut short" if not converged else "not scheduled"
    pending = [{**_entry(x), "reason": (x.get("status") or {}).get("err") or not_yet}
               for x in made if not x.get("node_id")]
    nodes: dict[str, dict[str, int]] = {}

    def count(node: str | None, what: str) -> None:
        if node:
            per = nodes.setdefault(node, {"create": 0, "stop": 0, "replace": 0, "unchanged": 0})
            per[what] += 1

    for e in create:
        count(e["node_id"], "create")
    for e in stop:
        count(e["node_id"], "stop")
    for r in replace:
        if r["moved"]:
            count(r["old"]["node_id"], "stop")
            count(r["new"]["node_id"], "create")
        else:
            count(r["new"]["node_id"], "replace")
    for e in unchanged:
        count(e["node_id"], "unchanged")
    return {
        "service": {"id": service["id"], "name": (service.get("spec") or {}).get("name"),
                    "spec_version": service.get("spec_version")},
        "summary": {"create": len(create), "stop": len(stop), "replace": len(replace),
                    "unchanged": len(unchanged), "pending": len(pending)},
        "nodes": dict(sorted(nodes.items())),
        "create": create, "stop": stop, "replace": replace, "unchanged": unchanged, "pending": pending,
        "converged": converged,
    }

