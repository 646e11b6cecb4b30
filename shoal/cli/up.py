"""`shoal up`, `shoal down` and `shoal scale`: start, stop and scale a whole local cluster (see shoal.supervisor).

`shoal up` gives agents the container runtime when a Docker engine answers (SHOAL_DOCKER_HOST, else DOCKER_HOST,
else the default socket) and says which runtimes are enabled; `--scale ROLE=N` and `shoal scale ROLE=N` run
more instances of the gateway, dispatcher, orchestrator, allocator or scheduler, each joined as a node of its
own with the manager token (the role-per-node join of `shoal swarm join --roles`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import httpx

from shoal import daemon
from shoal.scale import SCALABLE, ScaleError, extra_names, parse_scale, read_scale, role_of, write_scale
from shoal.supervisor import Layout, Supervisor, admin_client, cluster_id, read_state, stop_workloads, wait_healthy
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
    up.add_argument("--scale", action="append", default=[], metavar="ROLE=N",
                    help=f"run N instances of ROLE ({', '.join(SCALABLE)}); repeatable, e.g. --scale dispatcher=3")
    up.set_defaults(func=cmd_up)
    scale = sub.add_parser("scale", help="run more (or fewer) instances of a control-plane role in the local "
                           "cluster `shoal up` started, e.g. `shoal scale dispatcher=3`")
    scale.add_argument("counts", nargs="+", metavar="ROLE=N", help=f"ROLE is one of {', '.join(SCALABLE)}")
    scale.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    scale.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the instances")
    scale.set_defaults(func=cmd_scale)
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
    try:
        scale = parse_scale(a.scale)
    except ScaleError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    if scale:
        write_scale(data_dir, {**read_scale(data_dir), **scale})
    print(f"shoal: {choose_runtimes(os.environ)}", file=sys.stderr)  # stdout: only the URL (scripts read it)
    layout = Layout(data_dir, base_port=a.base_port, gateway_port=a.gateway_port, agents=a.agents,
                    heartbeat_period=a.heartbeat_period, hollow_nodes=a.hollow_nodes)
    if a.detach:
        return _up_detached(a, layout)
    sup = Supervisor(layout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: sup.rescale.set())  # `shoal scale` changed the wanted instances
    sup.start()
    try:
        sup.wait_healthy(a.timeout)
        print(f"shoal: cluster up; gateway {layout.gateway_url} (logs in {data_dir / 'logs'}); Ctrl-C stops it")
        _print_instances(read_state(data_dir))
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
    deadline = time.monotonic() + a.timeout
    code = daemon.start(["--data-dir", str(layout.data_dir), "--base-port", str(layout.base_port),
                         "--gateway-port", str(layout.gateway_port), "--agents", str(layout.agents),
                         "--heartbeat-period", str(layout.heartbeat_period),
                         "--hollow-nodes", str(layout.hollow_nodes)], layout.data_dir, deadline)
    if code is not None:
        print(f"shoal: supervisor exited (code {code}); see {log_dir}", file=sys.stderr)
        return 1
    try:
        wait_healthy(layout, layout.specs(), max(1.0, deadline - time.monotonic()))
    except TimeoutError as e:
        print(f"shoal: {e}; stopping it", file=sys.stderr)
        _stop(layout.data_dir)
        return 1
    if not _wait_instances(layout.data_dir, extra_names(read_scale(layout.data_dir)), deadline):
        print(f"shoal: the extra instances did not all start in time; see {log_dir}", file=sys.stderr)
    _print_instances(read_state(layout.data_dir), out=sys.stderr)
    print(layout.gateway_url)
    return 0


# ---- runtimes ----------------------------------------------------------------------------------------------
def docker_host_of(env: Mapping[str, str]) -> str:
    """The engine agents would use: SHOAL_DOCKER_HOST, else DOCKER_HOST, else the default socket."""
    return env.get("SHOAL_DOCKER_HOST") or env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_engine(host: str, timeout: float = 3.0) -> tuple[str | None, str]:
    """(the engine's version, '') when a Docker engine answers at `host`, else (None, why not)."""
    if not host.startswith("unix://"):
        return None, f"{host} is not a unix socket (agents reach the engine over one)"
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return None, f"no socket at {path}"
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://docker",
                          timeout=timeout) as c:
            r = c.get("/version")
            if r.status_code != 200:
                return None, f"the engine at {host} answered {r.status_code}"
            return str(r.json().get("Version", "?")), ""
    except (httpx.HTTPError, OSError, ValueError) as e:
        return None, f"nothing answers at {host} ({type(e).__name__})"


def choose_runtimes(env: MutableMapping[str, str]) -> str:
    """Offer the container runtime when a Docker engine answers, only `process` otherwise: sets SHOAL_EXECUTORS
    (and SHOAL_DOCKER_HOST) in `env`, which every process of the cluster inherits, unless the user chose
    SHOAL_EXECUTORS. Returns the sentence `shoal up` prints."""
    host = docker_host_of(env)
    chosen = env.get("SHOAL_EXECUTORS")
    if chosen:
        return f"runtimes enabled: {_runtimes(chosen)} (SHOAL_EXECUTORS={chosen})"
    version, why = docker_engine(host)
    if version is None:
        env["SHOAL_EXECUTORS"] = "process"
        return (f"runtimes enabled: process; container is off: {why} (start a Docker engine, or set "
                "DOCKER_HOST, then run `shoal up` again)")
    env["SHOAL_EXECUTORS"] = "process,docker"
    env["SHOAL_DOCKER_HOST"] = host
    return f"runtimes enabled: process, container (Docker engine {version} at {host})"


def _runtimes(executors: str) -> str:
    names = {"docker": "container"}
    return ", ".join(names.get(x.strip(), x.strip()) for x in executors.split(",") if x.strip())


# ---- scale -------------------------------------------------------------------------------------------------
def cmd_scale(a: argparse.Namespace) -> int:
    data_dir: Path = a.data_dir.resolve()
    try:
        scale = parse_scale(a.counts)
    except ScaleError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 2
    state = read_state(data_dir)
    if state is None:
        print(f"shoal: no cluster running from {data_dir}; start one with `shoal up` (it takes --scale too)",
              file=sys.stderr)
        return 1
    wanted = {**read_scale(data_dir), **scale}
    write_scale(data_dir, wanted)
    os.kill(int(state["pid"]), signal.SIGUSR1)
    if not _wait_instances(data_dir, extra_names(wanted), time.monotonic() + a.timeout, exact=True):
        print(f"shoal: the instances did not all start within {a.timeout:.0f}s; see {data_dir / 'logs'}",
              file=sys.stderr)
        _print_instances(read_state(data_dir), out=sys.stderr)
        return 1
    _print_instances(read_state(data_dir))
    return 0


def _wait_instances(data_dir: Path, extras: list[str], deadline: float, *, exact: bool = False) -> bool:
    """Until the supervisor runs exactly the first instances plus `extras` (with `exact`, none other) and each
    answers /healthz."""
    layout = Layout(data_dir)
    with admin_client(layout, timeout=2.0, server_role=None) as http:
        while time.monotonic() < deadline:
            state = read_state(data_dir) or {}
            instances: dict[str, str] = state.get("instances", {})
            names = {n for n in instances if role_of(n) != n}
            if set(extras) <= names and (not exact or names == set(extras)):
                try:
                    if all(http.get(instances[n] + "/healthz").status_code == 200 for n in extras):
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    return False


def _print_instances(state: dict[str, Any] | None, out: TextIO = sys.stdout) -> None:
    instances: dict[str, str] = (state or {}).get("instances", {})
    by_role: dict[str, list[str]] = {}
    for name, url in instances.items():
        by_role.setdefault(role_of(name), []).append(f"{name} {url}")
    for role in SCALABLE:
        if role in by_role:
            print(f"shoal: {role}: {len(by_role[role])} instance(s): {', '.join(by_role[role])}", file=out)


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
    docker_host = docker_host_of(os.environ)  # the engine `shoal up` would have given the agents
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
