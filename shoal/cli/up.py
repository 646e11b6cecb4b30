"""`shoal up` and `shoal down`: start and stop a whole local cluster (see shoal.supervisor)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shoal.runner import private_opener
from shoal.supervisor import (
    Layout,
    Supervisor,
    cluster_id,
    read_state,
    stop_workloads,
    wait_healthy,
)
from shoal.workloads import cluster_containers, cluster_processes

DEFAULT_DATA_DIR = Path(os.environ.get("SHOAL_DATA_DIR", Path.home() / ".shoal"))


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser("up", help="start a local cluster (nats, 3 raftstores, control plane, agents)")
    up.add_argument("--detach", "-d", action="store_true", help="return once the cluster is healthy")
    up.add_argument("--agents", type=int, default=2, help="number of agents (default 2)")
    up.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state and logs (default ~/.shoal)")
    up.add_argument("--gateway-port", type=int, default=4242, help="gateway port (default 4242)")
    up.add_argument("--base-port", type=int, default=4300, help="first of the internal ports (default 4300)")
    up.add_argument("--hollow-nodes", type=int, default=0,
                    help="also run N simulated worker nodes in one process (agent/hollow.py; default 0)")
    up.add_argument("--heartbeat-period", type=float, default=5.0, help="agent heartbeat period in seconds")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for a healthy cluster")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the local cluster started by `shoal up`")
    down.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    down.set_defaults(func=cmd_down)


def cmd_up(a: argparse.Namespace) -> int:
    data_dir: Path = a.data_dir.resolve()
    state = read_state(data_dir)
    if state is not None:
        print(f"shoal: a cluster is already running from {data_dir} (supervisor pid {state['pid']}); "
              f"gateway {state['gateway_url']}. Run `shoal down --data-dir {data_dir}` first.", file=sys.stderr)
        return 1
    if a.agents < 0 or a.hollow_nodes < 0:
        print("shoal: --agents and --hollow-nodes must be 0 or more", file=sys.stderr)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    layout = Layout(data_dir, base_port=a.base_port, gateway_port=a.gateway_port, agents=a.agents,
                    heartbeat_period=a.heartbeat_period, hollow_nodes=a.hollow_nodes)
    if a.detach:
        return _up_detached(a, layout)
    sup = Supervisor(layout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sup.start()
    try:
        sup.wait_healthy(a.timeout)
        print(f"shoal: cluster up; gateway {layout.gateway_url} (logs in {data_dir / 'logs'}); Ctrl-C stops it")
        stop.wait()
    except KeyboardInterrupt:
        pass
    except TimeoutError as e:
        print(f"shoal: {e}", file=sys.stderr)
        sup.stop()
        return 1
    print("shoal: stopping")
    sup.stop()
    return 0


def _up_detached(a: argparse.Namespace, layout: Layout) -> int:
    log_dir = layout.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "supervisor.log", "ab", opener=private_opener) as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.supervisor", "--data-dir", str(layout.data_dir),
             "--base-port", str(layout.base_port), "--gateway-port", str(layout.gateway_port),
             "--agents", str(layout.agents), "--heartbeat-period", str(layout.heartbeat_period),
             "--hollow-nodes", str(layout.hollow_nodes)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    deadline = time.monotonic() + a.timeout
    while read_state(layout.data_dir) is None:
        if proc.poll() is not None:
            print(f"shoal: supervisor exited (code {proc.returncode}); see {log_dir}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    try:
        wait_healthy(layout, layout.specs(), max(1.0, deadline - time.monotonic()))
    except TimeoutError as e:
        print(f"shoal: {e}; stopping it", file=sys.stderr)
        _stop(layout.data_dir)
        return 1
    print(layout.gateway_url)
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    data_dir: Path = a.data_dir.resolve()
    if read_state(data_dir) is None:
        # No supervisor (stopped, or it died): still stop what its tasks left running, if it ever ran here.
        leftovers = stop_workloads(data_dir) if cluster_id(data_dir) != "default" else []
        for w in leftovers:
            print(f"shoal: stopped {w}")
        print(f"shoal: no cluster running from {data_dir}"
              + (f"; stopped {len(leftovers)} task workloads it left" if leftovers else ""))
        return 0
    return _stop(data_dir)


def _stop(data_dir: Path) -> int:
    state = read_state(data_dir)
    if state is None:
        return 0
    pid = int(state["pid"])
    cluster = cluster_id(data_dir)
    docker_host = os.environ.get("SHOAL_DOCKER_HOST") or "unix:///var/run/docker.sock"
    running = cluster_processes(cluster) + cluster_containers(cluster, docker_host)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    for name, cpid in state.get("children", {}).items():  # belt and braces: nothing left running
        if cpid:
            try:
                os.killpg(int(cpid), signal.SIGKILL)
                print(f"shoal: {name} was still running; killed", file=sys.stderr)
            except (ProcessLookupError, PermissionError):
                pass
    # Whatever a crashed or replaced agent left behind (the supervisor sweeps too; this covers a killed one).
    leftovers = stop_workloads(data_dir, docker_host)
    stopped = {(w.what, w.task): w for w in [*running, *leftovers]}
    for w in stopped.values():
        print(f"shoal: stopped {w}")
    print(f"shoal: cluster stopped ({len(stopped)} task workloads stopped)" if stopped
          else "shoal: cluster stopped (no task workloads were running)")
    return 0
