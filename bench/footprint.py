"""Idle footprint of a `shoal up` cluster (issue 13, item 6): the resident memory of every process, summed.

    python bench/footprint.py                 # 2 agents (the `shoal up` default), settle 10 s
    python bench/footprint.py --agents 0 --hollow-nodes 100   # what 100 hollow nodes cost in one process
    python bench/footprint.py --settle 2      # CI-sized (tests/e2e/test_bench_footprint.py)

Starts the cluster on free loopback ports, waits until it is healthy (every agent's node READY), lets it idle
`--settle` seconds, then reads VmRSS of every process the supervisor started (/proc/<pid>/status; shared pages
count in every process, as `ps` shows them). The peer is the issue's target for the sum (450 MB) and, for a
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

from bench.clusterbench import LocalCluster, loadavg, mib, rss_bytes

TARGET = 450 * 10**6


def bare_python_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(1.0)
        return rss_bytes(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def measure(agents: int, hollow_nodes: int, settle: float, data_dir: Path) -> dict[str, int]:
    cluster = LocalCluster(data_dir, agents=agents, hollow_nodes=hollow_nodes)
    try:
        cluster.start(timeout=max(120.0, hollow_nodes * 0.5))
        time.sleep(settle)
        return cluster.rss()
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> dict[str, int]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--hollow-nodes", type=int, default=0)
    p.add_argument("--settle", type=float, default=10.0, help="idle seconds before reading (default 10)")
    a = p.parse_args(argv)
    print(f"footprint: shoal up with {a.agents} agents and {a.hollow_nodes} hollow nodes (load {loadavg()})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-footprint-") as tmp:
        rss = measure(a.agents, a.hollow_nodes, a.settle, Path(tmp))
    floor = bare_python_rss()
    total = sum(rss.values())
    for name in sorted(rss, key=lambda n: -rss[n]):
        print(f"  {name:16s} {mib(rss[name]):>9s}  ({rss[name] / max(floor, 1):.1f}x a bare python)")
    print(f"  {len(rss)} processes, {mib(total)} summed ({total / 1e6:.0f} MB); target 450 MB: "
          f"{total / TARGET:.2f}x; a bare python process {mib(floor)} (load {loadavg()})", flush=True)
    if a.hollow_nodes and "hollow-agents" in rss:
        print(f"  hollow nodes: {rss['hollow-agents'] / a.hollow_nodes / 2**10:.0f} KiB per node")
    return rss


if __name__ == "__main__":
    main()
