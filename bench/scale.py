"""shoal end to end at scale (issue 13, item 2): N hollow nodes, services totalling M replicas, until every task
is RUNNING.

    python bench/scale.py --nodes 1000 --tasks 100000 --services 10   # the issue's target size
    python bench/scale.py --nodes 50 --tasks 2000                      # the soak test's size
    python bench/scale.py --nodes 5 --tasks 100 --idle 0               # CI-sized (tests/e2e/test_hollow_nodes.py)

A real `shoal up` cluster on free loopback ports (NATS, 3 raftstores with fsync, CA, gateway, orchestrator,
allocator, scheduler, one dispatcher) with no agent processes and `--hollow-nodes N` (agent/hollow.py: N agents in
one process, each joined through the CA with its own certificate, session, heartbeats and assignment stream;
only the task runtime is simulated). Once every node is READY, `--idle` seconds of heartbeats measure the
dispatcher's CPU with N nodes connected (item 7). Then the services are created through the gateway (replicated,
a process task the hollow executor "runs") and `GET /v1/services` is polled every 0.5 s until the running
replicas add up to M; that poll is also the latency probe (p50/p99 during the run).

Reported: end-to-end time (first create to all RUNNING) and tasks/s; raft entries (the leader's commit index
moved) and their rate; WAL bytes written on member 1 and its snapshot size; NATS messages and bytes published
and delivered (nats-server's `/varz`, its monitoring port opened on loopback for the run); the peak RSS of every
process and its growth per 1,000 tasks; CPU seconds per task by process. The peer measured in the same run: the
scheduler's pure core placing the same M tasks on N nodes (bench/scheduler.py's case), so `e2e / core` says how
much of the time is the path rather than the algorithm."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clusterbench import LocalCluster, Sampler, dir_bytes, loadavg, mib, pct, stop_on_sigterm

HOLLOW_PER_PROCESS = 100  # hollow nodes per process by default (agent/hollow.py --processes)


def scheduler_core_seconds(nodes: int, tasks: int) -> float:
    """The scheduler's pure core placing `tasks` on `nodes` (the same case bench/scheduler.py runs)."""
    from bench.scheduler import Case, run_case

    return float(run_case(Case("peer", nodes, tasks, False)).wall)


def running_total(cluster: LocalCluster) -> tuple[int, int] | None:
    """RUNNING and desired replicas summed over the services; None when the gateway answered an error or did not
    answer in time (a loaded cluster's 503 or timeout: the caller polls again, the run's deadline still holds)."""
    try:
        r = cluster.admin.get("/v1/services")
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    items = r.json()["items"]
    return sum(s["status"]["running"] for s in items), sum(s["status"]["desired"] for s in items)


def dispatchers_pct(pct_by_process: dict[str, float]) -> float:
    """The dispatchers' share summed (`dispatcher`, `dispatcher-2`, ...)."""
    return sum(v for k, v in pct_by_process.items() if k.startswith("dispatcher"))


def dispatcher_requests(cluster: LocalCluster) -> float:
    """HTTP requests the (first) dispatcher answered so far, every route summed (its /metrics)."""
    r = cluster.manager.get(cluster.layout.url_of("dispatcher") + "/metrics")
    r.raise_for_status()
    return sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines()
               if line.startswith("shoal_http_requests_total{"))


def dispatcher_connections(cluster: LocalCluster) -> int:
    """Established TCP connections to the (first) dispatcher's port (`ss`), the scrape's own included."""
    port = cluster.layout.port_of("dispatcher")
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=False).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def run(nodes: int, tasks: int, services: int, idle: float, timeout: float, data_dir: Path,
        start_timeout: float | None = None, dispatchers: int = 1, hollow_processes: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": nodes, "tasks": tasks, "services": services, "dispatchers": dispatchers,
                           "hollow_processes": hollow_processes}
    cluster = LocalCluster(data_dir, agents=0, hollow_nodes=nodes, heartbeat_period=5.0, dispatchers=dispatchers,
                           hollow_processes=hollow_processes)
    t_start = time.perf_counter()
    try:
        cluster.start(timeout=start_timeout or max(180.0, nodes * 1.5))
        out["cluster_ready_s"] = time.perf_counter() - t_start
        print(f"cluster with {nodes} hollow nodes ready in {out['cluster_ready_s']:.1f} s (load {loadavg()})",
              flush=True)
        if idle > 0:
            c0, n0 = cluster.cpu(), dispatcher_requests(cluster)
            time.sleep(idle)
            c1, n1 = cluster.cpu(), dispatcher_requests(cluster)
            out["idle_cpu_pct"] = {k: 100 * (c1[k] - c0.get(k, 0.0)) / idle for k in c1}
            out["idle_requests_per_s"] = (n1 - n0) / idle
            out["idle_dispatcher_rss"] = cluster.rss().get("dispatcher", 0)
            out["idle_connections"] = dispatcher_connections(cluster)
            print(f"idle {idle:.0f} s with {nodes} nodes heartbeating every 5 s: {dispatchers} dispatcher(s) "
                  f"{dispatchers_pct(out['idle_cpu_pct']):.1f} % of a core, hollow-agents "
                  f"{out['idle_cpu_pct'].get('hollow-agents', 0):.1f} % (load {loadavg()}); the dispatcher "
                  f"answered {out['idle_requests_per_s']:.0f} requests/s ({out['idle_requests_per_s'] / nodes:.3f} "
                  f"a node), holds {out['idle_connections']} connections ({out['idle_connections'] / nodes:.1f} a "
                  f"node), RSS {mib(out['idle_dispatcher_rss'])}", flush=True)
        rss0 = cluster.rss()
        cpu0 = cluster.cpu()
        commit0 = int(cluster.raft_status()["commit_index"])
        nats0 = cluster.nats_counters()
        wal0 = dir_bytes(cluster.layout.data_dir / "raft" / "1")
        sampler = Sampler(cluster, lambda: cluster.admin.get("/v1/services").raise_for_status()).start()
        t0 = time.perf_counter()
        per = [tasks // services + (1 if i < tasks % services else 0) for i in range(services)]
        for i, n in enumerate(per):
            r = cluster.admin.post("/v1/services", json={
                "name": f"scale{i}", "mode": {"replicated": {"replicas": n}},
                "task": {"process": {"command": ["sleep", "infinity"]}}})
            r.raise_for_status()
        running = 0
        deadline = t0 + timeout
        while True:
            total = running_total(cluster)
            running = total[0] if total is not None else running
            if running >= tasks or time.perf_counter() > deadline:
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        sampler.stop()
        cpu1 = cluster.cpu()
        commit1 = int(cluster.raft_status()["commit_index"])
        nats1 = cluster.nats_counters()
        raft_dir = cluster.layout.data_dir / "raft" / "1"
        out.update({
            "running": running, "seconds": elapsed, "tasks_per_s": running / elapsed,
            "raft_entries": commit1 - commit0, "raft_entries_per_s": (commit1 - commit0) / elapsed,
            "wal_bytes": dir_bytes(raft_dir) - wal0,
            "snapshot_bytes": sum(p.stat().st_size for p in raft_dir.rglob("*snap*") if p.is_file()),
            "services_p50_ms": 1e3 * pct(sampler.latencies, 0.5),
            "services_p99_ms": 1e3 * pct(sampler.latencies, 0.99), "probes": len(sampler.latencies),
            "peak_rss": sampler.peak_rss, "rss_before": rss0,
            "cpu_s": {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1},
            "nats": {k: nats1[k] - nats0[k] for k in nats1},
        })
        if running < tasks:
            out["timed_out"] = True
    finally:
        cluster.stop()
    return out


def report(r: dict[str, Any], core: float | None) -> None:
    print(f"\n{r['nodes']} hollow nodes, {r['tasks']} replicas in {r['services']} services, {r['dispatchers']} "
          f"dispatcher(s) (load {loadavg()})")
    print(f"  cluster ready (every node joined and READY) in {r['cluster_ready_s']:.1f} s; the hollow nodes in "
          f"{r['hollow_processes']} process(es)")
    state = "TIMED OUT at " if r.get("timed_out") else ""
    print(f"  {state}{r['running']}/{r['tasks']} RUNNING in {r['seconds']:.1f} s: {r['tasks_per_s']:.0f} tasks/s")
    print(f"  raft entries {r['raft_entries']} ({r['raft_entries_per_s']:.0f}/s), WAL +{mib(r['wal_bytes'])}, "
          f"snapshot {mib(r['snapshot_bytes'])}")
    n = r["nats"]
    print(f"  NATS: {n['in_msgs']} messages published ({n['in_msgs'] / r['seconds']:.0f}/s, {mib(n['in_bytes'])}), "
          f"{n['out_msgs']} delivered ({mib(n['out_bytes'])})")
    print(f"  GET /v1/services during the run: p50 {r['services_p50_ms']:.0f} ms, p99 {r['services_p99_ms']:.0f} ms "
          f"({r['probes']} probes)")
    total_cpu = sum(r["cpu_s"].values())
    print(f"  CPU {1e3 * total_cpu / max(1, r['running']):.2f} ms per task summed over processes:")
    k = max(1, r["tasks"]) / 1000
    for name in sorted(r["peak_rss"], key=lambda n: -r["peak_rss"][n]):
        grow = (r["peak_rss"][name] - r["rss_before"].get(name, 0)) / k
        print(f"    {name:16s} peak RSS {mib(r['peak_rss'][name]):>9s}  +{grow / 2**10:7.0f} KiB per 1k tasks  "
              f"CPU {r['cpu_s'].get(name, 0):6.1f} s ({100 * r['cpu_s'].get(name, 0) / max(total_cpu, 1e-9):.0f} %)")
    print(f"  peak RSS summed: {mib(sum(r['peak_rss'].values()))}")
    if core is not None:
        print(f"  peer: the scheduler core places {r['tasks']} tasks on {r['nodes']} nodes in {core:.2f} s; "
              f"end to end / core = {r['seconds'] / max(core, 1e-9):.0f}x")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle heartbeats measured (0: skip)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for RUNNING after this")
    p.add_argument("--start-timeout", type=float, help="seconds for every node to be READY (default 1.5 s a node)")
    p.add_argument("--data-dir", type=Path, help="keep the cluster's data here (default: a temporary dir)")
    p.add_argument("--hollow-processes", type=int,
                   help="processes the hollow nodes are split over (default: one per 100 nodes)")
    p.add_argument("--dispatchers", type=int, default=1,
                   help="dispatcher instances (`shoal up --scale dispatcher=N`); the nodes spread over them")
    a = p.parse_args(argv)
    procs = a.hollow_processes or max(1, -(-a.nodes // HOLLOW_PER_PROCESS))
    print(f"scale: {a.nodes} hollow nodes, {a.tasks} tasks, {a.services} services (load {loadavg()})", flush=True)
    core = scheduler_core_seconds(a.nodes, a.tasks)
    if a.data_dir is not None:
        r = run(a.nodes, a.tasks, a.services, a.idle, a.timeout, a.data_dir, a.start_timeout, a.dispatchers, procs)
    else:
        with tempfile.TemporaryDirectory(prefix="shoal-bench-scale-") as tmp:
            r = run(a.nodes, a.tasks, a.services, a.idle, a.timeout, Path(tmp), a.start_timeout, a.dispatchers, procs)
    r["core_seconds"] = core
    report(r, core)
    return r


if __name__ == "__main__":
    stop_on_sigterm()
    main()
