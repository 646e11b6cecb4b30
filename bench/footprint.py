"""Idle footprint of a `shoal up` cluster (issue 13, item 6): the resident memory of every process, summed.

    python bench/footprint.py                 # 2 agents (the `shoal up` default), settle 10 s
    python bench/footprint.py --agents 0 --hollow-nodes 100   # what 100 hollow nodes cost in one process
    python bench/footprint.py --settle 2      # CI-sized (tests/e2e/test_hollow_nodes.py)
    python bench/footprint.py --env MALLOC_ARENA_MAX=2   # + the same cluster with that in every child's env

Starts the cluster on free loopback ports, waits until it is healthy (every agent's node READY), lets it idle
`--settle` seconds, then reads VmRSS of every process the supervisor started (/proc/<pid>/status; shared pages
count in every process, as `ps` shows them), and, per process, its anonymous part (RssAnon: its own heap, not
the shared libraries) and its proportional share (Pss from /proc/<pid>/smaps_rollup: shared pages divided by
the processes sharing them — what the cluster costs the machine). With `--env`, a second cluster with those
variables in every child's environment runs after the first, in the same run. The peer is the issue's target
for the sum (450 MB) and, for a
process's Python floor, a bare `python -c 'import time; time.sleep(5)'` measured in the same run."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clusterbench import LocalCluster, loadavg, mib, rss_bytes, stop_on_sigterm

TARGET = 450 * 10**6


def bare_python_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(1.0)
        return rss_bytes(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def _kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def maps_cryptography(pid: int) -> bool:
    """Whether the process has cryptography's library mapped (it loads it only to sign, make keys or seal)."""
    try:
        return "cryptography" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def measure(agents: int, hollow_nodes: int, settle: float, data_dir: Path,
            env: dict[str, str] | None = None) -> dict[str, tuple[int, int, int]]:
    """name -> (RSS, RssAnon, Pss) in bytes; prints the processes that loaded cryptography."""
    cluster = LocalCluster(data_dir, agents=agents, hollow_nodes=hollow_nodes, extra_env=env)
    try:
        cluster.start(timeout=max(120.0, hollow_nodes * 0.5))
        time.sleep(settle)
        loaded = sorted(name for name, pid in cluster.pids().items() if maps_cryptography(pid))
        print(f"  cryptography loaded in: {', '.join(loaded) or 'none'}", flush=True)
        return {name: (rss_bytes(pid), _kib(f"/proc/{pid}/status", "RssAnon"),
                       _kib(f"/proc/{pid}/smaps_rollup", "Pss")) for name, pid in cluster.pids().items()}
    finally:
        cluster.stop()


def report(label: str, got: dict[str, tuple[int, int, int]], floor: int) -> None:
    print(f"{label}:\n  {'process':16s} {'RSS':>10s} {'anon':>10s} {'PSS':>10s}")
    for name in sorted(got, key=lambda n: -got[n][0]):
        rss, anon, pss = got[name]
        print(f"  {name:16s} {mib(rss):>10s} {mib(anon):>10s} {mib(pss):>10s}  "
              f"({rss / max(floor, 1):.1f}x a bare python)")
    total = sum(v[0] for v in got.values())
    print(f"  {len(got)} processes, RSS {mib(total)} summed ({total / 1e6:.0f} MB; target 450 MB: "
          f"{total / TARGET:.2f}x), anon {mib(sum(v[1] for v in got.values()))}, PSS "
          f"{mib(sum(v[2] for v in got.values()))} (load {loadavg()})", flush=True)


def main(argv: list[str] | None = None) -> dict[str, int]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--hollow-nodes", type=int, default=0)
    p.add_argument("--settle", type=float, default=10.0, help="idle seconds before reading (default 10)")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="also measure a cluster with this in every child's environment (repeatable)")
    a = p.parse_args(argv)
    print(f"footprint: shoal up with {a.agents} agents and {a.hollow_nodes} hollow nodes (load {loadavg()})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-footprint-") as tmp:
        got = measure(a.agents, a.hollow_nodes, a.settle, Path(tmp) / "a")
    floor = bare_python_rss()
    print(f"a bare python process: {mib(floor)}")
    report("as started", got, floor)
    rss = {name: v[0] for name, v in got.items()}
    if a.env:
        env = dict(kv.split("=", 1) for kv in a.env)
        with tempfile.TemporaryDirectory(prefix="shoal-bench-footprint-") as tmp:
            other = measure(a.agents, a.hollow_nodes, a.settle, Path(tmp) / "b", env)
        report(f"with {' '.join(a.env)}", other, floor)
        before, after = sum(rss.values()), sum(v[0] for v in other.values())
        print(f"  summed RSS with/without: {after / max(before, 1):.3f}x")
    if a.hollow_nodes and "hollow-agents" in rss:
        print(f"  hollow nodes: {rss['hollow-agents'] / a.hollow_nodes / 2**10:.0f} KiB per node")
    return rss


if __name__ == "__main__":
    stop_on_sigterm()
    main()
