"""Scheduler micro-benchmark: the pure core (`shoal.planning.scheduler.core.plan`), mirroring SwarmKit's
`BenchmarkScheduler*` cases (`manager/scheduler/scheduler_test.go`).

    python bench/scheduler.py                 # default cases (a minute or two on 2 cores)
    python bench/scheduler.py --full          # also 1k nodes x 100k tasks and 100k nodes x 100k tasks
    python bench/scheduler.py --case 1k-nodes-10k-tasks --repeat 5 --profile
    python bench/scheduler.py --store         # also count the store work (see below)

Each case builds N ready nodes and one service's T PENDING tasks (no reservations, like SwarmKit's benchmark),
then times one scheduling pass: node infos, placement of every task, and the store ops of the assignments —
everything the scheduler's loop runs except the store writes. It checks that every task was placed and the
spread is even. The constraint case constrains tasks to the third of the nodes carrying a label (SwarmKit's
`BenchmarkSchedulerConstraints` uses a network plugin that a third of the nodes have).

With `--store` the timing also covers what SwarmKit's benchmark counts besides the scheduler: creating the
nodes and tasks in the in-process store (`shoal.store.memory.MemoryStore`, the raftstore's state machine, no
Raft, no network) and committing the assignments in transactions of 200 ops (`shoal.plan.pack`).

The peer figures are SwarmKit's *published* numbers (performance-anchors.md §1c, from moby/swarmkit PR #193,
Mar 2016, "a rather old laptop", times including creating the nodes and tasks in the store): Go SwarmKit cannot
be run here, so the peer is not measured in the same run, and the ratio compares against those figures.
The timing reported is the best of `--repeat` runs; `cpu` is the process CPU time (robust when other work
shares the machine), `wall` the elapsed time; the ratio uses CPU time."""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.heap import gc_paused
from shoal.models.kinds import Kind
from shoal.plan import pack
from shoal.planning.scheduler import core
from shoal.store import txn as t
from shoal.store.memory import MemoryStore

#: SwarmKit's published figures (seconds), moby/swarmkit PR #193 via performance-anchors.md §1c.
SWARMKIT_PUBLISHED: dict[tuple[int, int], float] = {
    (1_000, 1_000): 0.189,
    (1_000, 10_000): 1.8,
    (1_000, 100_000): 22.6,
    (100_000, 100_000): 29.2,
}
SWARMKIT_SOURCE = "moby/swarmkit PR #193 (Mar 2016, 'a rather old laptop'; includes store setup)"
NOW = 1_000_000.0
GIB = 1024**3


@dataclass(frozen=True)
class Case:
    name: str
    nodes: int
    tasks: int
    constrained: bool = False
    full_only: bool = False


CASES: tuple[Case, ...] = (
    Case("1k-nodes-1k-tasks", 1_000, 1_000),
    Case("1k-nodes-10k-tasks", 1_000, 10_000),
    Case("constraint-1k-nodes-10k-tasks", 1_000, 10_000, constrained=True),
    Case("100k-nodes-1k-tasks", 100_000, 1_000),
    Case("1k-nodes-100k-tasks", 1_000, 100_000, full_only=True),
    Case("100k-nodes-100k-tasks", 100_000, 100_000, full_only=True),
)


def make_nodes(n: int) -> list[dict[str, Any]]:
    """`n` ready, active nodes; every third one carries `plugin=yes` (the constraint case's label)."""
    return [{"id": f"node{i:06d}",
             "spec": {"name": None, "labels": {"plugin": "yes"} if i % 3 == 0 else {}, "role": "worker",
                      "availability": "active"},
             "role": "worker",
             "status": {"state": "ready", "message": "", "addr": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                        "timestamp": NOW},
             "description": {"hostname": f"host{i}", "platform": {"os": "linux", "arch": "x86_64"},
                             "resources": {"nano_cpus": 4_000_000_000, "memory_bytes": 8 * GIB},
                             "executors": ["process", "container"]},
             "meta": {"version": i + 1, "created_at": NOW, "updated_at": NOW}}
            for i in range(n)]


def make_tasks(n: int, constrained: bool) -> list[dict[str, Any]]:
    """`n` PENDING tasks of one service (one task group), as the allocator leaves them."""
    spec: dict[str, Any] = {"process": {"command": ["sleep", "1000"]},
                            "resources": {"limits": {}, "reservations": {}},
                            "placement": {"constraints": ["node.labels.plugin==yes"] if constrained else []}}
    return [{"id": f"task{i:07d}", "service_id": "service1", "service_name": "bench", "slot": i + 1,
             "node_id": None, "desired_state": "running", "spec_version": 1, "spec": spec, "runtime": "process",
             "status": {"state": "pending", "message": "pending task scheduling", "err": None, "timestamp": NOW,
                        "pid": None, "exit_code": None},
             "meta": {"version": 10_000_000 + i, "created_at": NOW, "updated_at": NOW}}
            for i in range(n)]


@dataclass
class Result:
    case: Case
    cpu: float
    wall: float
    placed: int
    spread: tuple[int, int]

    @property
    def rate(self) -> float:
        return self.case.tasks / self.cpu if self.cpu > 0 else float("inf")


def _create_all(mem: MemoryStore, kind: str, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create `objs` in `mem`, 1000 per transaction (the store's bound); the stored objects."""
    stored: list[dict[str, Any]] = []
    for i in range(0, len(objs), 1000):
        ops = [t.create(kind, {k: v for k, v in o.items() if k != "meta"}) for o in objs[i:i + 1000]]
        stored += mem.apply({"ops": ops, "time": NOW}, mem.revision + 1).objects
    return stored


def _pass(case: Case, nodes: list[dict[str, Any]], tasks: list[dict[str, Any]], store: bool
          ) -> tuple[Any, list[core.Decision]]:
    """One timed scheduling pass; with `store`, the objects are created in a MemoryStore first and the plan
    committed in 200-op transactions afterwards."""
    if not store:
        with gc_paused():  # as the scheduler's loop runs a pass
            return core.plan(tasks, nodes, NOW)
    mem = MemoryStore()
    nodes = _create_all(mem, Kind.NODE, nodes)
    tasks = _create_all(mem, Kind.TASK, tasks)
    with gc_paused():
        out, decisions = core.plan(tasks, nodes, NOW)
    for batch in pack(out.groups):
        mem.apply({"ops": [op for g in batch for op in g.ops], "time": NOW}, mem.revision + 1)
    return out, decisions


def run_case(case: Case, repeat: int = 1, profile: bool = False, store: bool = False) -> Result:
    """Best of `repeat` passes over fresh copies of the same inputs (objects built outside the timing)."""
    best: Result | None = None
    for _ in range(max(1, repeat)):
        nodes = make_nodes(case.nodes)
        tasks = make_tasks(case.tasks, case.constrained)
        gc.collect()
        prof = cProfile.Profile() if profile else None
        c0, w0 = time.process_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        out, decisions = _pass(case, nodes, tasks, store)
        if prof is not None:
            prof.disable()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        per_node = Counter(d.node_id for d in decisions if d.node_id is not None)
        eligible = case.nodes // 3 + (case.nodes % 3 > 0) if case.constrained else case.nodes
        counts = [per_node.get(n["id"], 0) for n in nodes
                  if not case.constrained or n["spec"]["labels"].get("plugin") == "yes"]
        result = Result(case, cpu, wall, sum(per_node.values()), (min(counts), max(counts)))
        if result.placed != case.tasks or len(out.groups) != case.tasks or len(counts) != eligible:
            raise SystemExit(f"{case.name}: placed {result.placed} of {case.tasks} tasks")
        if result.spread[1] - result.spread[0] > 1:
            raise SystemExit(f"{case.name}: uneven spread {result.spread}")
        if prof is not None:
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
            print(text.getvalue())
        if best is None or result.cpu < best.cpu:
            best = result
    assert best is not None
    return best


def describe(r: Result) -> str:
    c = r.case
    line = (f"{c.name:32s} nodes={c.nodes:>7,} tasks={c.tasks:>7,}  cpu={r.cpu:8.3f}s wall={r.wall:8.3f}s  "
            f"{r.rate:>10,.0f} tasks/s  spread {r.spread[0]}..{r.spread[1]}")
    peer = SWARMKIT_PUBLISHED.get((c.nodes, c.tasks)) if not c.constrained else None
    if peer is None:
        return line + "  | swarmkit: no published figure"
    return (line + f"  | swarmkit published {peer:.3f}s ({c.tasks / peer:,.0f} tasks/s): "
            f"ratio {peer / r.cpu:.2f}x ({'faster' if r.cpu < peer else 'slower'})")


def main(argv: Sequence[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--full", action="store_true", help="also the 100k-task cases")
    ap.add_argument("--case", action="append", default=[], help="run only these cases (repeatable)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs per case (default 3)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary of each run")
    ap.add_argument("--store", action="store_true",
                    help="also time creating the objects in a MemoryStore and committing the assignments")
    args = ap.parse_args(argv)
    known = {c.name: c for c in CASES}
    unknown = [n for n in args.case if n not in known]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    cases = [known[n] for n in args.case] if args.case else [c for c in CASES if args.full or not c.full_only]
    what = "core + MemoryStore (create objects, commit assignments)" if args.store else "pure core"
    print(f"shoal scheduler benchmark, {what} (python {sys.version.split()[0]}); peer = SwarmKit's PUBLISHED "
          f"figures, not measured here: {SWARMKIT_SOURCE}")
    results = []
    for case in cases:
        r = run_case(case, repeat=1 if case.full_only else args.repeat, profile=args.profile, store=args.store)
        print(describe(r), flush=True)
        results.append(r)
    return results


if __name__ == "__main__":
    main()
