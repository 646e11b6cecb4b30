"""The three leader-only planners' CPU per task through a whole ramp, incremental passes against full passes
measured in the same run (issue 13 item 2).

    python bench/planners.py                          # 10 nodes; 2,500, 10,000 and 20,000 tasks
    python bench/planners.py --nodes 100 --tasks 50000 --services 10
    python bench/planners.py --tasks 500 --modes incremental full   # CI-sized (tests/unit/test_bench_planners.py)

In one process, without I/O: a MemoryStore and one `StoreMirror` per planner (change tracking on), fed every
committed transaction as the store's watch would; the real `Orchestrator`, `Allocator` and `Scheduler` shells
(services/*/loop.py) plan in turn, their plans are committed in transactions of 200 ops, then fake agents move
`--per-pass` assigned tasks (1,000) one observed state each (ASSIGNED → ACCEPTED → PREPARING → STARTING →
RUNNING, 200 reports a transaction, as the dispatcher batches them), and so on until every task runs: the
planners pass once per 1,000 task changes. `incremental` hands each pass the
ids changed since the previous one (what PlanLoop does, a full pass first); `full` gives every pass None — a
full pass over the whole view, what every pass did before. CPU time (`process_time`) inside `plan()` only: the
mirror's decoding of the watch, HTTP and the writes are bench/scale.py's business. A ratio full / incremental
per planner, and the CPU per task at every size (the incremental rate should not fall as the size grows)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from services.orchestrator.loop import Orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.clock import FakeClock
from shoal.leader_loop import PlanLoop
from shoal.models.kinds import Kind
from shoal.models.objects import desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.plan import pack
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.memory import MemoryStore
from shoal.store.mirror import StoreMirror
from shoal.store.txn import Op
from tests.sim.cp_fakes import make_node, make_service

WALK = [TaskState.ASSIGNED, TaskState.ACCEPTED, TaskState.PREPARING, TaskState.STARTING, TaskState.RUNNING]
BATCH = 200


class Ramp:
    def __init__(self, nodes: int, tasks: int, services: int, incremental: bool, per_pass: int) -> None:
        self.per_pass = per_pass
        self.mem = MemoryStore()
        self.clock = FakeClock(1000.0)
        self.incremental = incremental
        placeholder = LocalStore()
        self.planners: list[PlanLoop] = [
            Orchestrator(placeholder, None, self.clock, OrchestratorSettings(instance="o")),
            Allocator(placeholder, None, self.clock, AllocatorSettings(instance="a")),
            Scheduler(placeholder, None, self.clock, SchedulerSettings(instance="s")),
        ]
        self.mirrors = [StoreMirror(placeholder, p.kinds, track_changes=True) for p in self.planners]
        self.cpu = {p.name: 0.0 for p in self.planners}
        self.passes = 0
        self.commit([t.create(Kind.NODE, make_node(f"n{i:04d}", cpus=64, memory=2**40)) for i in range(nodes)])
        per = [tasks // services + (1 if i < tasks % services else 0) for i in range(services)]
        self.commit([t.create(Kind.SERVICE, make_service(f"s{i}", n)) for i, n in enumerate(per)])
        for p, m in zip(self.planners, self.mirrors, strict=True):
            m.take_changes()
            p.activate(m, self.clock.now())
        self.first = True

    def commit(self, ops: list[Op]) -> None:
        for i in range(0, len(ops), BATCH):
            res = self.mem.apply({"ops": ops[i:i + BATCH], "time": self.clock.now()}, self.mem.revision + 1)
            for m in self.mirrors:
                m.apply_written(res)

    def round(self) -> None:
        for p, m in zip(self.planners, self.mirrors, strict=True):
            changes = m.take_changes()
            if self.first or not self.incremental:
                changes = None
            started = time.process_time()
            plan = p.plan(m, self.clock.now(), changes)
            self.cpu[p.name] += time.process_time() - started
            self.passes += 1
            for batch in pack(plan.groups, max_ops=BATCH):
                self.commit([op for g in batch for op in g.ops])
                for g in batch:
                    p.committed(g)
        self.first = False
        self.clock.advance(1.0)
        moves = []
        for x in self.mem.list(Kind.TASK):
            if len(moves) >= self.per_pass:
                break
            s = state_of(x)
            if desired_of(x) == TaskState.RUNNING and TaskState.ASSIGNED <= s < TaskState.RUNNING:
                nxt = WALK[next(i for i, w in enumerate(WALK) if w > s)]
                moves.append(t.update(Kind.TASK, {**x, "status": task_status(nxt, self.clock.now())},
                                      expect_version=x["meta"]["version"]))
        self.commit(moves)

    def running(self) -> int:
        return sum(1 for x in self.mem.list(Kind.TASK) if state_of(x) == TaskState.RUNNING)


def run(nodes: int, tasks: int, services: int, incremental: bool, per_pass: int = 1000,
        max_rounds: int = 10_000) -> dict[str, Any]:
    ramp = Ramp(nodes, tasks, services, incremental, per_pass)
    rounds = 0
    while ramp.running() < tasks and rounds < max_rounds:
        ramp.round()
        rounds += 1
    return {"cpu": ramp.cpu, "rounds": rounds, "running": ramp.running()}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--tasks", type=int, nargs="+", default=[2500, 10_000, 20_000])
    p.add_argument("--services", type=int, default=1)
    p.add_argument("--per-pass", type=int, default=1000, help="task state changes between two passes")
    p.add_argument("--modes", nargs="+", default=["incremental", "full"], choices=["incremental", "full"])
    p.add_argument("--full-up-to", type=int, default=10_000, help="measure full passes only up to this size")
    a = p.parse_args(argv)
    out = []
    for n in a.tasks:
        row: dict[str, Any] = {"tasks": n}
        modes = [m for m in a.modes if m == "incremental" or n <= a.full_up_to]
        for mode in modes:
            r = run(a.nodes, n, a.services, mode == "incremental", a.per_pass)
            assert r["running"] == n, f"{mode}: {r['running']}/{n} RUNNING after {r['rounds']} rounds"
            row[mode] = r
        out.append(row)
        print(f"{n} tasks on {a.nodes} nodes, {a.services} service(s), {row[modes[0]]['rounds']} passes each:")
        for name in ("orchestrator", "allocator", "scheduler"):
            cells = [f"{mode} {1e3 * row[mode]['cpu'][name] / n:6.3f} ms/task" for mode in modes]
            ratio = ""
            if len(modes) == 2:
                inc, full = row["incremental"]["cpu"][name], row["full"]["cpu"][name]
                ratio = f"  full / incremental {full / max(inc, 1e-9):5.1f}x"
            print(f"  {name:12s} " + "  ".join(cells) + ratio)
        for mode in modes:
            print(f"  {mode:12s} summed {1e3 * sum(row[mode]['cpu'].values()) / n:6.3f} ms/task")
    return out


if __name__ == "__main__":
    main()
