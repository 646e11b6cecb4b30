"""shoal's raftstore against etcd: committed writes/s, latency and CPU per write, plus leader failover.

    python bench/raftstore.py                          # 1/16/64 clients, 10 s each, both stores, 20 failovers
    python bench/raftstore.py --quick                  # a few seconds per level, 3 failovers (CI-sized)
    python bench/raftstore.py --clients 64 --seconds 20 --failover-trials 0 --profile /tmp/bench-prof
    python bench/raftstore.py --no-etcd --at-rest both --rounds 4    # encryption at rest on against off
    python bench/raftstore.py --wal-only --rounds 8 --seconds 3       # the same, on the WAL write path alone

Both clusters are 3 members on loopback with fsync on (shoal: `python -m services.raftstore` via
tests/integration/raftprocs.py; etcd: Debian's etcd-server, `scripts/etcd.sh` installs it), each with fresh
temporary data directories and free ports, and both run for the whole throughput section. For every concurrency
level the same load generator drives shoal and then etcd: C threads, each with one persistent `http.client`
connection to the leader, writing 256-byte values under unique keys back to back —

- shoal: `POST /v1/txn` `{"ops": [{"op": "create", "kind": "config", "object": {"id": ..., "data": <256 B>}}]}`
- etcd:  `POST /v3/kv/put` `{"key": base64, "value": base64(<256 B>)}` (the JSON gateway of etcd's gRPC API)

A write counts when its 200 answer arrives inside the measured window (after a warm-up); CPU is the utime+stime
of the member processes from /proc, summed over the window. The generator shares the machine's cores with the
members, so the figures are a floor for both stores.

Failover (on a new cluster; etcd's too with --failover-etcd): one client writes continuously through the two
members that will survive, moving to the other member and retrying after 10 ms on any error or after a 0.1 s
request timeout; the leader is killed with SIGKILL; the time from the kill to the acknowledgement of the first
write sent after it is one trial. The killed member is restarted and the cluster settles before the next trial
(--failover-fresh: a new cluster per trial instead).

Encryption at rest (`--at-rest both`): a second shoal cluster whose members run with SHOAL_RAFT_BENCH_PLAINTEXT
(the same WAL and snapshot framing, records not encrypted) is measured beside the normal one: every level runs
`--rounds` windows per store in alternating order (A B B A ...), failover trials alternate likewise, and the cost
of encryption is the difference of the medians (writes/s, failover time) against that control.

Transport: shoal only speaks mutual TLS (every member and the load generator hold certificates of one test
cluster, `ClusterCerts`), so each client connection is `https` with a client certificate, set up once per
connection (persistent connections: the handshake is not in the per-write cost). etcd runs with its TLS flags
(`--etcd-tls on`, the default: client and peer certificates required, like for like), in plaintext
(`off`), or both side by side (`both`: etcd's own cost of TLS, a reference for shoal's, which has no
plaintext mode to compare with)."""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.transport import Credentials
from tests.integration.raftprocs import ClusterCerts, RaftProcs, free_ports

VALUE = (os.urandom(128).hex()).encode()  # 256 bytes, printable: the same value for both stores
assert len(VALUE) == 256
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- measuring helpers -----------------------------------------------------------------------------------
def proc_cpu(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds ((0, 0) if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may contain spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pct(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, {"content-type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


Connect = Callable[[str, int, float], http.client.HTTPConnection]


def plain(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(host, port, timeout=timeout)


def tls(ctx: ssl.SSLContext) -> Connect:
    """Connections over TLS with `ctx` (which carries the client certificate)."""
    def connect(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)

    return connect


def client_tls(creds: Credentials) -> Connect:
    return tls(creds.context("client"))


def get_json(host: str, port: int, path: str, method: str = "GET", timeout: float = 2.0,
             connect: Connect = plain) -> Any:
    conn = connect(host, port, timeout)
    try:
        conn.request(method, path, b"{}" if method == "POST" else None)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def wait_for(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def shoal_body(tag: str, k: int, n: int) -> bytes:
    """One create of a `config` object carrying the 256-byte value (unique id per write)."""
    return b'{"ops":[{"op":"create","kind":"config","object":{"id":"%s-%d-%d","data":"%s"}}]}' % (
        tag.encode(), k, n, VALUE)


# ---- the systems under test ------------------------------------------------------------------------------
class System:
    """A running 3-member store: where the leader listens, how a write looks, which pids to account."""

    name = ""
    path = ""
    connect: Connect = staticmethod(plain)  # type: ignore[assignment]

    def leader_addr(self) -> tuple[str, int]:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def body(self, tag: str, k: int, n: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


#: the control of `--at-rest both`: members that frame their WAL and snapshot records as usual but do not
#: encrypt them (services/raftstore/settings.py `raft_bench_plaintext`, atrest.PlainSealer)
PLAINTEXT_ENV = {"SHOAL_RAFT_BENCH_PLAINTEXT": "1"}
#: seconds a member may take to answer /healthz at start (a loaded machine is slow; the figures say the load)
START_TIMEOUT = 120.0


class Shoal(System):
    name = "shoal"
    path = "/v1/txn"

    def __init__(self, base: Path, *, plaintext: bool = False) -> None:
        if plaintext:
            self.name = "shoal-plain"
        # fsync is always on in the raftstore
        self.cluster = RaftProcs(base, 3, extra_env=PLAINTEXT_ENV if plaintext else None).start_all(START_TIMEOUT)
        self.connect = client_tls(self.cluster.certs.client("gateway"))
        try:
            self.leader = self.cluster.wait_leader(30)
        except BaseException:
            self.cluster.close()
            raise

    def leader_addr(self) -> tuple[str, int]:
        self.leader = self.cluster.wait_leader(30)
        return "127.0.0.1", self.cluster.api_ports[self.leader]

    def pids(self) -> list[int]:
        return [p.pid for p in self.cluster.procs.values()]

    def body(self, tag: str, k: int, n: int) -> bytes:
        return shoal_body(tag, k, n)

    def metrics(self) -> dict[str, float]:
        conn = self.connect("127.0.0.1", self.cluster.api_ports[self.leader], 5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("shoal_") and " " in line:
                name, _, value = line.partition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def close(self) -> None:
        self.cluster.close()


class Etcd(System):
    name = "etcd"
    path = "/v3/kv/put"

    def __init__(self, base: Path, binary: str, use_tls: bool = True) -> None:
        ports = free_ports(6)
        self.client_ports = ports[:3]
        peer_ports = ports[3:]
        scheme = "https" if use_tls else "http"
        if use_tls:
            self.name = "etcd-tls"
        initial = ",".join(f"e{i}={scheme}://127.0.0.1:{peer_ports[i]}" for i in range(3))
        self.base = base
        self.args: list[list[str]] = []
        certs = ClusterCerts(base) if use_tls else None
        if certs is not None:
            self.connect = client_tls(certs.client("gateway"))
        for i in range(3):
            client_url = f"{scheme}://127.0.0.1:{self.client_ports[i]}"
            peer_url = f"{scheme}://127.0.0.1:{peer_ports[i]}"
            # Defaults otherwise (fsync on, heartbeat 100 ms, election timeout 1000 ms); a restarted member
            # finds its data directory and ignores the --initial-* flags.
            self.args.append([binary, "--name", f"e{i}", "--data-dir", str(base / f"e{i}"),
                              "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                              "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                              "--initial-cluster", initial, "--initial-cluster-state", "new",
                              "--initial-cluster-token", base.name, "--logger", "zap", "--log-level", "warn",
                              *(etcd_tls_flags(certs.member_dir(i + 1)) if certs is not None else [])])
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for i in range(3):
                self.start(i)
            self.leader_port = wait_for(self._leader, 30, "an etcd leader")
        except BaseException:
            self.close()
            raise

    def start(self, i: int) -> None:
        with open(self.base / f"etcd-{i}.log", "ab") as logf:
            self.procs[i] = subprocess.Popen(self.args[i], stdout=logf, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)

    def statuses(self) -> list[Any]:
        return [get_json("127.0.0.1", port, "/v3/maintenance/status", "POST", connect=self.connect)
                for port in self.client_ports]

    def _leader(self) -> int | None:
        statuses = self.statuses()
        if any(s is None for s in statuses):
            return None
        leaders = {s["leader"] for s in statuses}
        if len(leaders) != 1 or "0" in leaders:
            return None
        lead = leaders.pop()
        return next((port for port, s in zip(self.client_ports, statuses, strict=True)
                     if s["header"]["member_id"] == lead), None)

    def converged(self) -> bool:
        statuses = self.statuses()
        return all(s is not None for s in statuses) and len({s["raftAppliedIndex"] for s in statuses}) == 1

    def leader_addr(self) -> tuple[str, int]:
        self.leader_port = wait_for(self._leader, 30, "an etcd leader")
        return "127.0.0.1", self.leader_port

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def body(self, tag: str, k: int, n: int) -> bytes:
        key = base64.b64encode(b"%s/%d/%d" % (tag.encode(), k, n))
        return b'{"key":"%s","value":"%s"}' % (key, base64.b64encode(VALUE))

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(10)


def etcd_tls_flags(cert_dir: Path) -> list[str]:
    """etcd's flags for mutual TLS on both its client and peer ports, with a shoal-issued certificate."""
    cert, key, ca = (str(cert_dir / f) for f in ("swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"))
    return ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
            "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"]


NOOP_APP = """
import sys
from pathlib import Path
from fastapi import FastAPI, Request, Response
from shoal.runner import run, serve
from shoal.transport import Credentials, managers_only

app = FastAPI()

@app.post("/v1/txn")
async def txn(request: Request) -> Response:
    await request.body()
    return Response(b'{"revision":0,"changes":[]}', media_type="application/json")

run(lambda: serve(app, "127.0.0.1", int(sys.argv[1]), Credentials(Path(sys.argv[2])), managers_only))
"""


class NoopHttp(System):
    """The HTTP ceiling: one uvicorn + FastAPI process served as every shoal process is (shoal.runner.serve)
    whose POST /v1/txn reads the body and answers a constant; no Raft, no disk."""

    name = "noop"
    path = "/v1/txn"

    def __init__(self, base: Path) -> None:
        self.port = free_ports(1)[0]
        certs = ClusterCerts(base / "noop")
        self.connect = client_tls(certs.client("gateway"))
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(base / "noop.log", "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-c", NOOP_APP, str(self.port),
                                          str(certs.dir("server", node_id="noop", component="gateway"))],
                                         env=env, cwd=root,
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: get_json("127.0.0.1", self.port, "/v1/txn", "POST", connect=self.connect) is not None, 30,
                     "the no-op HTTP server")
        except BaseException:
            self.close()
            raise

    def leader_addr(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def body(self, tag: str, k: int, n: int) -> bytes:
        return shoal_body(tag, k, n)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


# ---- the load generator ------------------------------------------------------------------------------------
@dataclass
class Result:
    system: str
    clients: int
    writes: int
    seconds: float
    p50: float
    p99: float
    cpu: float  # member CPU seconds in the window
    cpu_by_pid: list[float]
    sys_share: float  # kernel (stime) share of the members' CPU
    client_cpu: float  # this process (the generator), same window
    errors: int
    load: str
    extra: dict[str, float] = field(default_factory=dict)
    round: int = 0

    @property
    def rate(self) -> float:
        return self.writes / self.seconds

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu / max(self.writes, 1) * 1000

    def line(self) -> str:
        extra = "".join(f", {k} {v:.2f}" for k, v in self.extra.items())
        split = "+".join(f"{c:.1f}" for c in self.cpu_by_pid)
        return (f"{self.system:5} {self.clients:3} clients: {self.rate:7.0f} writes/s  p50 {self.p50 * 1e3:6.1f} ms  "
                f"p99 {self.p99 * 1e3:6.1f} ms  CPU {self.cpu_per_1k:5.2f} s/1k writes (members {split} s, "
                f"{self.sys_share:.0%} kernel, "
                f"generator {self.client_cpu / max(self.writes, 1) * 1000:.2f} s/1k)  errors {self.errors}  "
                f"load {self.load}{extra}")


def drive(system: System, clients: int, seconds: float, warmup: float, tag: str,
          during: Callable[[], None] | None = None) -> Result:
    """C threads writing back to back to the leader; counts the writes answered inside the measured window."""
    host, port = system.leader_addr()
    stop = threading.Event()
    done: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    errors = [0] * clients
    path = system.path
    connect = system.connect

    def writer(k: int) -> None:
        conn = connect(host, port, 30)
        mine = done[k]
        n = 0
        try:
            while not stop.is_set():
                body = system.body(tag, k, n)
                n += 1
                started = time.perf_counter()
                try:
                    status, _ = post(conn, path, body)
                except (OSError, http.client.HTTPException):
                    errors[k] += 1
                    conn.close()
                    conn = connect(host, port, 30)
                    time.sleep(0.01)
                    continue
                ended = time.perf_counter()
                if status != 200:
                    errors[k] += 1
                    time.sleep(0.01)
                    continue
                mine.append((ended, ended - started))
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(clients)]
    pids = system.pids()
    for th in threads:
        th.start()
    try:
        time.sleep(warmup)
        before = [proc_cpu(p) for p in pids]
        client_before = time.process_time()
        m0 = time.perf_counter()
        if during is not None:
            during()
        time.sleep(max(0.0, seconds - (time.perf_counter() - m0)))
        m1 = time.perf_counter()
        after = [proc_cpu(p) for p in pids]
        client_cpu = time.process_time() - client_before
        load = loadavg()
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    lat = sorted(d for per in done for (end, d) in per if m0 <= end <= m1)
    by_pid = [sum(a) - sum(b) for a, b in zip(after, before, strict=True)]
    kernel = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return Result(system.name, clients, len(lat), m1 - m0, pct(lat, 0.50), pct(lat, 0.99), sum(by_pid), by_pid,
                  kernel / max(sum(by_pid), 1e-9), client_cpu, sum(errors), load)


def shoal_extra(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def d(name: str) -> float:
        return after.get(f"shoal_{name}", 0.0) - before.get(f"shoal_{name}", 0.0)

    proposals = d("raft_proposals_total")
    return {"batch": proposals / max(d("raft_proposal_batches_total"), 1),
            "fsyncs/write": d("raft_fsyncs_total") / max(proposals, 1)}


# ---- profile summary (py-spy raw/collapsed output) ---------------------------------------------------------
#: (component, test on the stack's frames, leaf last); the first that matches names a sample
COMPONENTS: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("idle (waiting in epoll)", lambda fr: "selectors.py" in fr[-1] and ".select (" in fr[-1]),
    ("WAL write + fsync (services/raftstore/wal.py WAL.save)", lambda fr: any("WAL.save" in f for f in fr)),
    ("socket send syscalls (HTTP answers, peer frames)", lambda fr: "Transport.write (" in fr[-1]),
    ("raft driver, core and FSM apply (driver.py, raft/, fsm.py, memory.py)",
     lambda fr: any(m in f for f in fr for m in ("Driver.run (", "Driver._handle_ready", "FSM.apply"))),
    ("peer transport and codec (transport.py, codec.py)",
     lambda fr: any("raftstore/transport.py" in f or "raftstore/codec.py" in f for f in fr)),
    ("/v1/txn handler body (JSON decode, stamp, encode, validate, answer JSON)",
     lambda fr: any("create_app.<locals>.txn (" in f for f in fr[:-1])
     and not any(m in fr[-1] for m in ("create_app.<locals>.txn (", "Driver.propose"))),
    ("HTTP server + framework (uvicorn h11, starlette, fastapi)",
     lambda fr: any(m in f for f in fr for m in ("h11_impl.py", "starlette/", "fastapi/", "/h11/"))),
    ("asyncio event loop and other", lambda fr: True),
]


def summarize_profile(path: Path, top: int = 20) -> str:
    """Components, then inclusive and self shares of the busy samples of a `py-spy record --format raw
    --idle` file. py-spy samples wall time: a process that is runnable but waiting for a core (a shared 2-core
    machine) is counted where it was preempted, often in a syscall that woke another process."""
    total = busy = 0
    by_component: Counter[str] = Counter()
    self_count: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        component = next(name for name, test in COMPONENTS if test(frames))
        by_component[component] += count
        if component.startswith("idle"):
            continue
        busy += count
        self_count[_short(frames[-1])] += count
        for f in {_short(f) for f in frames}:
            incl[f] += count
    out = [f"{path.name}: {total} samples, {busy} busy ({busy / max(total, 1):.0%} of wall time)",
           "  by component (share of all samples):"]
    out += [f"    {c / max(total, 1):6.1%}  {name}" for name, c in by_component.most_common()]
    out.append("  inclusive (share of busy samples):")
    out += [f"    {c / max(busy, 1):6.1%}  {f}" for f, c in incl.most_common(top + 10)
            if not any(m in f for m in ("runpy", "asyncio/runners.py", "run_forever", "run_until_complete",
                                        "__main__.py", "shoal/runner.py"))][:top]
    out.append("  self:")
    out += [f"    {c / max(busy, 1):6.1%}  {f}" for f, c in self_count.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)` with site-packages paths trimmed."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


# ---- failover ---------------------------------------------------------------------------------------------
class FailoverRig:
    """One shoal cluster whose leader is killed trial after trial; the killed member is restarted between trials
    (or, with `fresh`, every trial gets a new cluster: no member was ever restarted)."""

    def __init__(self, base: Path, election_ticks: int, fresh: bool, *, plaintext: bool = False) -> None:
        self.base, self.election_ticks, self.fresh, self.plaintext = base, election_ticks, fresh, plaintext
        self.name = "shoal-plain" if plaintext else "shoal"
        self.cluster: RaftProcs | None = None
        self.trials = 0

    def trial(self) -> float:
        trial = self.trials
        self.trials += 1
        if self.cluster is None:
            self.cluster = RaftProcs(self.base / f"c{trial}", 3, election_ticks=self.election_ticks,
                                     extra_env=PLAINTEXT_ENV if self.plaintext else None).start_all(START_TIMEOUT)
        cluster = self.cluster
        lead = cluster.wait_leader(30)
        ports = {i: cluster.api_ports[i] for i in cluster.ids if i != lead}
        took = kill_leader_once(ports, "/v1/txn", partial(shoal_body, f"f{trial}", 0), cluster.procs[lead],
                                client_tls(cluster.certs.client("gateway")))
        print(f"  {self.name} failover {trial + 1}: leader {lead} killed, first write acknowledged after "
              f"{took * 1e3:.0f} ms (load {loadavg()})", flush=True)
        if self.fresh:
            self.close()
            return took
        cluster.start(lead)
        wait_for(partial(cluster.healthy, lead), START_TIMEOUT, f"member {lead} to restart")
        cluster.wait_leader(START_TIMEOUT)
        wait_for(cluster.converged, START_TIMEOUT, "the restarted member to catch up")
        time.sleep(0.3)
        return took

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def shoal_failover(trials: int, base: Path, election_ticks: int, fresh: bool,
                   plaintext: tuple[bool, ...] = (False,)) -> dict[str, list[float]]:
    """Kill the leader `trials` times per variant (encrypted and/or the plaintext control); with two variants
    their trials alternate (A B B A A B ...), so both see the same machine load."""
    rigs = [FailoverRig(base / ("plain" if p else "sealed"), election_ticks, fresh, plaintext=p) for p in plaintext]
    out: dict[str, list[float]] = {r.name: [] for r in rigs}
    try:
        for trial in range(trials):
            for rig in (rigs if trial % 2 == 0 else rigs[::-1]):
                out[rig.name].append(rig.trial())
    finally:
        for rig in rigs:
            rig.close()
    return out


def etcd_failover(trials: int, base: Path, binary: str, use_tls: bool) -> list[float]:
    """The same procedure against etcd: its leader killed `trials` times, restarted between trials."""
    base.mkdir(parents=True, exist_ok=True)
    etcd = Etcd(base, binary, use_tls)
    out: list[float] = []
    try:
        for trial in range(trials):
            _, port = etcd.leader_addr()
            lead = etcd.client_ports.index(port)
            ports = {i: etcd.client_ports[i] for i in range(3) if i != lead}
            out.append(kill_leader_once(ports, etcd.path, partial(etcd.body, f"f{trial}", 0),
                                        etcd.procs[lead], etcd.connect))
            print(f"  etcd failover {trial + 1}/{trials}: leader e{lead} killed, first write acknowledged after "
                  f"{out[-1] * 1e3:.0f} ms (load {loadavg()})", flush=True)
            etcd.start(lead)
            etcd.leader_addr()
            wait_for(etcd.converged, 30, "the restarted etcd member to catch up")
            time.sleep(0.3)
    finally:
        etcd.close()
    return out


#: the failover client's per-request timeout: then it tries the next member. shoal answers at once when it
#: cannot take a write (503/504); etcd holds a write that reached no live leader until its request timeout (7 s)
FAILOVER_TIMEOUT = 0.1


def kill_leader_once(ports: dict[int, int], path: str, body: Callable[[int], bytes],
                     leader: subprocess.Popen[bytes], connect: Connect) -> float:
    """SIGKILL `leader` while one client writes through the members listening on `ports`; seconds until a
    write sent after the kill is acknowledged."""
    survivors = sorted(ports)
    acks: list[tuple[float, float]] = []  # (sent, acknowledged)
    stop = threading.Event()

    def writer() -> None:
        conns = {i: connect("127.0.0.1", ports[i], FAILOVER_TIMEOUT) for i in survivors}
        turn, n = 0, 0
        try:
            while not stop.is_set():
                i = survivors[turn % len(survivors)]
                data = body(n)
                n += 1
                sent = time.perf_counter()
                try:
                    status, _ = post(conns[i], path, data)
                except (OSError, http.client.HTTPException):
                    conns[i].close()
                    status = 0
                if status == 200:
                    acks.append((sent, time.perf_counter()))
                else:  # 503 no leader / 504 outcome unknown / timeout / connection error: next member, shortly
                    turn += 1
                    time.sleep(0.01)
        finally:
            for c in conns.values():
                c.close()

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        wait_for(lambda: len(acks) >= 20, 30, "steady writes before the kill")
        killed_at = time.perf_counter()
        leader.send_signal(signal.SIGKILL)
        first: float = wait_for(lambda: next((a for s, a in acks if s >= killed_at), None), 30,
                                "the first acknowledged write after the kill", 0.005)
    finally:
        stop.set()
        th.join(30)
        leader.wait(10)
    return first - killed_at


# ---- main -------------------------------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    """Per level and store, the median over rounds; the ratios are the medians of each round's shoal/etcd
    ratio (the two measured minutes apart under the same load), writes/s, p50 and p99."""
    rounds = len({r.round for r in results})
    rows = [f"| clients | store | writes/s | p50 ms | p99 ms | CPU s / 1k writes | ours/etcd writes/s | "
            f"ours/etcd p50 | ours/etcd p99 |  (median of {rounds} round{'s' if rounds > 1 else ''})",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted({r.clients for r in results}):
        level = [r for r in results if r.clients == c]
        peer = "etcd-tls" if any(r.system == "etcd-tls" for r in level) else "etcd"
        for name in dict.fromkeys(r.system for r in level):
            mine = [r for r in level if r.system == name]
            cells = ["", "", ""]
            if name == "shoal":
                pairs = [(r, next((t for t in level if t.system == peer and t.round == r.round), None)) for r in mine]
                pairs_ok = [(r, t) for r, t in pairs if t is not None and t.rate and t.p50 and t.p99]
                if pairs_ok:
                    cells = [f"{median([r.rate / t.rate for r, t in pairs_ok]):.2f}x",
                             f"{median([r.p50 / t.p50 for r, t in pairs_ok]):.2f}x",
                             f"{median([r.p99 / t.p99 for r, t in pairs_ok]):.2f}x"]
            rows.append(f"| {c} | {name} | {median([r.rate for r in mine]):,.0f} | "
                        f"{median([r.p50 for r in mine]) * 1e3:.1f} | {median([r.p99 for r in mine]) * 1e3:.1f} | "
                        f"{median([r.cpu_per_1k for r in mine]):.2f} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", default="1,16,64", help="concurrency levels, comma-separated (default 1,16,64)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level and store")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds over every level, alternating which store goes first (A B B A ...; the tables "
                        "show medians; with --wal-only: interleaved rounds of the WAL path)")
    p.add_argument("--no-etcd", action="store_true", help="shoal only")
    p.add_argument("--failover-trials", type=int, default=20, help="leader kills (0: skip the section)")
    p.add_argument("--election-ticks", type=int, default=6,
                   help="SHOAL_RAFT_ELECTION_TICKS of the failover cluster (shoal's default: 6 x 0.1 s)")
    p.add_argument("--failover-fresh", action="store_true",
                   help="a new shoal cluster for every failover trial (no member restarted before the kill)")
    p.add_argument("--failover-etcd", action="store_true", help="also time etcd's failover the same way")
    p.add_argument("--etcd-tls", choices=("on", "off", "both"), default="on",
                   help="etcd with mutual TLS like shoal (on, default), in plaintext (off), or both side by side")
    p.add_argument("--quick", action="store_true", help="short bounded run: 3 s per level, 3 failover trials")
    p.add_argument("--http-baseline", action="store_true",
                   help="also drive a no-op uvicorn + FastAPI endpoint (the HTTP ceiling of one process)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="after the table, run shoal at the highest level again under py-spy (leader and one "
                        "follower) and write the raw profiles and a summary to DIR")
    p.add_argument("--at-rest", choices=("on", "off", "both"), default="on",
                   help="shoal's WAL and snapshot encrypted (on, as always in production), the plaintext control "
                        "(off: SHOAL_RAFT_BENCH_PLAINTEXT), or both side by side in interleaved rounds with the "
                        "cost of encryption per level and for failover")
    p.add_argument("--control-first", action="store_true",
                   help="with --at-rest both: start the plaintext control's cluster first and drive it first in "
                        "round 1 (to tell an effect of the order from one of encryption)")
    p.add_argument("--wal-only", action="store_true",
                   help="only the durable write path in this process: WAL appends sealed against the plaintext "
                        "control, --rounds interleaved rounds of --seconds (see wal_only)")
    p.add_argument("--wal-batch", type=int, default=8, help="entries per fsync'd WAL.save in --wal-only (8)")
    a = p.parse_args()
    levels = [int(x) for x in a.clients.split(",") if x.strip()]
    if a.quick:
        a.seconds, a.warmup, a.failover_trials = min(a.seconds, 3.0), min(a.warmup, 0.5), min(a.failover_trials, 3)

    etcd_bin = None if a.no_etcd else shutil.which("etcd")
    if not a.no_etcd and etcd_bin is None:
        print("etcd is NOT installed (no `etcd` on PATH): run scripts/etcd.sh (apt-get install etcd-server) for "
              "the comparison; showing shoal only.", flush=True)
    print(f"{os.cpu_count()} cores, load {loadavg()}; {a.seconds:g} s per level after {a.warmup:g} s warm-up; "
          "3 members each on loopback, fsync on, 256-byte values", flush=True)

    results: list[Result] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-raftstore-"))
    if a.wal_only:
        try:
            print(wal_only(a.rounds, a.seconds, a.wal_batch, tmp), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        run(a, levels, etcd_bin, tmp, results)
    except BaseException:
        print(f"logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def run(a: argparse.Namespace, levels: list[int], etcd_bin: str | None, tmp: Path, results: list[Result]) -> None:
    systems: list[System] = []
    variants = {"on": (False,), "off": (True,), "both": (True, False) if a.control_first else (False, True)}[a.at_rest]
    try:
        shoals = [Shoal(tmp / ("shoal-plain" if p else "shoal"), plaintext=p) for p in variants]
        shoal = shoals[0]
        systems.extend(shoals)
        if etcd_bin:
            for use_tls in {"on": [True], "off": [False], "both": [False, True]}[a.etcd_tls]:
                d = tmp / ("etcd-tls" if use_tls else "etcd")
                d.mkdir()
                systems.append(Etcd(d, etcd_bin, use_tls))
            out = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True).stdout.splitlines()
            print(out[0] if out else "etcd", flush=True)
        if a.http_baseline:
            systems.append(NoopHttp(tmp))
        ours_name = "shoal-plain" if a.at_rest == "off" else "shoal"
        for rnd in range(a.rounds):
            for c in levels:
                # interleaved: each round drives the stores in the other order, so a load that rises or falls
                # during the run weighs on both alike
                order = systems if rnd % 2 == 0 else systems[::-1]
                for s in order:
                    before = s.metrics() if isinstance(s, Shoal) else {}
                    r = drive(s, c, a.seconds, a.warmup, tag=f"r{rnd}c{c}")
                    r.round = rnd
                    if isinstance(s, Shoal):
                        r.extra = shoal_extra(before, s.metrics())
                    results.append(r)
                    print(r.line(), flush=True)
                ours = next(r for r in results if r.system == ours_name and r.clients == c and r.round == rnd)
                for name in ("etcd", "etcd-tls"):
                    theirs = next((r for r in results if r.system == name and r.clients == c and r.round == rnd),
                                  None)
                    if theirs is not None:
                        print(f"  ours/{name} at {c} clients: {ours.rate / max(theirs.rate, 1e-9):.2f}x writes/s, "
                              f"p50 {ours.p50 / max(theirs.p50, 1e-9):.2f}x, "
                              f"p99 {ours.p99 / max(theirs.p99, 1e-9):.2f}x, "
                              f"{ours.cpu_per_1k / max(theirs.cpu_per_1k, 1e-9):.2f}x CPU per write", flush=True)
        if a.profile:
            profile(shoal, max(levels), a.seconds, a.warmup, a.profile)
    finally:
        for s in systems:
            s.close()
    print()
    print(table(results))
    if a.at_rest == "both":
        print()
        print(at_rest_table(results))
    if a.failover_trials > 0:
        print(f"\nfailover: {a.failover_trials} leader kills (SIGKILL) per store, one client writing through the "
              f"survivors (election timeout {a.election_ticks} x 0.1 s ticks, randomized up to 2x)", flush=True)
        lats = shoal_failover(a.failover_trials, tmp / "failover", a.election_ticks, a.failover_fresh, variants)
        if a.failover_etcd and etcd_bin:
            lats["etcd"] = etcd_failover(a.failover_trials, tmp / "etcd-failover", etcd_bin, a.etcd_tls != "off")
        for name, vals in lats.items():
            vals = sorted(vals)
            if vals:
                print(f"{name} leader kill -> first acknowledged write: p50 {pct(vals, 0.5) * 1e3:.0f} ms, "
                      f"mean {sum(vals) / len(vals) * 1e3:.0f} ms, p90 {pct(vals, 0.9) * 1e3:.0f} ms, "
                      f"min {vals[0] * 1e3:.0f} ms, max {vals[-1] * 1e3:.0f} ms over {len(vals)} trials",
                      flush=True)
        if a.at_rest == "both":
            sealed, plain = lats["shoal"], lats["shoal-plain"]
            print(f"failover, encrypted against plaintext (positive: encryption slower): median "
                  f"{cost(median(plain), median(sealed), True)}, "
                  f"mean {cost(sum(plain) / len(plain), sum(sealed) / len(sealed), True)}", flush=True)


def wal_only(rounds: int, seconds: float, batch: int, base: Path) -> str:
    """`--wal-only`: the members' durable write path alone, in this process — WAL.save of `batch` entries of a
    real write's size plus the hard state, fsync'd, back to back for `seconds` — sealed (the member's AES-GCM
    sealer) and the plaintext control (atrest.PlainSealer), alternating per round (A B B A ...). No network, no
    HTTP, no raft: what encryption adds where it is done, measured in CPU time per entry as well as entries/s, so
    it holds on a loaded machine where the cluster figures do not."""
    from services.raftstore import atrest
    from services.raftstore.raft import Entry, EntryType, HardState
    from services.raftstore.wal import WAL

    data = shoal_body("wal", 0, 0) + b" " * 100  # an entry as a 256-byte write commits it (~400 bytes)
    sealers: dict[str, Callable[[], atrest.Sealer]] = {"sealed": atrest.ephemeral_sealer,
                                                       "plaintext": atrest.PlainSealer}
    out: dict[str, list[tuple[float, float, float]]] = {k: [] for k in sealers}  # (entries/s, CPU µs/entry, load)
    for rnd in range(rounds):
        for name in (list(sealers) if rnd % 2 == 0 else list(sealers)[::-1]):
            d = base / f"wal-{name}-{rnd}"
            wal, _ = WAL.open(d, sealers[name]())
            index, n = 0, 0
            cpu0, t0 = time.process_time(), time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                entries = [Entry(1, index + k + 1, data, EntryType.NORMAL) for k in range(batch)]
                index += batch
                wal.save(HardState(1, 1, index), entries)
                n += batch
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            wal.close()
            shutil.rmtree(d, ignore_errors=True)
            out[name].append((n / wall, cpu / n * 1e6, float(loadavg().split()[0])))
            print(f"  wal-only {name:9} round {rnd + 1}: {n / wall:8,.0f} entries/s, {cpu / n * 1e6:6.1f} µs CPU per "
                  f"entry (batch {batch}, load {loadavg()})", flush=True)
    rows = ["| path | rounds | entries/s (median; rounds) | CPU µs per entry (median; rounds) | load |",
            "|---|---|---|---|---|"]
    for name, vals in out.items():
        rows.append(f"| {name} | {len(vals)} | {median([v[0] for v in vals]):,.0f} "
                    f"({', '.join(f'{v[0]:,.0f}' for v in vals)}) | {median([v[1] for v in vals]):.1f} "
                    f"({', '.join(f'{v[1]:.1f}' for v in vals)}) | "
                    f"{min(v[2] for v in vals):.1f}-{max(v[2] for v in vals):.1f} |")
    sealed_cpu, plain_cpu = median([v[1] for v in out["sealed"]]), median([v[1] for v in out["plaintext"]])
    sealed_rate, plain_rate = median([v[0] for v in out["sealed"]]), median([v[0] for v in out["plaintext"]])
    rows.append(f"\nencryption's cost on the WAL path: {cost(plain_rate, sealed_rate)} entries/s, "
                f"{sealed_cpu - plain_cpu:+.1f} µs CPU per entry ({cost(plain_cpu, sealed_cpu, True)})")
    return "\n".join(rows)


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2 if v else float("nan")


def cost(plain: float, sealed: float, lower_is_better: bool = False) -> str:
    """Encryption's cost as a signed percentage of the plaintext control (positive: encryption is worse)."""
    if not plain:
        return "n/a"
    change = (sealed - plain) / plain if lower_is_better else (plain - sealed) / plain
    return f"{change:+.1%}"


def at_rest_table(results: list[Result]) -> str:
    """Per level: the medians over the interleaved rounds of the encrypted store and its plaintext control."""
    rows = ["| clients | rounds | encrypted writes/s (median; rounds) | plaintext writes/s (median; rounds) | "
            "cost in writes/s (positive: encryption slower) | CPU s/1k encrypted / plaintext | load |",
            "|---|---|---|---|---|---|---|"]
    for c in sorted({r.clients for r in results}):
        sealed = [r for r in results if r.system == "shoal" and r.clients == c]
        plain = [r for r in results if r.system == "shoal-plain" and r.clients == c]
        if not sealed or not plain:
            continue
        ms, mp = median([r.rate for r in sealed]), median([r.rate for r in plain])
        loads = sorted(float(r.load.split()[0]) for r in sealed + plain)
        rows.append(f"| {c} | {len(sealed)} | {ms:,.0f} ({', '.join(f'{r.rate:,.0f}' for r in sealed)}) | "
                    f"{mp:,.0f} ({', '.join(f'{r.rate:,.0f}' for r in plain)}) | {cost(mp, ms)} | "
                    f"{median([r.cpu_per_1k for r in sealed]):.2f} / {median([r.cpu_per_1k for r in plain]):.2f} | "
                    f"{loads[0]:.1f}-{loads[-1]:.1f} |")
    return "\n".join(rows)


def profile(shoal: Shoal, clients: int, seconds: float, warmup: float, outdir: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed (.venv/bin/pip install py-spy): no profile", flush=True)
        return
    outdir.mkdir(parents=True, exist_ok=True)
    lead = shoal.cluster.wait_leader(30)
    follower = next(i for i in shoal.cluster.ids if i != lead)
    targets = {"leader": shoal.cluster.procs[lead].pid, "follower": shoal.cluster.procs[follower].pid}
    spies: list[subprocess.Popen[bytes]] = []

    def attach() -> None:
        for role, pid in targets.items():
            spies.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
                 "--idle", "--nonblocking", "--format", "raw", "--output", str(outdir / f"{role}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        r = drive(shoal, clients, seconds, warmup, tag="prof", during=attach)
        print("under py-spy: " + r.line(), flush=True)
    finally:
        for sp in spies:
            try:
                sp.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                sp.kill()
                sp.wait(5)
    for role in targets:
        f = outdir / f"{role}.txt"
        if f.exists():
            summary = summarize_profile(f)
            (outdir / f"{role}-summary.txt").write_text(summary + "\n")
            print(summary, flush=True)


if __name__ == "__main__":
    main()
