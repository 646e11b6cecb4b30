"""Shared by bench/scale.py and bench/footprint.py: a real `shoal up` cluster (shoal.supervisor, free loopback
ports), its processes' resident memory and CPU time from /proc, and an admin client to its gateway."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from shoal import transport
from shoal.scale import write_scale
from shoal.supervisor import Layout, Supervisor
from tests.e2e.harness import free_base_port

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stop_on_sigterm() -> None:
    """A benchmark stopped with SIGTERM (`kill`, `timeout`; a shell's background job ignores SIGINT) exits through
    its `finally` blocks, so the cluster, containers and swarm mode it started are stopped, not orphaned."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def family(pid: int) -> list[int]:
    """`pid` and its live descendants (/proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: the counters of nats-server's `/varz` a benchmark reports (messages and bytes in and out of the server)
NATS_COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class LocalCluster:
    """`shoal up` on free ports under `data_dir`: `agents` agent processes and `hollow_nodes` hollow nodes."""

    def __init__(self, data_dir: Path, *, agents: int = 0, hollow_nodes: int = 0,
                 heartbeat_period: float = 5.0, extra_env: dict[str, str] | None = None,
                 dispatchers: int = 1, hollow_processes: int = 1) -> None:
        base = free_base_port()
        self.dispatchers = dispatchers
        if dispatchers > 1:  # `shoal up --scale dispatcher=N`: the extra instances join and start after the rest
            data_dir.mkdir(parents=True, exist_ok=True)
            write_scale(data_dir, {"dispatcher": dispatchers})
        self.layout = Layout(data_dir, base_port=base, gateway_port=base + 45, agents=agents,
                             hollow_nodes=hollow_nodes, hollow_processes=hollow_processes,
                             heartbeat_period=heartbeat_period,
                             log_level=os.environ.get("SHOAL_BENCH_LOG_LEVEL", "WARNING"),
                             extra_env=extra_env or {}, nats_monitor_port=free_port())
        self.sup = Supervisor(self.layout)
        self._admin: httpx.Client | None = None
        self._manager: httpx.Client | None = None

    def start(self, timeout: float) -> LocalCluster:
        self.sup.start()
        self.sup.wait_healthy(timeout)
        deadline = time.monotonic() + timeout
        while self.dispatchers > 1 and sum(1 for n in self.pids() if n.startswith("dispatcher")) < self.dispatchers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.pids()} run: the extra dispatchers did not start "
                                   f"({self.sup.scale_problem})")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        for c in (self._admin, self._manager):
            if c is not None:
                c.close()
        self.sup.stop()

    @property
    def admin(self) -> httpx.Client:
        if self._admin is None:
            creds = transport.Credentials.client_bundle(self.layout.client_dir)
            self._admin = transport.sync_http_client(creds, base_url=self.layout.gateway_url, timeout=60.0)
        return self._admin

    @property
    def manager(self) -> httpx.Client:
        """The gateway's identity, for the raftstore members' own status."""
        if self._manager is None:
            self._manager = transport.sync_http_client(transport.Credentials(self.layout.cert_dir("gateway")),
                                                       timeout=10.0)
        return self._manager

    def nats_counters(self) -> dict[str, int]:
        """nats-server's message and byte counters so far (its monitoring endpoint, plain HTTP on loopback)."""
        varz = httpx.get(f"http://127.0.0.1:{self.layout.nats_monitor_port}/varz", timeout=10.0).json()
        return {k: int(varz[k]) for k in NATS_COUNTERS}

    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self.sup.children.items() if c.pid is not None and c.alive()}

    def rss(self) -> dict[str, int]:
        """Each process's RSS, its descendants' added (the hollow nodes' extra processes)."""
        return {name: sum(rss_bytes(p) for p in family(pid)) for name, pid in self.pids().items()}

    def cpu(self) -> dict[str, float]:
        """Each process's CPU seconds, its live descendants' added."""
        return {name: sum(cpu_seconds(p) for p in family(pid)) for name, pid in self.pids().items()}

    def raft_status(self, i: int = 1) -> dict[str, Any]:
        r = self.manager.get(self.layout.raft_api(i) + "/v1/status")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


@dataclass
class Sampler:
    """A thread that, every `interval`, times `probe()` (a gateway read) and keeps every process's peak RSS."""

    cluster: LocalCluster
    probe: Callable[[], Any]
    interval: float = 0.5
    latencies: list[float] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                self.probe()
                self.latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                self.latencies.append(float("inf"))
            for name, rss in self.cluster.rss().items():
                self.peak_rss[name] = max(rss, self.peak_rss.get(name, 0))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
