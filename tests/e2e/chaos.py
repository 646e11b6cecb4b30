"""Whole-cluster chaos on a real `shoal up` cluster (tests/e2e/harness.py), shared by the process runtime test
(tests/e2e/test_chaos.py) and the container one (tests/docker/test_docker_chaos.py).

For a while, random service creates, scales, rolling updates and deletes go through the API while random
cluster processes — raftstore members (the Raft leader among them), gateway, orchestrator, allocator,
scheduler, dispatcher, agents and nats-server — are SIGKILLed (the supervisor restarts them) or SIGSTOPped for
up to a few seconds; half the agent kills come right after a scale-up, while the agent may be starting tasks it
has not saved yet. Then the faults stop, and within a bound the cluster must converge to:

1. every service exactly at its replica count RUNNING, nothing else of it wanted running, no slot twice;
2. the task workloads that really run on the machine (found by a per-run marker in their environment or
   labels, independent of the agent's own marks) exactly the RUNNING tasks: no orphan, no duplicate, each on
   the node the store says;
3. nothing acknowledged lost: every service created (201) and not deleted exists;
4. after the cluster is stopped (`Supervisor.stop`, what `shoal down` runs): no workload of the run left.

Every random choice comes from one seeded RNG, printed with the log of what was done (timings are real, so a
replay repeats the choices, not the interleaving)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shoal import transport
from tests.e2e.harness import Cluster, items

#: every kind of cluster process a fault may hit (agents and nats-server included)
TARGETS = ("nats", "raftstore-1", "raftstore-2", "raftstore-3", "gateway", "orchestrator", "allocator",
           "scheduler", "dispatcher", "agent-1", "agent-2")
#: agents twice as often: a task started just before its agent dies is where orphans come from
WEIGHTS = tuple(2 if t.startswith("agent-") else 1 for t in TARGETS)
MAX_SERVICES = 4
MAX_REPLICAS = 4

#: task id -> [(node id, pid or container id)] of the workloads really running
Live = dict[str, list[tuple[str, str]]]


def live_processes(run_id: str) -> Live:
    """Processes on this machine whose environment carries CHAOS_RUN=<run_id> (zombies excluded)."""
    needle = f"CHAOS_RUN={run_id}".encode()
    out: Live = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if needle not in env:
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
            continue
        values = dict(e.decode(errors="replace").partition("=")[::2] for e in env if b"=" in e)
        out.setdefault(values.get("SHOAL_TASK_ID", "?"), []).append((values.get("SHOAL_NODE_ID", "?"), str(pid)))
    return out


def process_task(run_id: str, generation: int) -> dict[str, Any]:
    return {"process": {"command": ["sleep", "100000"], "stop_grace_period": "1s",
                        "env": {"CHAOS_RUN": run_id, "GENERATION": str(generation)}}}


@dataclass
class Chaos:
    cluster: Cluster
    seed: int
    run_id: str
    task_spec: Callable[[str, int], dict[str, Any]] = process_task
    live: Callable[[str], Live] = live_processes
    rng: random.Random = field(init=False)
    log: list[str] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)  # created (201), and no delete of it was sent
    doing: str = ""
    paused: dict[str, float] = field(default_factory=dict)
    counter: int = 0
    generation: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        creds = transport.Credentials.client_bundle(self.cluster.layout.client_dir)
        self.http = transport.sync_http_client(creds, base_url=self.cluster.layout.gateway_url, timeout=3.0)
        self.t0 = time.monotonic()

    def note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:7.2f}s {what}")

    # ---- the workload: API operations ---------------------------------------------------------------------
    def operate(self) -> None:
        r = self.rng.random()
        self.doing = "?"
        try:
            if not self.services or (r < 0.25 and len(self.services) < MAX_SERVICES):
                self.counter += 1
                name = f"chaos-{self.counter}"
                replicas = self.rng.randint(1, MAX_REPLICAS)
                self.doing = f"create {name}"
                spec = {"name": name, "mode": {"replicated": {"replicas": replicas}},
                        "task": {**self.task_spec(self.run_id, 0), "restart": {"condition": "any", "delay": "0.5s"}},
                        "update_config": {"parallelism": 2, "delay": "0s", "monitor": "0.5s",
                                          "failure_action": "continue"}}
                resp = self.http.post("/v1/services", json=spec)
                self.note(f"create {name} x{replicas} -> {resp.status_code}")
                if resp.status_code == 201:
                    self.services.add(name)
                    self.acked.add(name)
                return
            name = self.rng.choice(sorted(self.services))
            if r < 0.55:
                self._update(name, "scale", replicas=self.rng.randint(0, MAX_REPLICAS))
            elif r < 0.85:
                self.generation += 1
                self._update(name, "update", generation=self.generation)
            else:
                self.doing = f"delete {name}"
                first_delete = name in self.acked
                self.acked.discard(name)  # from now on it may be gone (a timed-out delete is not a failed one)
                resp = self.http.delete(f"/v1/services/{name}")
                self.note(f"delete {name} -> {resp.status_code}")
                if resp.status_code in (200, 204, 404):
                    self.services.discard(name)
                if resp.status_code == 404 and first_delete:
                    self.acked.add(name)  # it was gone before any delete: `violations` reports the lost service
        except (httpx.HTTPError, ValueError, KeyError) as e:
            self.note(f"api error during {self.doing}: {type(e).__name__}: {e}")

    def _update(self, name: str, what: str, *, replicas: int | None = None, generation: int | None = None) -> None:
        self.doing = f"{what} {name}"
        svc = self.http.get(f"/v1/services/{name}")
        if svc.status_code != 200:
            self.note(f"{what} {name}: get -> {svc.status_code}")
            return
        body = svc.json()
        spec = body["spec"]
        if replicas is not None:
            spec["mode"] = {"replicated": {"replicas": replicas}}
        if generation is not None:  # a rolling update: a new task spec
            restart = spec["task"].get("restart")
            spec["task"] = {**self.task_spec(self.run_id, generation), "restart": restart}
        resp = self.http.put(f"/v1/services/{name}", json={"version": body["meta"]["version"], "spec": spec})
        self.note(f"{what} {name} {replicas if replicas is not None else generation} -> {resp.status_code}")

    # ---- the faults ----------------------------------------------------------------------------------------
    def fault(self) -> None:
        now = time.monotonic()
        target = self.rng.choices(TARGETS, WEIGHTS)[0]
        if self.rng.random() < 0.25:
            leader = self.cluster.raft_leader()
            if leader is not None:
                target = f"raftstore-{leader}"
        if target in self.paused:
            return
        if target.startswith("agent-") and self.services and self.rng.random() < 0.5:
            # New tasks, then their agent killed while it may be starting them: before it saved them.
            name = self.rng.choice(sorted(self.services))
            try:
                self._update(name, "scale", replicas=MAX_REPLICAS)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                self.note(f"api error during scale {name}: {type(e).__name__}: {e}")
            time.sleep(self.rng.uniform(0.05, 1.0))
            pid = self.cluster.sup.kill(target, signal.SIGKILL)
            self.note(f"SIGKILL {target} (pid {pid}) while tasks start")
            return
        if self.rng.random() < 0.6:
            pid = self.cluster.sup.kill(target, signal.SIGKILL)
            self.note(f"SIGKILL {target} (pid {pid})")
        else:
            seconds = self.rng.uniform(0.5, 5.0)
            pid = self.cluster.sup.kill(target, signal.SIGSTOP)
            self.paused[target] = now + seconds
            self.note(f"SIGSTOP {target} (pid {pid}) for {seconds:.1f}s")

    def resume_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for name, until in list(self.paused.items()):
            if everything or now >= until:
                self.cluster.sup.kill(name, signal.SIGCONT)
                del self.paused[name]
                self.note(f"SIGCONT {name}")

    def run(self, seconds: float) -> None:
        """API operations about every 0.6 s and faults about every 1.5 s for `seconds`, then every paused
        process resumed."""
        end = time.monotonic() + seconds
        next_op = next_fault = time.monotonic()
        try:
            while (now := time.monotonic()) < end:
                self.resume_due()
                if now >= next_op:
                    self.operate()
                    next_op = now + self.rng.uniform(0.2, 1.0)
                if now >= next_fault:
                    self.fault()
                    next_fault = now + self.rng.uniform(0.5, 2.5)
                time.sleep(0.05)
        finally:
            self.resume_due(everything=True)
            self.note("faults stopped")

    # ---- the invariants --------------------------------------------------------------------------------------
    def violations(self) -> list[str]:
        """[] once every invariant holds; else what does not (raises httpx errors while the API is down)."""
        http = self.http
        services = items(http.get("/v1/services").raise_for_status().json())
        tasks = items(http.get("/v1/tasks").raise_for_status().json())
        live = self.live(self.run_id)
        out: list[str] = []
        running = {t["id"]: t for t in tasks
                   if t["status"]["state"] == "running" and t["desired_state"] == "running"}
        by_id = {s["id"]: s for s in services}
        names = {s["spec"]["name"] for s in services}
        out.extend(f"service {n} was created (201) and never deleted, but is gone" for n in sorted(self.acked - names))
        for svc in services:
            want = int(svc["spec"]["mode"]["replicated"]["replicas"])
            mine = [t for t in running.values() if t["service_id"] == svc["id"]]
            wanted = [t for t in tasks if t["service_id"] == svc["id"] and t["desired_state"] == "running"]
            if len(mine) != want or len(wanted) != want:
                out.append(f"{svc['spec']['name']}: {len(mine)} running, {len(wanted)} wanted running, "
                           f"replicas {want}")
            slots = [t["slot"] for t in mine]
            if len(set(slots)) != len(slots):
                out.append(f"{svc['spec']['name']}: a slot runs twice: {sorted(slots)}")
        for tid, t in running.items():
            if t["service_id"] not in by_id:
                out.append(f"task {tid} RUNNING for a deleted service")
            workloads = live.get(tid, [])
            if not workloads:
                out.append(f"task {tid} RUNNING on {t['node_id']} but no workload of it runs")
        for tid, workloads in live.items():
            if tid not in running:
                out.append(f"orphan: task {tid} runs ({workloads}) and is not a RUNNING task")
            elif len(workloads) != 1:
                out.append(f"duplicate: task {tid} runs {len(workloads)} times: {workloads}")
            elif workloads[0][0] != running[tid]["node_id"]:
                out.append(f"task {tid} runs on node {workloads[0][0]}, the store says {running[tid]['node_id']}")
        return out

    def converge(self, timeout: float, stable: float = 6.0) -> float:
        """Seconds until every invariant held — with every cluster process up, and then for `stable` seconds
        on end (longer than an agent's reconcile interval and three heartbeats, so a state seen while an
        agent restarts does not pass); fails with the last violations and the run's log."""
        start = time.monotonic()
        last: list[str] = ["never checked"]
        clean_since: float | None = None
        while time.monotonic() - start < timeout:
            down = [n for n, c in self.cluster.sup.children.items() if not c.alive()]
            try:
                last = [f"not running: {down}"] if down else self.violations()
            except (httpx.HTTPError, ValueError) as e:
                last = [f"api: {type(e).__name__}: {e}"]
            now = time.monotonic()
            if last:
                clean_since = None
            elif clean_since is None:
                clean_since = now
            elif now - clean_since >= stable:
                took = clean_since - start
                self.note(f"converged after {took:.1f}s (and held {stable:.0f}s)")
                return took
            time.sleep(0.5)
        raise AssertionError(f"seed {self.seed}: not converged {timeout:.0f}s after the faults stopped:\n  "
                             + "\n  ".join(last) + "\nrun log:\n" + "\n".join(self.log))

    def close(self) -> None:
        self.resume_due(everything=True)
        self.http.close()


def chaos_seed(config_seed: int | None, default: int | None) -> int:
    """`--seed` replays a run; else the fixed CI seed, or (soak) a fresh one."""
    if config_seed is not None:
        return config_seed
    return default if default is not None else random.SystemRandom().randrange(1 << 30)


def soak_seconds(default: float) -> float:
    return float(os.environ.get("SHOAL_SOAK_SECONDS", default))
