"""One machine of a swarm: what `shoal swarm init` and `shoal swarm join` set up, and the long-lived node
supervisor they leave running (SwarmKit's node: one process that runs the roles this machine has).

Every machine of a swarm uses the same ports on its own advertise address (as Swarm uses 2377 everywhere),
so knowing a manager's address is knowing all its endpoints (`Ports`). A node's directory holds:
- `node.json`: node id, cluster id, roles, advertise address, the managers known, its raft member id;
- `certificates/{swarm-node.crt, swarm-node.key, swarm-root-ca.crt}`: the node's own (agent) identity, and
  `certificates/<component>/` for each manager process (each its own certificate);
- `client/`: the admin bundle (the first manager only); `logs/`, `raft/`, `agent/`.

`init` makes the cluster's root CA on this machine (shoal.bootstrap's hand-over to the CA service);
`join` pins the cluster's root by the token's digest before it sends anything, gets its certificates from a
manager's CA in one call (token + one CSR per process), and — for a manager with the raftstore role — adds
itself to the raft cluster as a learner (it becomes a voter once caught up)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from shoal import enroll, pki, transport
from shoal.bootstrap import CA_BOOTSTRAP, hand_over_ca, private_dirs, write_admin_bundle
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.child import ProcSpec
from shoal.ids import new_id
from shoal.supervisor import Layout, Supervisor, process_problem

log = logging.getLogger(__name__)

NODE_FILE = "node.json"
MANAGER_ROLES = ("nats", "raftstore", "ca", "gateway", "orchestrator", "allocator", "scheduler", "dispatcher")


class NodeError(RuntimeError):
    """Init or join cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Ports:
    """The ports every machine of a swarm uses (on its own advertise address)."""

    nats: int = 4222
    nats_cluster: int = 6222
    raft_api: int = 4301
    raft_peer: int = 4311
    gateway: int = 4242
    orchestrator: int = 4321
    allocator: int = 4322
    scheduler: int = 4323
    dispatcher: int = 4324
    ca: int = 4325
    agent: int = 4331


@dataclass
class NodeConfig:
    node_id: str
    cluster_id: str
    manager: bool
    roles: list[str]  # manager processes this machine runs (the agent always runs)
    advertise: str
    managers: list[str]  # advertise addresses of the managers known (this one included when a manager)
    raft_id: int | None = None
    raft_members: str = ""  # SHOAL_RAFT_MEMBERS at join (the members then, and this one)
    raft_join: bool = False
    ports: Ports = field(default_factory=Ports)

    def save(self, data_dir: Path) -> None:
        pki.write_private(data_dir / NODE_FILE, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, data_dir: Path) -> NodeConfig:
        try:
            raw = json.loads((data_dir / NODE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise NodeError(f"node: {data_dir / NODE_FILE} is missing or unreadable ({e}): run `shoal swarm init` "
                            "or `shoal swarm join` first") from None
        raw["ports"] = Ports(**raw.get("ports", {}))
        return cls(**raw)


def _url(host: str, port: int) -> str:
    return f"https://{host}:{port}"


@dataclass
class NodeLayout(Layout):
    """The processes of one machine, as a `Layout` the Supervisor runs."""

    config: NodeConfig | None = None

    @classmethod
    def for_node(cls, data_dir: Path, log_level: str = "INFO") -> NodeLayout:
        cfg = NodeConfig.load(data_dir)
        return cls(data_dir, base_port=cfg.ports.nats, gateway_port=cfg.ports.gateway, agents=1,
                   host=cfg.advertise, log_level=log_level, config=cfg)

    @property
    def cfg(self) -> NodeConfig:
        assert self.config is not None
        return self.config

    def cert_dir(self, name: str) -> Path:
        return self.cert_root if name == "agent" else self.cert_root / name

    def port_of(self, name: str) -> int:
        return int(getattr(self.cfg.ports, name.replace("-", "_")))

    def url_of(self, name: str) -> str:
        return _url(self.host, self.port_of(name))

    def ca_urls(self) -> list[str]:
        return [_url(m, self.cfg.ports.ca) for m in self.cfg.managers]

    @property
    def gateway_url(self) -> str:
        mine = "gateway" in self.cfg.roles
        return _url(self.host if mine else self.cfg.managers[0], self.cfg.ports.gateway)

    @property
    def store_members(self) -> list[str]:
        return [_url(m, self.cfg.ports.raft_api) for m in self.cfg.managers]

    @property
    def nats_url(self) -> str:
        mine = "nats" in self.cfg.roles
        return f"tls://{self.host if mine else self.cfg.managers[0]}:{self.cfg.ports.nats}"

    def prepare(self) -> None:
        if "nats" in self.cfg.roles:
            write_nats_conf(self, [m for m in self.cfg.managers if m != self.cfg.advertise])

    def health_client(self) -> httpx.Client:
        """A manager checks its processes with one of its own manager identities; a worker has no health URL."""
        # not nats (nats-server's identity) nor raftstore or ca (their keys are encrypted while autolock is on)
        name = next((r for r in self.cfg.roles if r not in ("nats", "raftstore", "ca")), None)
        if name is None and self.cfg.roles:
            name = "agent"  # the agent of a manager machine holds a manager certificate, never encrypted
        creds = transport.Credentials(self.cert_dir(name)) if name else None
        return transport.sync_http_client(creds, timeout=2.0)

    def health_problem(self, specs: list[ProcSpec], http: httpx.Client) -> str:
        return process_problem(specs, http)

    def specs(self) -> list[ProcSpec]:
        cfg, ports, py = self.cfg, self.cfg.ports, sys.executable
        managers = cfg.managers
        common = {
            "SHOAL_NATS_URL": self.nats_url,
            "SHOAL_STORE_MEMBERS": ",".join(self.store_members),
            "SHOAL_HOST": self.host,
            "SHOAL_LOG_LEVEL": self.log_level,
            "SHOAL_CA_URLS": ",".join(_url(m, ports.ca) for m in managers),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        specs: list[ProcSpec] = []
        if "nats" in cfg.roles:
            specs.append(ProcSpec("nats", [_nats_bin(), "-c", str(self.data_dir / "nats" / "nats.conf")], {}, None))
        if "raftstore" in cfg.roles and cfg.raft_id is not None:
            env = {**common, "SHOAL_RAFT_ID": str(cfg.raft_id), "SHOAL_PORT": str(ports.raft_api),
                   "SHOAL_RAFT_MEMBERS": cfg.raft_members, "SHOAL_CERT_DIR": str(self.cert_dir("raftstore")),
                   "SHOAL_DATA_DIR": str(self.data_dir / "raft")}
            if cfg.raft_join:
                env["SHOAL_RAFT_JOIN"] = "1"
            specs.append(ProcSpec("raftstore", [py, "-m", "services.raftstore"], env,
                                  self.url_of("raft_api") + "/healthz"))
        for name in ("ca", "gateway", "orchestrator", "allocator", "scheduler", "dispatcher"):
            if name not in cfg.roles:
                continue
            env = {**common, "SHOAL_PORT": str(self.port_of(name)), "SHOAL_INSTANCE": f"{name}@{cfg.advertise}",
                   "SHOAL_CERT_DIR": str(self.cert_dir(name))}
            if name == "gateway":  # task logs come from the dispatcher holding the node's session
                env["SHOAL_DISPATCHER_URLS"] = ",".join(_url(m, ports.dispatcher) for m in managers)
            if name == "ca" and (self.cert_root / CA_BOOTSTRAP).exists():
                env["SHOAL_CA_BOOTSTRAP"] = str(self.cert_root / CA_BOOTSTRAP)
            # the CA is healthy once it serves the cluster's root (it loads it into the store first): joins work
            probe = "/readyz" if name == "ca" else "/healthz"
            specs.append(ProcSpec(name, [py, "-m", f"services.{name}"], env, self.url_of(name) + probe))
        env = {**common, "SHOAL_PORT": str(ports.agent),
               "SHOAL_DISPATCHERS": ",".join(_url(m, ports.dispatcher) for m in managers),
               "SHOAL_STATE_DIR": str(self.data_dir / "agent"), "SHOAL_CERT_DIR": str(self.cert_dir("agent")),
               "SHOAL_HOSTNAME": socket.gethostname() + "-" + cfg.advertise, "SHOAL_STOP_TASKS_ON_EXIT": "true",
               # promoted, the agent asks for these in its renewal; NodeSupervisor then runs them
               "SHOAL_MANAGER_COMPONENTS": ",".join(MANAGER_ROLES)}
        specs.append(ProcSpec("agent", [py, "-m", "agent"], env, None))
        return specs


def _nats_bin() -> str:
    import shutil

    return shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")


def write_nats_conf(layout: NodeLayout, routes: list[str]) -> None:
    from shoal.natsconf import render

    conf = layout.data_dir / "nats" / "nats.conf"
    conf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ports = layout.cfg.ports
    conf.write_text(render(layout.host, ports.nats, layout.cert_dir("nats"), server_name=layout.cfg.advertise,
                           cluster_host=layout.host, cluster_port=ports.nats_cluster,
                           routes=[f"tls://{m}:{ports.nats_cluster}" for m in routes]))


# ---- init ---------------------------------------------------------------------------------------------------
def init(data_dir: Path, advertise: str, ports: Ports = Ports()) -> tuple[NodeConfig, str, str]:
    """Make this machine the first manager of a new swarm; returns its config and the worker and manager
    join tokens."""
    if (data_dir / NODE_FILE).exists():
        raise NodeError(f"node: {data_dir} already belongs to a swarm (`shoal swarm leave` first, or use another "
                        "--data-dir)")
    root = data_dir / "certificates"
    private_dirs(data_dir, root)
    signer = Signer.new()
    node_id = new_id()
    hosts = (advertise, *LOCAL_HOSTS)
    for name in MANAGER_ROLES:
        signer.issue_dir(root / name, node_id=node_id, role=pki.MANAGER, component=name, hosts=hosts)
    signer.issue_dir(root, node_id=node_id, role=pki.MANAGER, component="agent", hosts=hosts)
    write_admin_bundle(signer, data_dir / "client")
    # the certificates issued here, so a root rotation waits for them too
    worker_token, manager_token = hand_over_ca(root, signer, {node_id: [*MANAGER_ROLES, "agent"]})
    members = f"1={_url(advertise, ports.raft_api)},{advertise}:{ports.raft_peer},{node_id}"
    cfg = NodeConfig(node_id, signer.cluster_id, True, list(MANAGER_ROLES), advertise, [advertise], raft_id=1,
                     raft_members=members, ports=ports)
    cfg.save(data_dir)
    return cfg, worker_token, manager_token


# ---- join -----------------------------------------------------------------------------------------------------
def join(data_dir: Path, token: str, remote: str, advertise: str, roles: list[str] | None,
         ports: Ports = Ports(), timeout: float = 30.0) -> NodeConfig:
    """Join the swarm a manager at `remote` (HOST or HOST:PORT of its CA) belongs to. A worker token makes a
    worker (agent only); a manager token a manager running `roles` (default: all)."""
    if (data_dir / NODE_FILE).exists():
        raise NodeError(f"node: {data_dir} already belongs to a swarm (`shoal swarm leave` first)")
    try:
        pki.parse_token(token)
    except pki.PKIError as e:
        raise NodeError(f"join: {e}") from None
    ca_url = "https://" + (remote if ":" in remote else f"{remote}:{ports.ca}")
    wanted = list(MANAGER_ROLES) if roles is None else roles
    unknown = [r for r in wanted if r not in MANAGER_ROLES]
    if unknown:
        raise NodeError(f"join: unknown roles {unknown}; roles are {', '.join(MANAGER_ROLES)}")
    root_dir = data_dir / "certificates"
    private_dirs(data_dir, root_dir)
    # The token alone says which role this machine gets: the manager processes are asked `if_manager` (the CA
    # signs them for the manager token only); with --roles the user says it is the manager token.
    managed = {r: root_dir / r for r in wanted}
    try:
        joined = asyncio.run(enroll.join_components(
            [ca_url], token, {"agent": root_dir, **(managed if roles is not None else {})},
            if_manager=managed if roles is None else None, hostname=socket.gethostname(),
            hosts=[advertise, *LOCAL_HOSTS], timeout=timeout))
    except (enroll.JoinRefused, enroll.CAUnavailable) as e:
        raise NodeError(str(e)) from None
    manager = joined.identity.role == pki.MANAGER
    remote_host = httpx.URL(ca_url).host
    managers = joined.managers or [remote_host]
    cfg = NodeConfig(joined.identity.node_id, joined.identity.cluster_id, manager, wanted if manager else [],
                     advertise, managers, ports=ports)
    if manager and "raftstore" in wanted:
        _add_raft_member(cfg, root_dir / "raftstore")
    if manager:
        cfg.managers = [*[m for m in cfg.managers if m != advertise], advertise]
    cfg.save(data_dir)
    return cfg


def _add_raft_member(cfg: NodeConfig, cert_dir: Path) -> None:
    """Add this machine's raftstore as a learner through any current member (it forwards to the leader)."""
    creds = transport.Credentials(cert_dir)
    ports = cfg.ports
    me_api, me_peer = _url(cfg.advertise, ports.raft_api), f"{cfg.advertise}:{ports.raft_peer}"
    last: Exception | str = "no manager answered"
    with transport.sync_http_client(creds, timeout=60.0) as http:
        for m in cfg.managers:
            try:
                view = http.get(_url(m, ports.raft_api) + "/v1/members").json()
                r = http.post(_url(m, ports.raft_api) + "/v1/members",
                              json={"api_url": me_api, "peer_addr": me_peer, "node_id": cfg.node_id, "wait": 0})
            except httpx.HTTPError as e:
                last = e
                continue
            if r.status_code not in (201, 202):
                last = f"{r.status_code} {r.text[:300]}"
                continue
            added = int(r.json()["added"])
            members = [f"{x['id']}={x['api_url']},{x['peer_addr']},{x.get('node_id', '')}" for x in view["members"]]
            members.append(f"{added}={me_api},{me_peer},{cfg.node_id}")
            cfg.raft_id, cfg.raft_join, cfg.raft_members = added, True, ";".join(members)
            cfg.managers = sorted({*cfg.managers, *(_host(x["api_url"]) for x in view["members"])})
            return
    raise NodeError(f"join: could not add this machine to the raft cluster: {last}")


def _host(url: str) -> str:
    return httpx.URL(url).host


# ---- promotion and demotion (`shoal node promote|demote`) -------------------------------------------------------
ROLE_POLL = 1.0  # seconds between two looks at the agent's certificate


def role_change(cfg: NodeConfig, cert_role: str) -> str:
    """What the machine must do now that its agent's certificate says `cert_role` (the agent renews at once
    when its dispatcher says the node's desired role changed): "promote", "demote" or ""."""
    if cert_role == pki.MANAGER and not cfg.manager:
        return "promote"
    if cert_role == pki.WORKER and cfg.manager:
        return "demote"
    return ""


def promoted_roles(cert_root: Path) -> list[str]:
    """The manager roles whose certificates the promoting renewal wrote (in MANAGER_ROLES' order)."""
    roles = []
    for name in MANAGER_ROLES:
        try:
            # the certificate only: a raftstore key may be encrypted under the autolock key (shoal.keyfile)
            ident = pki.identity_of(pki.load_cert((cert_root / name / pki.CERT_FILE).read_bytes()))
        except (OSError, pki.PKIError):
            continue
        if ident.role == pki.MANAGER and ident.component == name:
            roles.append(name)
    return roles


def promoted_config(cfg: NodeConfig, roles: list[str]) -> NodeConfig:
    """The config of a worker promoted to run `roles` (its raft membership is added separately)."""
    return NodeConfig(cfg.node_id, cfg.cluster_id, True, list(roles), cfg.advertise,
                      [*[m for m in cfg.managers if m != cfg.advertise], cfg.advertise], ports=cfg.ports)


def demoted_config(cfg: NodeConfig) -> NodeConfig:
    """The config of a manager demoted to a worker: no manager role, no raft member, the other managers."""
    others = [m for m in cfg.managers if m != cfg.advertise]
    return NodeConfig(cfg.node_id, cfg.cluster_id, False, [], cfg.advertise, others or cfg.managers,
                      ports=cfg.ports)


def remove_raft_member(cfg: NodeConfig, cert_dir: Path) -> str:
    """Remove this machine's raft member through any member (the leader refuses when the quorum would be
    lost). '' when removed (or already gone), else why not."""
    if cfg.raft_id is None:
        return ""
    creds = transport.Credentials(cert_dir)
    last = "no raft member answered"
    with transport.sync_http_client(creds, timeout=60.0) as http:
        for m in [*[m for m in cfg.managers if m != cfg.advertise], cfg.advertise]:
            try:
                r = http.delete(_url(m, cfg.ports.raft_api) + f"/v1/members/{cfg.raft_id}")
            except httpx.HTTPError as e:
                last = f"{m}: {e}"
                continue
            if r.status_code in (200, 202, 204, 404):
                return ""
            try:
                last = str(r.json().get("message") or r.text[:300])
            except ValueError:
                last = f"{r.status_code} {r.text[:300]}"
            if r.status_code < 500:
                return last
    return last


class NodeSupervisor(Supervisor):
    """A swarm machine's supervisor: runs its layout, and changes its set of processes when the node is
    promoted or demoted (its agent's certificate changes role: `role_change`)."""

    layout: NodeLayout
    specs_scalable = False  # a swarm machine runs one instance of each of its roles; more machines scale it

    def __init__(self, layout: NodeLayout, poll: float = ROLE_POLL) -> None:
        super().__init__(layout)
        self.poll = poll
        self.waiting = ""  # why a role change waits (the demotion of a member the quorum needs), for logs/tests

    def start(self) -> None:
        super().start()
        threading.Thread(target=self._watch_role, name="supervisor.role", daemon=True).start()

    def _watch_role(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.reconcile_role()
            except Exception:  # never let the watcher die
                log.exception("node: acting on a role change failed; retrying")

    def reconcile_role(self) -> str:
        """Act on the agent certificate's role once; returns what was done ("promoted", "demoted", "" or
        "waiting: why")."""
        try:
            cert_role = transport.Credentials(self.layout.cert_dir("agent")).identity.role
        except (transport.TransportError, OSError, pki.PKIError) as e:
            log.warning("node: cannot read the agent's certificate (%s)", e)
            return ""
        change = role_change(self.layout.cfg, cert_role)
        if change == "promote":
            return self._promote()
        if change == "demote":
            return self._demote()
        return ""

    def _promote(self) -> str:
        cfg, root = self.layout.cfg, self.layout.cert_root
        roles = promoted_roles(root)
        if not roles:
            return self._wait("the promotion waits for the manager certificates")
        new = promoted_config(cfg, roles)
        if "raftstore" in roles:
            try:
                _add_raft_member(new, root / "raftstore")
            except NodeError as e:
                return self._wait(f"the promotion waits: {e}")
            new.managers = [*[m for m in new.managers if m != new.advertise], new.advertise]
        new.save(self.data_dir)
        self.layout.config = new
        self.layout.prepare()
        for spec in self.layout.specs():
            if spec.name != "agent":
                self.add_process(spec)
        if "nats" in roles:
            threading.Thread(target=self._renew_nats, name="supervisor.renew", daemon=True).start()
        self.waiting = ""
        log.info("node: promoted to a manager: running %s", ", ".join(roles))
        return "promoted"

    def _demote(self) -> str:
        cfg, root = self.layout.cfg, self.layout.cert_root
        if "raftstore" in cfg.roles and cfg.raft_id is not None:
            why = remove_raft_member(cfg, root / "raftstore")
            if why:
                return self._wait(f"the demotion waits: the raft store keeps member {cfg.raft_id}: {why}")
        for name in reversed([r for r in cfg.roles if r in self.children]):
            self.remove_process(name)
        for name in cfg.roles:
            shutil.rmtree(root / name, ignore_errors=True)
        shutil.rmtree(self.data_dir / "raft", ignore_errors=True)
        new = demoted_config(cfg)
        new.save(self.data_dir)
        self.layout.config = new
        self.waiting = ""
        log.info("node: demoted to a worker: stopped %s", ", ".join(cfg.roles) or "nothing")
        return "demoted"

    def _wait(self, why: str) -> str:
        if why != self.waiting:
            log.warning("node: %s", why)
        self.waiting = why
        return "waiting: " + why
