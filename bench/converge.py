"""Convergence against Docker Swarm on the same engine (issue 13, item 4): from "create a service of N replicas"
to N running containers, for shoal, Swarm mode and the engine's floor.

    python bench/converge.py                          # N = 10, 50, 200; 2 rounds; all three systems
    python bench/converge.py --sizes 3 --rounds 1     # CI-sized (tests/docker/test_bench_converge.py)
    python bench/converge.py --sizes 50 --no-swarm    # shoal against the floor only (the engine stays as it is)
    python bench/converge.py --sizes 10 --stages      # and where each round's time went, stage by stage

The three, on the engine at SHOAL_DOCKER_HOST (default /var/run/docker.sock), each starting the same container
(`shoal-task:local`, `sleep 3600`, from scripts/docker-images.sh task) N times:

- **floor**: N `docker run -d` CLI processes started at once (the engine's own limit plus a CLI process per
  container, nothing else);
- **shoal**: a `shoal up` cluster (3 raftstores with fsync, NATS, CA, gateway, orchestrator, allocator,
  scheduler, dispatcher) with one agent whose executor is the engine (`SHOAL_EXECUTORS=docker`), started once
  before the rounds; one `POST /v1/services` with `replicas: N` through the gateway;
- **swarm**: `docker swarm init` on that engine (loopback only: advertise and listen on 127.0.0.1), one
  `docker service create --detach --replicas N`; after the round the service is removed and the engine
  **leaves the swarm at once** (`docker swarm leave --force`), so swarm mode is on only during its own rounds.
  If the engine is already part of a swarm the Swarm rounds are skipped and the swarm is left alone.

The clock starts just before the create (the CLI processes, the gateway request, the service create) and stops
when the engine lists N running containers carrying the round's label (`GET /containers/json` filtered by label and
status, polled every 50 ms — the same probe for all three). Rounds alternate the order of the systems. Each
system's containers are removed (and for shoal the service deleted) between measurements, untimed. Printed: every
measurement, then per N the median of each system and the ratios shoal/swarm and shoal/floor, plus the engine's
floor rate (containers/s). Targets (issue 13): shoal <= 0.5x Swarm wherever Swarm is above the floor, <= 1.1x the
floor at N = 10 and <= the floor at N = 50.

`--stages` prints, after each measurement (untimed), where its time went (bench/stages.py): per container the
engine's own `Created` and `State.StartedAt` and, for shoal, the store's task events of the round by writer
(orchestrator: task created, allocator: pending, scheduler: assigned, dispatcher: the agent's report), as p50/max
per stage; and the CPU seconds the engine's processes (dockerd, containerd, shims) and the system's own processes
(shoal's cluster, or the CLI processes of the floor and Swarm; Swarm's manager runs inside dockerd) used during
the measurement."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import stages as stg
from bench.clusterbench import LocalCluster, cpu_seconds, loadavg, stop_on_sigterm

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "shoal-task:local"
COMMAND = ["sleep", "3600"]
LABEL = "shoal.bench.converge"  # value: <run id>-<system>-<n>-<round>, on every container a round starts
POLL = 0.05
ENGINE = os.environ.get("SHOAL_DOCKER_HOST", "unix:///var/run/docker.sock")


# ---- the engine ---------------------------------------------------------------------------------------------
def engine_client(timeout: float = 30.0) -> httpx.Client:
    path = ENGINE.removeprefix("unix://")
    return httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://docker", timeout=timeout)


def engine_problem(image: str = IMAGE) -> str | None:
    """None when the engine answers and the task image is there, else why not."""
    if not ENGINE.startswith(("unix://", "/")):
        return f"bench/converge.py needs a local engine socket (SHOAL_DOCKER_HOST={ENGINE})"
    try:
        with engine_client(3) as c:
            if c.get("/_ping").status_code != 200:
                return f"the Docker engine at {ENGINE} does not answer /_ping"
            if c.get(f"/images/{image}/json").status_code != 200:
                return f"the image {image} is missing (scripts/docker-images.sh task)"
    except (httpx.HTTPError, OSError) as e:
        return f"no Docker engine answers at {ENGINE} ({type(e).__name__}: {e})"
    return None


def running(c: httpx.Client, value: str) -> int:
    """How many containers labelled LABEL=value the engine lists as running."""
    filters = json.dumps({"label": [f"{LABEL}={value}"], "status": ["running"]})
    resp = c.get("/containers/json", params={"filters": filters})
    resp.raise_for_status()
    return len(resp.json())


def labelled(c: httpx.Client, value: str) -> list[str]:
    filters = json.dumps({"label": [f"{LABEL}={value}"]})
    resp = c.get("/containers/json", params={"all": "1", "filters": filters})
    resp.raise_for_status()
    return [str(ct["Id"]) for ct in resp.json()]


def wait_running(c: httpx.Client, value: str, n: int, t0: float, timeout: float) -> float:
    """Seconds from `t0` until N containers of the round run (raises TimeoutError)."""
    while True:
        if running(c, value) >= n:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{value}: fewer than {n} containers running after {timeout:.0f} s")
        time.sleep(POLL)


def wait_gone(c: httpx.Client, value: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while labelled(c, value):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{value}: containers still there after {timeout:.0f} s")
        time.sleep(0.2)


def remove_all(c: httpx.Client, value: str) -> None:
    ids = labelled(c, value)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: c.delete(f"/containers/{i}", params={"force": "1", "v": "1"}), ids))


def docker(*args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


# ---- the systems --------------------------------------------------------------------------------------------
class Floor:
    name = "floor"

    def __init__(self, image: str = IMAGE) -> None:
        self.image = image
        self.t0_wall = 0.0  # time.time() at the start of the last measurement (for --stages)

    def measure(self, c: httpx.Client, n: int, value: str, timeout: float) -> float:
        argv = ["docker", "run", "-d", "--label", f"{LABEL}={value}", self.image, *COMMAND]
        self.t0_wall = time.time()
        t0 = time.perf_counter()
        procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(n)]
        try:
            took = wait_running(c, value, n, t0, timeout)
        finally:
            for p in procs:
                _, err = p.communicate(timeout=timeout)
                if p.returncode != 0:
                    print(f"  floor: docker run failed: {err.decode().strip()[:200]}", flush=True)
        return took

    def clean(self, c: httpx.Client, value: str) -> None:
        remove_all(c, value)

    def close(self) -> None:
        pass


class Swarm:
    """Swarm mode on the engine, for one round at a time: init, create, wait, remove, leave."""

    name = "swarm"

    def __init__(self, image: str = IMAGE) -> None:
        self.image = image
        self.t0_wall = 0.0  # time.time() at the start of the last measurement (for --stages)
        self.service: str | None = None

    def measure(self, c: httpx.Client, n: int, value: str, timeout: float) -> float:
        with socket.socket() as s:  # a free loopback port for the swarm's listener (never 0.0.0.0)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")
        self.service = f"converge-{value}"
        self.t0_wall = time.time()
        t0 = time.perf_counter()
        docker("service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", self.service,
               "--replicas", str(n), "--container-label", f"{LABEL}={value}", self.image, *COMMAND)
        return wait_running(c, value, n, t0, timeout)

    def clean(self, c: httpx.Client, value: str) -> None:
        try:
            if self.service is not None:
                docker("service", "rm", self.service, check=False)
                wait_gone(c, value)
        finally:
            self.service = None
            self.leave()
            remove_all(c, value)

    @staticmethod
    def leave() -> None:
        if swarm_state() != "inactive":
            docker("swarm", "leave", "--force", check=False)

    def close(self) -> None:
        self.leave()


class Shoal:
    """A `shoal up` cluster with one agent running container tasks on the engine."""

    name = "shoal"

    def __init__(self, data_dir: Path, image: str = IMAGE) -> None:
        self.image = image
        self.t0_wall = 0.0
        self.revision = 0  # the store's revision just before the last measurement's create
        self.cluster = LocalCluster(data_dir, agents=1,
                                    extra_env={"SHOAL_EXECUTORS": "docker", "SHOAL_DOCKER_HOST": ENGINE,
                                               "SHOAL_STOP_TASKS_ON_EXIT": "true"})
        t0 = time.perf_counter()
        self.cluster.start(timeout=180)
        self.wait_container_node()
        print(f"shoal up (1 agent, docker executor) ready in {time.perf_counter() - t0:.1f} s", flush=True)
        self.service: str | None = None

    def wait_container_node(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.cluster.admin.get("/v1/nodes").json().get("items", [])
            if any("container" in (nd.get("description") or {}).get("executors", []) and
                   (nd.get("status") or {}).get("state") == "ready" for nd in nodes):
                return
            time.sleep(0.2)
        raise TimeoutError("no READY node advertises the container runtime (is the engine reachable?)")

    def measure(self, c: httpx.Client, n: int, value: str, timeout: float) -> float:
        self.service = f"converge-{value}"
        body = {"name": self.service, "mode": {"replicated": {"replicas": n}},
                "task": {"container": {"image": self.image, "command": COMMAND, "labels": {LABEL: value},
                                       "stop_grace_period": "0s"}}}
        self.revision = int(self.cluster.admin.get("/v1/services").json()["revision"])  # untimed: before t0
        self.t0_wall = time.time()
        t0 = time.perf_counter()
        self.cluster.admin.post("/v1/services", json=body).raise_for_status()
        return wait_running(c, value, n, t0, timeout)

    def store_events(self, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The store's task events of the round (`GET /v1/events`), once all N tasks are RUNNING in the store
        (the agent's reports may land after the engine runs the containers)."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.cluster.admin.get("/v1/tasks", params={"service": self.service, "fields": "status"})
            resp.raise_for_status()
            body = resp.json()
            done = sum(1 for t in body["items"] if (t.get("status") or {}).get("state") == "running")
            if done >= n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        until = int(body["revision"])
        with self.cluster.admin.stream("GET", "/v1/events", params={"since": self.revision, "until": until,
                                                                    "kind": "task"}) as resp:
            resp.raise_for_status()
            return [json.loads(line) for line in resp.iter_lines() if line.strip()]

    def clean(self, c: httpx.Client, value: str) -> None:
        if self.service is not None:
            self.cluster.admin.delete(f"/v1/services/{self.service}").raise_for_status()
            self.service = None
            wait_gone(c, value)

    def close(self) -> None:
        self.cluster.stop()


# ---- rounds -------------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    system: str
    n: int
    round: int
    seconds: float
    load: str
    label: str  # the LABEL value of its containers


ENGINE_PROCESSES = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc")


def engine_cpu() -> float:
    """CPU seconds used so far by the engine's processes on this host (dockerd, containerd, the shims); 0 where
    /proc does not show them (a remote engine)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm in ENGINE_PROCESSES:
                total += cpu_seconds(int(d.name))
    return total


def system_cpu(s: Any) -> float:
    """CPU seconds used so far by a system's own processes: the shoal cluster's, or the CLI processes this
    bench started (the floor's `docker run`s, Swarm's `docker service create`) once they are reaped."""
    if isinstance(s, Shoal):
        return sum(s.cluster.cpu().values())
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def idle_cpu(s: Shoal, seconds: float = 3.0) -> str:
    """The shoal cluster's CPU use while idle (no round running), in cores, per process."""
    time.sleep(1.0)  # let the start-up settle
    before = s.cluster.cpu()
    time.sleep(seconds)
    used = {k: (v - before.get(k, 0.0)) / seconds for k, v in s.cluster.cpu().items()}
    return (f"shoal idle: {sum(used.values()):.2f} cores (" +
            ", ".join(f"{k} {v:.3f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1])) + ")")


def inspect_all(c: httpx.Client, value: str) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: c.get(f"/containers/{i}/json"), labelled(c, value)))
    return [a.json() for a in answers if a.status_code == 200]


def stage_table(c: httpx.Client, s: Any, n: int, value: str) -> str:
    """Where the round's time went (untimed, after the measurement): bench/stages.py."""
    if isinstance(s, Shoal):
        marks = stg.engine_marks(inspect_all(c, value), key="shoal.task.id")
        stg.add_store_marks(marks, s.store_events(n))
        order = stg.SHOAL_MARKS
    else:
        marks = stg.engine_marks(inspect_all(c, value))
        order = stg.ENGINE_MARKS
    return stg.table(s.name, n, stg.stages(s.t0_wall, marks, order))


def run(sizes: list[int], rounds: int, systems: list[Any], timeout: float,
        report: Callable[[Measurement], None], show_stages: bool = False) -> list[Measurement]:
    run_id = uuid.uuid4().hex[:8]
    out: list[Measurement] = []
    with engine_client() as c:
        for r in range(rounds):
            for n in sizes:
                k = (r + sizes.index(n)) % len(systems)
                for s in systems[k:] + systems[:k]:  # alternate which system goes first
                    value = f"{run_id}-{s.name}-{n}-{r}"
                    cpu0 = (engine_cpu(), system_cpu(s)) if show_stages else (0.0, 0.0)
                    procs0 = s.cluster.cpu() if show_stages and isinstance(s, Shoal) else {}
                    try:
                        took = s.measure(c, n, value, timeout)
                    except TimeoutError as e:  # reported as such; the other systems still run
                        print(f"  round {r} N={n:4d} {s.name:6s} {e}", flush=True)
                        took = float("inf")
                    except BaseException:
                        s.clean(c, value)  # never leave the engine in swarm mode
                        raise
                    cpu = (engine_cpu() - cpu0[0], system_cpu(s) - cpu0[1]) if show_stages else (0.0, 0.0)
                    procs1 = s.cluster.cpu() if show_stages and isinstance(s, Shoal) else {}
                    m = Measurement(s.name, n, r, took, loadavg(), value)
                    out.append(m)
                    report(m)
                    if show_stages and took != float("inf"):
                        try:
                            print(stage_table(c, s, n, value), flush=True)
                            print(f"CPU during the measurement: engine {cpu[0]:.2f} s, {s.name} {cpu[1]:.2f} s",
                                  flush=True)
                            if isinstance(s, Shoal):
                                used = {k: v - procs0.get(k, 0.0) for k, v in procs1.items()}
                                print("  " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                       sorted(used.items(), key=lambda kv: -kv[1])), flush=True)
                        except (httpx.HTTPError, KeyError, ValueError) as e:
                            print(f"  stages of {value}: {type(e).__name__}: {e}", flush=True)
                    s.clean(c, value)  # untimed; removing N containers takes a while on a loaded engine
    return out


def summary(results: list[Measurement]) -> str:
    rows = ["| N | floor s | swarm s | shoal s | shoal/swarm | shoal/floor | swarm/floor | floor containers/s |",
            "|---|---|---|---|---|---|---|---|"]
    for n in sorted({m.n for m in results}):
        med = {s: statistics.median([m.seconds for m in results if m.n == n and m.system == s])
               for s in ("floor", "swarm", "shoal") if any(m.n == n and m.system == s for m in results)}

        def ratio(a: str, b: str, med: dict[str, float] = med) -> str:
            return f"{med[a] / med[b]:.2f}x" if a in med and b in med else "-"

        cells = [f"{med[s]:.2f}" if s in med else "-" for s in ("floor", "swarm", "shoal")]
        rate = f"{n / med['floor']:.1f}" if "floor" in med else "-"
        rows.append(f"| {n} | {' | '.join(cells)} | {ratio('shoal', 'swarm')} | {ratio('shoal', 'floor')} | "
                    f"{ratio('swarm', 'floor')} | {rate} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> list[Measurement]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,50,200", help="replica counts, comma-separated (default 10,50,200)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over every size and system (default 2)")
    p.add_argument("--no-swarm", action="store_true", help="skip Swarm mode (the engine is not touched)")
    p.add_argument("--no-shoal", action="store_true", help="skip shoal")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one measurement may take")
    p.add_argument("--stages", action="store_true",
                   help="after each measurement print where its time went (bench/stages.py): p50/max per stage")
    p.add_argument("--image", default=IMAGE, help=f"the container image every system starts (default {IMAGE})")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    problem = engine_problem(a.image)
    if problem is not None:
        raise SystemExit(f"converge: {problem}")
    print(f"converge: N = {sizes}, {a.rounds} rounds, {os.cpu_count()} cores, load {loadavg()}", flush=True)
    systems: list[Any] = [Floor(a.image)]
    if not a.no_swarm:
        state = swarm_state()
        if state == "inactive":
            systems.append(Swarm(a.image))
        else:
            print(f"converge: the engine's swarm state is {state!r}: not touching it, no Swarm rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-converge-") as tmp:
        try:
            if not a.no_shoal:
                systems.append(Shoal(Path(tmp), a.image))
                if a.stages:  # what the cluster burns doing nothing, to read the per-round CPU against
                    print(idle_cpu(systems[-1]), flush=True)
            results = run(sizes, a.rounds, systems, a.timeout,
                          lambda m: print(f"  round {m.round} N={m.n:4d} {m.system:6s} {m.seconds:7.2f} s  "
                                          f"(load {m.load})", flush=True), a.stages)
        finally:
            for s in systems:
                s.close()
    print(f"\nmedians (load {loadavg()}):")
    print(summary(results))
    return results


if __name__ == "__main__":
    stop_on_sigterm()
    main()
