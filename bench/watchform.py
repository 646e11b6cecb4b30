"""A store follower's CPU per task version in the watch's plain and compact forms (shoal/store/txn.py
`factor_shared`), measured in the same run, alternating.

The events are what the raftstore holds after the bench/scale.py run's four writes of each task (create NEW,
PENDING, ASSIGNED, RUNNING; `--per-txn` changes a transaction, like the planners' batches) applied to a
MemoryStore, so the tasks' specs are the store's shared objects. Each form's watch answers (`--per-answer` events
each) are encoded once (services/raftstore/watchbytes.py); a follower's work is then timed in CPU seconds:
the decode (`wire.loads`), `WatchBatch.from_json` and a StoreMirror folding the changes into its view (the
Sharer included). Best of `--rounds` per form.

    python bench/watchform.py                              # 10,000 tasks, 5 rounds
    python bench/watchform.py --tasks 1000 --rounds 2      # CI-sized
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.raftstore.watchbytes import WatchBytes
from shoal.models.objects import new_task, task_status
from shoal.models.specs import ServiceSpec
from shoal.store import wire
from shoal.store.memory import MemoryStore
from shoal.store.mirror import StoreMirror
from shoal.store.txn import Event, WatchBatch

STATES = ("pending", "assigned", "running")


def events(tasks: int, per_txn: int) -> list[Event]:
    spec = ServiceSpec.model_validate({"name": "scale0", "mode": {"replicated": {"replicas": tasks}},
                                       "task": {"process": {"command": ["sleep", "infinity"]}}}).model_dump(
        mode="json")
    service = {"id": "s" * 25, "spec": spec, "spec_version": 1}
    mem = MemoryStore()
    revision = 0
    out: list[Event] = []
    ids = [f"t{i:024d}" for i in range(tasks)]
    for state in (None, *STATES):
        for start in range(0, tasks, per_txn):
            ops: list[dict[str, Any]] = []
            for i in range(start, min(tasks, start + per_txn)):
                if state is None:
                    t = new_task(service, i + 1, 1.7e9, ids=lambda i=i: ids[i])  # type: ignore[misc]
                    ops.append({"op": "create", "kind": "task", "object": t})
                else:
                    t = dict(mem.get("task", ids[i]))
                    t["status"] = task_status(state, 1.7e9 + i, state)
                    if state == "assigned":
                        t["node_id"] = f"n{i % 10:024d}"
                    ops.append({"op": "update", "kind": "task", "object": t})
            revision += 1
            mem.apply({"ops": wire.loads(wire.dumps(ops)), "time": 1.7e9}, revision)  # decoded, as a member does
            out += mem.events_since(revision - 1)  # as applied (the history packs older ones)
    return out


def answers(evs: list[Event], per_answer: int, shared: bool) -> list[bytes]:
    cache = WatchBytes(budget=1 << 40, shared=shared)
    return [cache.answer("scheduler", evs[min(len(evs), i + per_answer) - 1].revision, evs[i:i + per_answer])
            for i in range(0, len(evs), per_answer)]


def follow(bodies: list[bytes]) -> float:
    """CPU seconds a fresh mirror takes to decode and fold every answer."""
    mirror = StoreMirror(None, ["task"])  # type: ignore[arg-type]  # fed by hand, never runs
    t0 = time.process_time()
    for body in bodies:
        batch = WatchBatch.from_json(wire.loads(body))
        for ev in batch.events:
            mirror._apply(ev.changes, ev.revision)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--per-txn", type=int, default=100)
    p.add_argument("--per-answer", type=int, default=5, help="events a watch answer carries")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    evs = events(a.tasks, a.per_txn)
    versions = sum(len(e.changes) for e in evs)
    forms = {"plain": answers(evs, a.per_answer, False), "compact": answers(evs, a.per_answer, True)}
    best = {k: float("inf") for k in forms}
    for _ in range(a.rounds):
        for k, bodies in forms.items():
            best[k] = min(best[k], follow(bodies))
    out: dict[str, Any] = {"versions": versions}
    for k, bodies in forms.items():
        size = sum(len(b) for b in bodies)
        out[k] = {"bytes_per_version": size / versions, "us_per_version": 1e6 * best[k] / versions}
        print(f"{k:8s} {size / versions:6.0f} bytes and {1e6 * best[k] / versions:5.1f} us of CPU per task version "
              f"({versions} versions in {len(bodies)} answers; best of {a.rounds})")
    print(f"compact / plain: bytes {out['compact']['bytes_per_version'] / out['plain']['bytes_per_version']:.2f}x, "
          f"CPU {out['compact']['us_per_version'] / out['plain']['us_per_version']:.2f}x")
    return out


if __name__ == "__main__":
    main()
