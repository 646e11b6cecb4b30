"""Dry-run plan cost (`shoal.planning.dryrun.plan_change`), against its peer measured in the same run: one real
control-plane pass (one `orchestrator.core.reconcile` and one `scheduler.core.plan` over the same state) — what
the orchestrator and scheduler spend on the change once it is written, per pass.

    python bench/plan.py                       # default cases (seconds)
    python bench/plan.py --repeat 5

Each case: N ready nodes and one replicated service whose R tasks run spread over them; the plan is a rolling
update of every task (a new command) with the given parallelism, or a scale-up. A plan plays the whole
change through (every wave of the update), so the ratio says how many passes' worth of CPU a plan costs;
`converged` False means it hit `dryrun.MAX_WORK` (the plan is partial). CPU time, best of `--repeat`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.models.objects import Obj, new_task, task_status
from shoal.planning.dryrun import plan_change
from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import RestartHistory
from shoal.planning.scheduler import core as scheduler
from tests.sim.cp_fakes import make_node, make_service, scaled, with_meta

NOW = 100_000.0
CASES = [  # (name, nodes, replicas, parallelism or None for a scale-up to 2x)
    ("10-nodes-100-tasks-update-par1", 10, 100, 1),
    ("10-nodes-100-tasks-update-par0", 10, 100, 0),
    ("50-nodes-500-tasks-update-par10", 50, 500, 10),
    ("50-nodes-500-tasks-scale-2x", 50, 500, None),
    ("100-nodes-1000-tasks-update-par1", 100, 1000, 1),
]


def state(nodes: int, replicas: int, parallelism: int | None) -> tuple[View, Obj]:
    ns = [make_node(f"n{i:03d}") for i in range(nodes)]
    svc = make_service("web", replicas)
    svc["spec"]["update_config"] = {"parallelism": 1 if parallelism is None else parallelism}
    tasks = []
    for slot in range(1, replicas + 1):
        x = new_task(svc, slot, 0.0)
        x["node_id"] = ns[slot % nodes]["id"]
        x["status"] = task_status("running", 1.0)
        tasks.append(with_meta(x, created_at=1.0))
    view = View({svc["id"]: with_meta(svc)}, {x["id"]: x for x in tasks}, {n["id"]: n for n in ns})
    if parallelism is None:
        return view, scaled(svc, replicas * 2)
    task = {**svc["spec"]["task"], "process": {"command": ["sleep", "2000"]}}
    return view, {**svc, "spec": {**svc["spec"], "task": task}, "previous_spec": svc["spec"], "spec_version": 2,
                  "update_status": None}


def cpu(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    print(f"{'case':36} {'plan cpu':>10} {'1 pass cpu':>11} {'ratio':>7}  summary")
    for name, nodes, replicas, par in CASES:
        view, proposed = state(nodes, replicas, par)
        plan_s, out = cpu(lambda v=view, p=proposed: plan_change(v, p, NOW), a.repeat)
        pview = View({**view.services, proposed["id"]: with_meta(proposed)}, view.tasks, view.nodes)

        def one_pass(v: View = pview) -> None:
            reconcile(v, RestartHistory(), NOW)
            scheduler.plan(list(v.tasks.values()), v.nodes.values(), NOW)

        pass_s, _ = cpu(one_pass, a.repeat)
        s = out["summary"]
        print(f"{name:36} {plan_s:9.3f}s {pass_s:10.4f}s {plan_s / pass_s:6.0f}x  create {s['create']} replace "
              f"{s['replace']} pending {s['pending']} converged {out['converged']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
