"""Agent settings, read from SHOAL_* environment variables (built once in `__main__`)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shoal.config import EnvSettings, split_list

DEFAULT_PORT = 4331


class AgentSettings(EnvSettings):
    """`SHOAL_DISPATCHERS` — comma-separated dispatcher URLs (failover in order, starting at a random one);
    `SHOAL_STATE_DIR` — node id, task records and task logs (default `~/.shoal/agent/<hostname>`);
    `SHOAL_HOSTNAME` — the node's hostname (default: the machine's; distinct ones let several agents share
        a machine);
    `SHOAL_EXECUTORS` — comma-separated: `process` (default), `docker` (the `container` runtime, advertised
        only while the engine answers) and/or `hollow`;
    `SHOAL_DOCKER_HOST` — the Docker engine of the docker executor (default `unix:///var/run/docker.sock`);
    `SHOAL_DOCKER_PUBLISH_IP` — the node address host-mode ports are bound to (default: all addresses);
    `SHOAL_OVERLAY` — attach container tasks to their overlay networks through the kernel (namespace bridge,
        veths, VXLAN; agent/overlay.py) when the docker executor runs (default true; checked at start, what is
        missing is logged as an error and the containers stay on the engine's default bridge); `false`: never;
    `SHOAL_MESH` — how ingress published ports are load-balanced (docs/networking.md): `auto` (default): in
        the kernel (iptables DNAT, agent/kernel_mesh.py) when the agent is root and iptables and
        route_localnet work (checked at start in a scratch chain), else by userspace listeners (agent/mesh.py),
        said in the log and `/v1/status`; `kernel`: the kernel path or the agent exits naming what is missing;
        `userspace`: the listeners;
    `SHOAL_ESP_USERSPACE` — on a kernel without ESP or AES-GCM, encrypt encrypted overlay networks in the agent
        (agent/esp_user.py: the same SAs and wire format; a blackhole route drops the frames while the engine is down)
        instead of failing their containers (default false: fail loudly, as docs/networking.md says);
    `SHOAL_HOST` / `SHOAL_PORT` — where /healthz, /readyz, /metrics, /v1/status and /v1/tasks are served;
    `SHOAL_ADDR` — the address to advertise (default: what the dispatcher sees);
    `SHOAL_STOP_TASKS_ON_EXIT` — what the agent stops when it exits. Unset (the default): process tasks are
        stopped (a restarted agent could not learn their exit status) and containers keep running, to be
        adopted by the restarted agent; `true`: everything is stopped and containers removed (set by `shoal up`
        and docker-compose.yml, so `shoal down` / `docker compose down` leave nothing behind); `false`:
        nothing is stopped;
    `SHOAL_CLUSTER_ID` — the cluster this agent serves, written into the mark of every task workload with the
        host name and node id (`shoal.workloads`), so agents and `shoal down` of one cluster never touch
        another's (default `default`; `shoal up` sets one per data directory);
    `SHOAL_CGROUP_ROOT` — the cgroup v2 mount process tasks get their cgroups in (default: found at
        /sys/fs/cgroup or /sys/fs/cgroup/unified; `none`: no cgroups, the weaker record fallback);
    `SHOAL_RECONCILE_INTERVAL` — seconds between reconciliations of what runs on the node with the
        assignments while a session works (default 5; one also follows every complete set);
    `SHOAL_EXIT_GRACE` — seconds the graceful stop of tasks may take at exit before they are killed (default 5);
    `SHOAL_CERT_DIR` — the node's certificate (default `<state dir>/certificates`); empty at the first start,
        when the agent joins through a CA with `SHOAL_JOIN_TOKEN`;
    `SHOAL_JOIN_TOKEN` — the worker (or manager) join token, used only while there is no certificate;
    `SHOAL_CA_URLS` — comma-separated CA URLs, for joining and for renewing the certificate;
    `SHOAL_MANAGER_COMPONENTS` — comma-separated manager components (`raftstore`, `gateway`, ...) a promoted
        node's agent asks certificates for in its promoting renewal, each into `<cert dir>/<component>` (a swarm
        machine's supervisor then runs them; empty: the agent alone changes role);
    `SHOAL_TASK_FILES_DIR` — where tasks' secrets and configs are written, a directory per task (default
        `/dev/shm/shoal-<hostname>-<uid>-<digest of the state dir>`, tmpfs, else `<state dir>/task-files`);
    `SHOAL_TASK_FILES_HOST_DIR` — that directory as the Docker engine's host sees it, for the bind mounts of
        container tasks (default: the same path; set it when the agent runs in a container);
    `SHOAL_RPC_TIMEOUT` (5 s), `SHOAL_ASSIGNMENTS_WAIT` (long-poll seconds, 20),
    `SHOAL_STATUS_INTERVAL` (at most one status report per this many seconds, the first of a burst at once;
    0.1)."""

    dispatchers: list[str] = ["http://127.0.0.1:4324"]
    state_dir: Path | None = None
    hostname: str = Field(default_factory=socket.gethostname)
    executors: list[str] = ["process"]
    docker_host: str = "unix:///var/run/docker.sock"
    docker_publish_ip: str = ""
    overlay: bool = True
    mesh: Literal["auto", "kernel", "userspace"] = "auto"
    esp_userspace: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    addr: str | None = None
    instance: str = ""
    log_level: str = "INFO"
    stop_tasks_on_exit: bool | None = None
    exit_grace: float = 5.0
    cert_dir: Path | None = None
    join_token: str = ""
    ca_urls: list[str] = []
    manager_components: list[str] = []
    cluster_id: str = "default"
    cgroup_root: str = ""
    reconcile_interval: float = 5.0
    task_files_dir: Path | None = None
    task_files_host_dir: Path | None = None
    rpc_timeout: float = 5.0
    assignments_wait: float = 20.0
    status_interval: float = 0.1

    _split = field_validator("dispatchers", "executors", "ca_urls", "manager_components",
                             mode="before")(split_list)

    def resolved_state_dir(self) -> Path:
        return (self.state_dir or Path.home() / ".shoal" / "agent" / self.hostname).expanduser()

    def resolved_cert_dir(self) -> Path:
        return (self.cert_dir or self.resolved_state_dir() / "certificates").expanduser()

    def cert_hosts(self) -> list[str]:
        """The names managers dial this agent's own port by (its certificate's SANs)."""
        hosts = [h for h in (self.addr, self.host) if h and h not in ("0.0.0.0", "::")]
        return list(dict.fromkeys([*hosts, "127.0.0.1", "localhost", self.hostname]))

    def instance_name(self) -> str:
        return self.instance or f"agent@{self.hostname}:{self.port}"
