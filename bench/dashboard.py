"""The dashboard's per-second cost on a gateway, against one `GET /v1/tasks` answer of the same cluster.

    python bench/dashboard.py                     # 100 nodes, 200 services, 10,000 tasks
    python bench/dashboard.py --tasks 50000 --rounds 5

A gateway with browsers connected builds at most one snapshot per second (services/gateway/ui/snapshot.py; the
pass over the tasks only in seconds when nodes, services or tasks changed) and encodes it once as an SSE message
for all of them. Measured here: that worst case, everything rebuilt. The peer, measured in the same run on the
same objects, is what a single `shoal service ps`-like call costs the gateway to encode: the JSON of every task
(`GET /v1/tasks` without a filter). The ratio says how many such calls one second of dashboard costs — whatever
the number of browsers — and the snapshot's size against that answer's."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from services.gateway.ui.hub import sse
from services.gateway.ui.snapshot import build_snapshot, raft_members

STATES = ["running"] * 8 + ["pending", "failed", "shutdown", "complete"]


def cluster(nodes: int, services: int, tasks: int, seed: int = 7) -> tuple[list[Any], list[Any], list[Any]]:
    rnd = random.Random(seed)
    ns = [{"id": f"n{i:04d}", "role": "worker", "spec": {"availability": "active"},
           "status": {"state": "ready", "addr": f"10.0.{i // 250}.{i % 250}"},
           "description": {"hostname": f"host-{i}", "resources": {"nano_cpus": 8_000_000_000,
                                                                   "memory_bytes": 32 << 30}},
           "meta": {"version": i + 1, "created_at": 1.0, "updated_at": 2.0}} for i in range(nodes)]
    ss = [{"id": f"s{i:04d}", "spec": {"name": f"svc-{i}", "mode": {"replicated": {"replicas": tasks // services}},
                                       "task": {"process": {"command": ["sleep", "300"]}}},
           "update_status": None, "meta": {"version": 1, "created_at": 1.0, "updated_at": 2.0}}
          for i in range(services)]
    ts = []
    for i in range(tasks):
        svc = ss[i % services]
        state = rnd.choice(STATES)
        ts.append({"id": f"t{i:024d}", "service_id": svc["id"], "service_name": svc["spec"]["name"],
                   "slot": i // services + 1, "node_id": ns[rnd.randrange(nodes)]["id"],
                   "desired_state": "shutdown" if state in ("shutdown", "complete") else "running",
                   "spec": svc["spec"]["task"], "runtime": "process",
                   "status": {"state": state, "message": state, "timestamp": rnd.random() * 1000,
                              "err": "task: non-zero exit (1)" if state == "failed" else None, "pid": 1000 + i,
                              "exit_code": 1 if state == "failed" else None},
                   "meta": {"version": i + 10, "created_at": 1.0, "updated_at": 2.0}})
    return ns, ss, ts


def best(fn: Any, rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=9)
    a = p.parse_args()
    ns, ss, ts = cluster(a.nodes, a.services, a.tasks)
    raft = raft_members({"leader": 1, "term": 2, "commit_index": 99}, [])
    leases = [{"id": "scheduler", "holder": "scheduler-1", "term": 3, "expires_at": time.time() + 10}]

    def dashboard() -> bytes:
        return sse("snapshot", build_snapshot(ns, ss, ts, leases, [], raft, time.time(), revision=99))

    def tasks_answer() -> bytes:
        return json.dumps({"items": ts}, separators=(",", ":")).encode()

    d_time, d_msg = best(dashboard, a.rounds)
    p_time, p_msg = best(tasks_answer, a.rounds)
    print(f"cluster: {a.nodes} nodes, {a.services} services, {a.tasks} tasks (median of {a.rounds})")
    print(f"dashboard snapshot (build + encode, at most once a second)      : {d_time * 1000:8.1f} ms "
          f"{len(d_msg) / 1024:8.0f} KiB")
    print(f"peer: GET /v1/tasks answer (encode only)                        : {p_time * 1000:8.1f} ms "
          f"{len(p_msg) / 1024:8.0f} KiB")
    print(f"ratio dashboard/peer: time {d_time / p_time:.2f}x, size {len(d_msg) / len(p_msg):.3f}x; "
          f"one gateway core spends {d_time * 100:.1f}% of a second on it, for any number of browsers")


if __name__ == "__main__":
    main()
