"""The local-cluster supervisor behind `shoal up`: every shoal process as its own OS process, restarted if it
dies, logs in DATA_DIR/logs, state in DATA_DIR/supervisor.json.

Used three ways: in the foreground by `shoal up`, as a daemon by `shoal up --detach` (`python -m
shoal.daemon`), and as a library by the end-to-end tests (which kill and stop children through it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shoal import iptables, meshrules, transport
from shoal.bootstrap import CA_BOOTSTRAP, BootstrapError, init_local, read_local
from shoal.child import Child, ProcSpec, stop_stages, stop_together
from shoal.enroll import has_identity
from shoal.scale import SCALABLE, extra_names, read_scale, role_of
from shoal.workloads import Workload, stop_cluster

log = logging.getLogger("shoal.supervisor")

STATE_FILE = "supervisor.json"
HOLLOW = "hollow-agents"  # the process running `shoal up --hollow-nodes N` (agent/hollow.py)
#: the ports of the extra instances, kept across restarts: {"dispatcher-2": 41234}
PORTS_FILE = "scaled-ports.json"


def cluster_id(data_dir: Path) -> str:
    """The id of the cluster kept in `data_dir` (its root CA's, made by its first start: the O of every
    certificate): agents mark every task workload with it, so `shoal down` stops exactly this cluster's, even
    on a shared machine. A swarm node's directory has it in node.json."""
    with contextlib.suppress(BootstrapError):
        return read_local(data_dir / "certificates").cluster_id
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads((data_dir / "node.json").read_text())["cluster_id"])
    return "default"


def stop_workloads(data_dir: Path, docker_host: str | None = None) -> list[Workload]:
    """Stop every task process and container of the cluster of `data_dir` still running — whichever agent
    (crashed, replaced, or under an earlier node id) started it — and return them."""
    host = docker_host or os.environ.get("SHOAL_DOCKER_HOST") or "unix:///var/run/docker.sock"
    cluster = cluster_id(data_dir)
    # the routing mesh's kernel path: the chains of a killed agent (a graceful one removes its own)
    if removed := iptables.sweep(meshrules.cluster_prefix(cluster)):
        log.info("supervisor: removed the routing mesh's iptables chains %s", ", ".join(removed))
    return stop_cluster(cluster, docker_host=host)


@dataclass
class Layout:
    """Where everything listens and lives. Ports derive from `base_port` (docs/operations.md has the table).

    The local cluster is shaped like machines joined into one swarm (docs/security.md): the first manager node
    runs NATS, raftstore 1, the CA, gateway, orchestrator, allocator, scheduler and dispatcher; raftstores 2 and
    3 are two more manager nodes with only the raftstore role; each agent is a worker node that joins with the
    worker token. Every process has its own certificate under `certificates/<process>`."""

    data_dir: Path
    base_port: int = 4300
    gateway_port: int = 4242
    agents: int = 2
    #: worker nodes simulated in one process (`python -m agent.hollow`: real identities, sessions and
    #: heartbeats, hollow task runtime); 0: none
    hollow_nodes: int = 0
    #: the processes the hollow nodes are split over (agent/hollow.py --processes)
    hollow_processes: int = 1
    host: str = "127.0.0.1"
    raft_members: int = 3
    heartbeat_period: float = 5.0
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    #: the lifetime of the certificates init issues (tests; the CA's own follow the cluster's setting)
    cert_lifetime: float | None = None
    #: nats-server's monitoring endpoint on 127.0.0.1 (`/varz`: messages and bytes; benchmarks count NATS
    #: traffic with it); None: off, as in production
    nats_monitor_port: int | None = None
    #: the ports of the extra instances of scaled roles ("dispatcher-2" -> port); see `assign_ports`
    extra_ports: dict[str, int] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        return f"tls://{self.host}:{self.base_port}"

    @property
    def gateway_url(self) -> str:
        return f"https://{self.host}:{self.gateway_port}"

    def agent_addr(self, i: int) -> str:
        """The address agent `i` advertises (SHOAL_ADDR): on loopback each local node gets its own, 127.0.0.<i+1>,
        so the routing mesh of each node listens on its own address (docs/networking.md)."""
        return f"127.0.0.{i + 1}" if self.host == "127.0.0.1" else self.host

    def raft_api(self, i: int) -> str:
        return f"https://{self.host}:{self.base_port + i}"

    def raft_peer(self, i: int) -> str:
        return f"{self.host}:{self.base_port + 10 + i}"

    @property
    def store_members(self) -> list[str]:
        return [self.raft_api(i) for i in range(1, self.raft_members + 1)]

    @property
    def cert_root(self) -> Path:
        return self.data_dir / "certificates"

    @property
    def client_dir(self) -> Path:
        """The admin client bundle (DOCKER_CERT_PATH layout: ca.pem, cert.pem, key.pem)."""
        return self.data_dir / "client"

    def ca_urls(self) -> list[str]:
        return [self.url_of("ca")]

    def cert_dir(self, name: str) -> Path:
        if name.startswith("agent-"):
            return self.data_dir / "agents" / name / "certificates"
        return self.cert_root / name

    def port_of(self, name: str) -> int:
        if name in self.extra_ports:
            return self.extra_ports[name]
        fixed = {"orchestrator": 21, "allocator": 22, "scheduler": 23, "dispatcher": 24, "ca": 25}
        if name in fixed:
            return self.base_port + fixed[name]
        if name.startswith("agent-"):
            return self.base_port + 30 + int(name.split("-")[1])
        if name.startswith("raftstore-"):
            return self.base_port + int(name.split("-")[1])
        if name == "gateway":
            return self.gateway_port
        if name == "nats":
            return self.base_port
        raise KeyError(name)

    def url_of(self, name: str) -> str:
        return f"https://{self.host}:{self.port_of(name)}"

    def prepare(self) -> None:
        """Identities on first start (shoal.bootstrap), and the NATS server's configuration."""
        from shoal.natsconf import render

        lifetime = None if self.cert_lifetime is None else dt.timedelta(seconds=self.cert_lifetime)
        init_local(self.data_dir, self.cert_root, self.client_dir, raft_members=self.raft_members,
                   hosts=(self.host,), lifetime=lifetime)
        conf = self.data_dir / "nats" / "nats.conf"
        conf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf.write_text(render(self.host, self.base_port, self.cert_dir("nats"), http_port=self.nats_monitor_port))

    def health_client(self) -> httpx.Client:
        """The client health checks use: the admin bundle (agents' ports are served with worker certificates,
        so it does not insist on a manager's)."""
        return admin_client(self, server_role=None)

    def health_problem(self, specs: list[ProcSpec], http: httpx.Client) -> str:
        return health_problem(self, specs, http)

    def assign_ports(self, names: list[str]) -> None:
        """Give each extra instance in `names` a port: the one it had before (PORTS_FILE), else a free one."""
        path = self.data_dir / PORTS_FILE
        try:
            known = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError):
            known = {}
        if not names:
            return
        for name in names:
            self.extra_ports[name] = known.get(name) or self.extra_ports.get(name) or _free_port(self.host)
        known.update(self.extra_ports)
        path.write_text(json.dumps(known, indent=2))

    def instances_of(self, role: str) -> list[str]:
        """The instances of `role` this layout knows: the first, then the extras with a port."""
        extras = sorted((n for n in self.extra_ports if role_of(n) == role), key=lambda n: int(n.rsplit("-", 1)[1]))
        return [role, *extras]

    def _common_env(self) -> dict[str, str]:
        return {
            "SHOAL_NATS_URL": self.nats_url,
            "SHOAL_STORE_MEMBERS": ",".join(self.store_members),
            "SHOAL_HOST": self.host,
            "SHOAL_LOG_LEVEL": self.log_level,
            "SHOAL_CA_URLS": self.url_of("ca"),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def component_spec(self, name: str) -> ProcSpec:
        """The process of a control-plane component: its first instance (`dispatcher`) or an extra one
        (`dispatcher-2`, with the certificate its own manager join wrote under certificates/dispatcher-2)."""
        role = role_of(name)
        number = 1 if name == role else int(name.rsplit("-", 1)[1])
        env = {**self._common_env(), "SHOAL_PORT": str(self.port_of(name)), "SHOAL_INSTANCE": f"{role}-{number}",
               "SHOAL_CERT_DIR": str(self.cert_dir(name))}
        if role == "dispatcher":
            env["SHOAL_HEARTBEAT_PERIOD"] = str(self.heartbeat_period)
        if role == "gateway":  # task logs (services/gateway/logs.py)
            env["SHOAL_DISPATCHER_URLS"] = ",".join(self.url_of(d) for d in self.instances_of("dispatcher"))
        if role == "ca":
            env["SHOAL_CA_BOOTSTRAP"] = str(self.cert_root / CA_BOOTSTRAP)
        # the CA is healthy once it serves the cluster's root (it loads it into the store first): joins work
        probe = "/readyz" if role == "ca" else "/healthz"
        return ProcSpec(name, [sys.executable, "-m", f"services.{role}"], env, self.url_of(name) + probe)

    def specs(self) -> list[ProcSpec]:
        """Processes in start order (stopped in reverse). Needs the identities `prepare()` made. The extra
        instances of scaled roles are not among them: each needs its own join first (Supervisor.scale)."""
        py = sys.executable
        ids = read_local(self.cert_root)
        common = self._common_env()
        nats_bin = shutil.which("nats-server") or str(Path(py).parent / "nats-server")
        specs = [ProcSpec("nats", [nats_bin, "-c", str(self.data_dir / "nats" / "nats.conf")], {}, None)]
        members = ";".join(f"{i}={self.raft_api(i)},{self.raft_peer(i)},{ids.raft_nodes[i - 1]}"
                           for i in range(1, self.raft_members + 1))
        for i in range(1, self.raft_members + 1):
            name = f"raftstore-{i}"
            env = {**common, "SHOAL_RAFT_ID": str(i), "SHOAL_RAFT_MEMBERS": members,
                   "SHOAL_PORT": str(self.base_port + i), "SHOAL_CERT_DIR": str(self.cert_dir(name)),
                   "SHOAL_DATA_DIR": str(self.data_dir / "raft" / str(i))}
            specs.append(ProcSpec(name, [py, "-m", "services.raftstore"], env, self.raft_api(i) + "/healthz"))
        for name in ("ca", "gateway", "orchestrator", "allocator", "scheduler", "dispatcher"):
            specs.append(self.component_spec(name))
        for i in range(1, self.agents + 1):
            name = f"agent-{i}"
            env = {**common, "SHOAL_PORT": str(self.port_of(name)),
                   "SHOAL_DISPATCHERS": ",".join(self.url_of(d) for d in self.instances_of("dispatcher")),
                   "SHOAL_STATE_DIR": str(self.data_dir / "agents" / name),
                   "SHOAL_CERT_DIR": str(self.cert_dir(name)),
                   "SHOAL_HOSTNAME": f"{self._hostname()}-{name}",
                   "SHOAL_ADDR": self.agent_addr(i),
                   # `shoal down` leaves nothing running: processes and containers (SHOAL_EXECUTORS=process,docker)
                   "SHOAL_STOP_TASKS_ON_EXIT": "true"}
            if ids.worker_token:
                env["SHOAL_JOIN_TOKEN"] = ids.worker_token
            specs.append(ProcSpec(name, [py, "-m", "agent"], env, self.url_of(name) + "/healthz"))
        if self.hollow_nodes:
            env = {**common,  # the hollow nodes spread over every dispatcher, like the agents
                   "SHOAL_DISPATCHERS": ",".join(self.url_of(d) for d in self.instances_of("dispatcher")),
                   "SHOAL_JOIN_TOKEN": ids.worker_token or ""}
            specs.append(ProcSpec(HOLLOW, [py, "-m", "agent.hollow", "--nodes", str(self.hollow_nodes),
                                           "--state-root", str(self.data_dir / "hollow"),
                                           "--prefix", f"{self._hostname()}-hollow",
                                           "--processes", str(self.hollow_processes)], env, None))
        return specs

    @staticmethod
    def _hostname() -> str:
        import socket

        return socket.gethostname()


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.data_dir = layout.data_dir
        self.log_dir = self.data_dir / "logs"
        self.children: dict[str, Child] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leftovers: list[Workload] = []
        #: set to make the scaler look at SCALE_FILE again (`shoal scale` signals SIGUSR1 to the daemon)
        self.rescale = threading.Event()
        #: what the scaler has not done yet ("" once every wanted extra instance runs), for health and status
        self.scale_problem = ""

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.init()
        wanted = extra_names(read_scale(self.data_dir))
        self.layout.assign_ports(wanted)  # before the specs: agents are told of every dispatcher
        self.scale_problem = "starting extra instances" if wanted else ""
        repo_root = Path(__file__).resolve().parent.parent
        for spec in self.layout.specs():
            child = Child(spec, self.log_dir, repo_root)
            self.children[spec.name] = child
            child.start()
            if spec.name == "nats":
                _wait_port(self.layout.host, self.layout.base_port, 10)
        self._write_state()
        self._thread = threading.Thread(target=self._monitor, name="supervisor", daemon=True)
        self._thread.start()
        if "nats" in self.children:
            threading.Thread(target=self._renew_nats, name="supervisor.renew", daemon=True).start()
        if self.specs_scalable:
            self.rescale.set()
            threading.Thread(target=self._scaler, name="supervisor.scale", daemon=True).start()

    #: whether this supervisor runs extra instances of scaled roles (a local cluster's; not a swarm node's)
    specs_scalable = True

    # ---- scaling (`shoal up --scale`, `shoal scale`) ---------------------------------------------------------
    def _scaler(self) -> None:
        """Bring the extra instances to what SCALE_FILE asks, whenever `rescale` is set: each new one joins the
        cluster through the CA with the manager token as a node of its own certified for that one component
        (the role-per-node join `shoal swarm join --roles dispatcher` makes), then runs; one no longer wanted is
        stopped and its certificate deleted."""
        while not self._stop.is_set():
            if not self.rescale.wait(0.5):
                continue
            self.rescale.clear()
            try:
                self.scale_to(read_scale(self.data_dir))
            except Exception as e:  # the CA or gateway not up yet: try again shortly
                self.scale_problem = f"scaling: {e}"
                log.warning("scaling: %s; retrying", e)
                if self._stop.wait(1.0):
                    return
                self.rescale.set()

    def scale_to(self, scale: dict[str, int]) -> None:
        wanted = extra_names(scale)
        running = [n for n in self.children if role_of(n) != n]
        for name in running:
            if name not in wanted:
                log.info("scaling: stopping %s", name)
                self.remove_process(name)
                shutil.rmtree(self.layout.cert_dir(name), ignore_errors=True)
        missing = [n for n in wanted if n not in self.children]
        if missing:
            self.scale_problem = f"starting {', '.join(missing)}"
            self.layout.assign_ports(missing)
            self._join_extras([n for n in missing if not has_identity(self.layout.cert_dir(n))])
            for name in missing:
                log.info("scaling: starting %s on port %d", name, self.layout.port_of(name))
                self.add_process(self.layout.component_spec(name))
        self.scale_problem = ""

    def _join_extras(self, names: list[str]) -> None:
        import asyncio

        from shoal import enroll

        if not names:
            return
        with admin_client(self.layout, timeout=10.0) as http:
            r = http.get(self.layout.gateway_url + "/v1/swarm/join-tokens")
            if r.status_code != 200:
                raise RuntimeError(f"the manager join token could not be read ({r.status_code} {r.text[:200]})")
            token = str(r.json()["manager"])
        hosts = [self.layout.host, "localhost", "127.0.0.1"]
        for name in names:
            dirs = {role_of(name): self.layout.cert_dir(name)}
            asyncio.run(enroll.join_components(self.layout.ca_urls(), token, dirs,
                                               hostname=f"{Layout._hostname()}-{name}", hosts=hosts))

    def init(self) -> None:
        self.layout.prepare()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for child in self.children.values():
                child.wanted = False
            for stage in stop_stages(list(self.children.values())):
                stop_together(stage)
        if self._thread is not None:
            self._thread.join(5)
        # The agents stopped their tasks on the way out; what a crashed or replaced agent left is stopped here.
        self.leftovers = stop_workloads(self.data_dir, self.layout.extra_env.get("SHOAL_DOCKER_HOST"))
        for w in self.leftovers:
            log.warning("stopped a leftover %s", w)
        state = self.data_dir / STATE_FILE
        state.unlink(missing_ok=True)

    def _monitor(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                changed = False
                for child in self.children.values():
                    if not child.wanted or child.alive():
                        continue
                    now = time.monotonic()
                    if child.next_start == 0.0:
                        delay = min(0.2 * (2 ** min(child.restarts, 5)), 5.0)
                        child.next_start = now + delay
                        code = child.proc.returncode if child.proc else None
                        log.warning("%s exited (code %s); restarting in %.1fs", child.spec.name, code, delay)
                    elif now >= child.next_start:
                        child.restarts += 1
                        child.next_start = 0.0
                        child.start()
                        changed = True
                if changed:
                    self._write_state()

    def _renew_nats(self) -> None:
        """nats-server does not renew its own certificate: the supervisor renews it through the CA at 50-80 %
        of its lifetime (with the certificate itself, as every process does), or at once after a root rotation,
        and makes the server reload it (SIGHUP: established connections stay up)."""
        import asyncio
        import random

        from shoal import enroll, pki

        cert_dir = self.layout.cert_dir("nats")
        ca_urls = [u for u in self.layout.ca_urls() if u]
        while ca_urls and not self._stop.is_set():
            try:
                creds = transport.Credentials(cert_dir)
                at = pki.renew_at(creds.identity, random.uniform(0.5, 0.8))
            except (transport.TransportError, OSError, pki.PKIError) as e:
                log.warning("nats certificate unreadable (%s)", e)
                return
            renewer = enroll.Renewer(creds, ca_urls)
            rotated = False
            while not rotated and time.time() < at:  # look at the roots meanwhile: a root rotation renews now
                if self._stop.wait(max(0.0, min(at - time.time(), renewer.root_poll))):
                    return
                roots = creds.roots_pem
                rotated = asyncio.run(renewer.check_roots())
                if not rotated and creds.roots_pem != roots:
                    self.kill("nats", signal.SIGHUP)  # the trusted roots changed: nats-server re-reads them
            try:
                asyncio.run(enroll.renew(creds, ca_urls))
            except (enroll.CAUnavailable, enroll.JoinRefused) as e:
                log.warning("renewing the nats certificate failed (%s); retrying", e)
                self._stop.wait(1.0)
                continue
            log.info("nats certificate renewed; reloading nats-server")
            self.kill("nats", signal.SIGHUP)

    # ---- control (tests, CLI) ----------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` to a child; the monitor restarts it if it dies. Returns the pid signalled."""
        with self._lock:
            child = self.children[name]
            pid = child.pid
            child.signal(sig)
            return pid

    def stop_process(self, name: str) -> None:
        with self._lock:
            self.children[name].stop()

    def start_process(self, name: str) -> None:
        with self._lock:
            child = self.children[name]
            child.wanted = True
            if not child.alive():
                child.start()
        self._write_state()

    def pid(self, name: str) -> int | None:
        return self.children[name].pid

    def add_process(self, spec: ProcSpec) -> None:
        """Start a new child at run time (a promoted swarm machine's manager processes)."""
        with self._lock:
            if spec.name in self.children:
                return
            child = Child(spec, self.log_dir, Path(__file__).resolve().parent.parent)
            self.children[spec.name] = child
            child.start()
        self._write_state()

    def remove_process(self, name: str) -> None:
        """Stop a child for good and forget it (a demoted swarm machine's manager processes)."""
        with self._lock:
            child = self.children.pop(name, None)
            if child is not None:
                child.wanted = False
                child.stop()
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "gateway_url": self.layout.gateway_url,
            "store_members": self.layout.store_members,
            "children": {n: c.pid for n, c in self.children.items()},
            "layout": {"base_port": self.layout.base_port, "gateway_port": self.layout.gateway_port,
                       "agents": self.layout.agents, "host": self.layout.host},
            "instances": {n: self.layout.url_of(n) for n in self.children if role_of(n) in SCALABLE},
        }
        tmp = self.data_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.data_dir / STATE_FILE)

    # ---- health ------------------------------------------------------------------------------------------
    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every wanted process answers /healthz, the store has a leader, and every agent's node is READY."""

        def crashing() -> str:
            for c in self.children.values():
                if c.wanted and not c.alive() and c.restarts > 3:
                    return f"{c.spec.name} keeps exiting; see {c.log_path}"
            return self.scale_problem

        deadline = time.monotonic() + timeout
        while self.scale_problem and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.2)  # the extra instances join (through the CA) once the first ones serve
        wanted = [c.spec for c in self.children.values() if c.wanted]
        wait_healthy(self.layout, wanted, max(1.0, deadline - time.monotonic()), extra_check=crashing)


def admin_client(layout: Layout, timeout: float = 2.0, server_role: str | None = "swarm-manager") -> httpx.Client:
    """An HTTP client with the local cluster's admin bundle."""
    creds = transport.Credentials.client_bundle(layout.client_dir)
    return transport.sync_http_client(creds, timeout=timeout, server_role=server_role)


def process_problem(specs: list[ProcSpec], http: httpx.Client) -> str:
    """'' when every process with a health URL answers 200 there, else the first that does not."""
    for spec in specs:
        if spec.health_url is None:
            continue
        try:
            if http.get(spec.health_url).status_code != 200:
                return f"{spec.name} not healthy"
        except httpx.HTTPError:
            return f"{spec.name} not answering at {spec.health_url}"
    return ""


def health_problem(layout: Layout, specs: list[ProcSpec], http: httpx.Client) -> str:
    """'' when healthy, else what is still missing. `http` must not insist on a manager's certificate: the
    agents' own ports are served with their worker certificates."""
    problem = process_problem(specs, http)
    if problem:
        return problem
    try:
        cluster = http.get(layout.gateway_url + "/v1/cluster").json()
        if not cluster.get("raft", {}).get("leader"):
            return "no raft leader yet"
        nodes = http.get(layout.gateway_url + "/v1/nodes").json()
    except (httpx.HTTPError, ValueError) as e:
        return f"gateway not ready: {e}"
    items = nodes.get("items", nodes) if isinstance(nodes, dict) else nodes
    ready = [n for n in items if n.get("status", {}).get("state") == "ready"]
    agents = sum(1 for s in specs if s.name.startswith("agent-"))
    if any(s.name == HOLLOW for s in specs):
        agents += layout.hollow_nodes
    if len(ready) < agents:
        return f"{len(ready)}/{agents} agents registered"
    return ""


def wait_healthy(layout: Layout, specs: list[ProcSpec], timeout: float,
                 extra_check: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    problem = "starting"
    with layout.health_client() as http:
        while time.monotonic() < deadline:
            problem = extra_check() or layout.health_problem(specs, http)
            if problem == "":
                return
            time.sleep(0.3)
    raise TimeoutError(f"cluster not healthy after {timeout:.0f}s: {problem} (logs in {layout.data_dir / 'logs'})")


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, PermissionError, KeyError, ValueError):
        return None
    return state
