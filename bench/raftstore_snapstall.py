"""The raftstore's write stall while members snapshot a large store: the longest gap between two acknowledged
writes, against the same cluster shape with snapshots off, measured in the same run.

    python bench/raftstore_snapstall.py                       # 20,000 objects, 16 clients, 15 s, 2 rounds each
    python bench/raftstore_snapstall.py --objects 40000 --rounds 3

Each window starts a fresh 3-member cluster (tests/integration/raftprocs.py, fsync and encryption at rest on),
preloads `--objects` configs (500 creates a transaction), then C clients write 256-byte configs back to back to
the leader for S seconds. `snapshots`: SHOAL_SNAPSHOT_INTERVAL=`--interval` entries, so every member snapshots
the whole store several times in the window; `control`: snapshots never due (interval and bytes out of reach).
Per window: writes/s, p50/p99, the longest gap between two consecutive acknowledgements (all clients merged),
and the snapshots the leader took. Windows alternate (A B B A ...); the ratio is snapshots/control of the
medians. Traffic stays on loopback; every loop is bounded in time."""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.raftstore import START_TIMEOUT, VALUE, client_tls, loadavg, pct, post, shoal_body
from tests.integration.raftprocs import RaftProcs

OFF = {"SHOAL_SNAPSHOT_INTERVAL": str(10**9), "SHOAL_SNAPSHOT_BYTES": str(1 << 40)}


@dataclass
class Window:
    name: str
    writes: int
    seconds: float
    p50: float
    p99: float
    gap: float
    snapshots: float
    load: str

    def line(self) -> str:
        return (f"{self.name:9s} {self.writes / self.seconds:6.0f} writes/s  p50 {self.p50 * 1e3:6.1f} ms  "
                f"p99 {self.p99 * 1e3:7.1f} ms  longest gap {self.gap * 1e3:7.1f} ms  "
                f"leader snapshots {self.snapshots:.0f}  load {self.load}")


def preload(cluster: RaftProcs, leader: int, objects: int) -> None:
    conn = client_tls(cluster.certs.client("gateway"))("127.0.0.1", cluster.api_ports[leader], 30)
    try:
        for start in range(0, objects, 500):
            ops = b",".join(b'{"op":"create","kind":"config","object":{"id":"pre-%d","data":"%s"}}' % (k, VALUE)
                            for k in range(start, min(objects, start + 500)))
            status, body = post(conn, "/v1/txn", b'{"ops":[' + ops + b"]}")
            if status != 200:
                raise RuntimeError(f"preload failed: {status} {body[:200]!r}")
    finally:
        conn.close()


def leader_snapshots(cluster: RaftProcs, leader: int) -> float:
    conn = client_tls(cluster.certs.client("gateway"))("127.0.0.1", cluster.api_ports[leader], 5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("shoal_raft_snapshots_taken_total"):
            return float(line.split()[-1])
    return 0.0


def window(name: str, base: Path, objects: int, interval: int, clients: int, seconds: float) -> Window:
    env = OFF if name == "control" else {"SHOAL_SNAPSHOT_INTERVAL": str(interval)}
    cluster = RaftProcs(base / f"{name}-{time.monotonic_ns()}", 3, extra_env=env).start_all(START_TIMEOUT)
    try:
        leader = cluster.wait_leader(30)
        preload(cluster, leader, objects)
        before = leader_snapshots(cluster, leader)
        acks: list[float] = []
        lats: list[float] = []
        lock = threading.Lock()
        connect = client_tls(cluster.certs.client("gateway"))
        start = time.monotonic()
        end = start + seconds

        def client(k: int) -> None:
            conn = connect("127.0.0.1", cluster.api_ports[leader], 10)
            n = 0
            try:
                while time.monotonic() < end:
                    sent = time.monotonic()
                    status, _ = post(conn, "/v1/txn", shoal_body(name, k, n))
                    done = time.monotonic()
                    n += 1
                    if status == 200:
                        with lock:
                            acks.append(done)
                            lats.append(done - sent)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(seconds + 30)
        acks.sort()
        lats.sort()
        points = [start, *acks]
        gap = max((b - a for a, b in itertools.pairwise(points)), default=float("nan"))
        return Window(name, len(acks), seconds, pct(lats, 0.5), pct(lats, 0.99), gap,
                      leader_snapshots(cluster, leader) - before, loadavg())
    finally:
        cluster.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objects", type=int, default=20_000, help="objects preloaded into the store (20,000)")
    p.add_argument("--interval", type=int, default=2_000, help="SHOAL_SNAPSHOT_INTERVAL of the snapshot windows")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=2, help="windows per arm, alternating A B B A ... (2)")
    a = p.parse_args()
    print(f"{a.objects} objects preloaded, {a.clients} clients, {a.seconds:.0f} s windows, snapshot interval "
          f"{a.interval}; load {loadavg()}", flush=True)
    results: dict[str, list[Window]] = {"snapshots": [], "control": []}
    with tempfile.TemporaryDirectory(prefix="snapstall-") as tmp:
        for r in range(a.rounds):
            order = ("snapshots", "control") if r % 2 == 0 else ("control", "snapshots")
            for name in order:
                w = window(name, Path(tmp), a.objects, a.interval, a.clients, a.seconds)
                results[name].append(w)
                print(w.line(), flush=True)

    def med(name: str, attr: str) -> float:
        vals = sorted(getattr(w, attr) for w in results[name])
        return vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2

    for attr in ("gap", "p99", "p50"):
        print(f"median {attr}: snapshots {med('snapshots', attr) * 1e3:.1f} ms, control "
              f"{med('control', attr) * 1e3:.1f} ms: {med('snapshots', attr) / med('control', attr):.2f}x")
    rate = {n: sorted(w.writes / w.seconds for w in results[n]) for n in results}
    ratio = rate["snapshots"][len(rate["snapshots"]) // 2] / rate["control"][len(rate["control"]) // 2]
    print(f"writes/s snapshots/control: {ratio:.2f}x; load at the end {loadavg()}")


if __name__ == "__main__":
    main()
