"""RaftProcs: launch real raftstore member processes on loopback for integration tests (`eventually` is the
e2e harness's, re-exported).

Random free ports, one data directory per member under a temporary directory, logs in `<dir>/logs/`.
Members can be killed (SIGKILL), stopped (SIGTERM) and restarted with the same data. Every member and client
speaks mutual TLS with certificates of one test cluster (`ClusterCerts`: one Signer per cluster); `self.http`
is a client with a gateway certificate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.transport import Credentials, http_client, sync_http_client
from tests.e2e.harness import converged_hash, eventually, free_ports

ROOT = Path(__file__).resolve().parents[2]


class ClusterCerts:
    """The certificates of one test cluster: member `i` is node `node-<i>`'s raftstore; clients are any
    component's (a manager's by default), each issued once under `<base>/certs/`."""

    def __init__(self, base: Path, signer: Signer | None = None) -> None:
        self.base = base / "certs"
        self.signer = signer or Signer.new()
        self._creds: dict[str, Credentials] = {}

    @staticmethod
    def node_id(i: int) -> str:
        return f"node-{i}"

    def dir(self, name: str, *, node_id: str, component: str, role: str = pki.MANAGER) -> Path:
        path = self.base / name
        if not (path / pki.CERT_FILE).exists():
            self.signer.issue_dir(path, node_id=node_id, role=role, component=component, hosts=LOCAL_HOSTS)
        return path

    def member_dir(self, i: int) -> Path:
        return self.dir(f"member-{i}", node_id=self.node_id(i), component="raftstore")

    def creds(self, name: str, *, node_id: str, component: str, role: str = pki.MANAGER) -> Credentials:
        if name not in self._creds:
            self._creds[name] = Credentials(self.dir(name, node_id=node_id, component=component, role=role))
        return self._creds[name]

    def member(self, i: int) -> Credentials:
        return self.creds(f"member-{i}", node_id=self.node_id(i), component="raftstore")

    def client(self, component: str = "gateway", role: str = pki.MANAGER) -> Credentials:
        return self.creds(f"{component}-{role}", node_id=f"{component}-client", component=component, role=role)

    def async_http(self, component: str = "gateway", **kwargs: Any) -> httpx.AsyncClient:
        return http_client(self.client(component), **kwargs)


def running_raft(data_dir: Path, members: int = 3) -> Iterator[RaftProcs]:
    """What a fixture yields from: `members` raftstore processes started with a leader elected, closed afterwards
    (even when no leader came)."""
    c = RaftProcs(data_dir, members)
    try:
        c.start_all()
        c.wait_leader(15)
        yield c
    finally:
        c.close()


class RaftProcs:
    def __init__(self, base: Path, members: int = 3, *, tick: float = 0.1, election_ticks: int = 10,
                 nats_url: str = "", extra_env: dict[str, str] | None = None,
                 certs: ClusterCerts | None = None) -> None:
        self.base = base
        self.n = members
        self.certs = certs or ClusterCerts(base)
        ports = free_ports(2 * members)
        self.api_ports = {i: ports[i - 1] for i in range(1, members + 1)}
        self.peer_ports = {i: ports[members + i - 1] for i in range(1, members + 1)}
        self.spec = self.spec_of({i: self.peer_ports[i] for i in self.ids})
        self.env_common = {
            "SHOAL_RAFT_MEMBERS": self.spec, "SHOAL_HOST": "127.0.0.1", "SHOAL_NATS_URL": nats_url,
            "SHOAL_RAFT_TICK": str(tick), "SHOAL_RAFT_ELECTION_TICKS": str(election_ticks),
            "SHOAL_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **(extra_env or {}),
        }
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        (base / "logs").mkdir(parents=True, exist_ok=True)
        self.http = sync_http_client(self.certs.client(), timeout=2.0)

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.n + 1))

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in self.ids]

    def url(self, i: int) -> str:
        return f"https://127.0.0.1:{self.api_ports[i]}"

    def spec_of(self, peer_ports: dict[int, int]) -> str:
        """SHOAL_RAFT_MEMBERS with these peer ports: `id=api_url,127.0.0.1:port,node_id;...`."""
        return ";".join(f"{i}={self.url(i)},127.0.0.1:{p},{self.certs.node_id(i)}" for i, p in peer_ports.items())

    def data_dir(self, i: int) -> Path:
        return self.base / "raft" / str(i)

    def members_spec(self, i: int) -> str:
        """SHOAL_RAFT_MEMBERS as member `i` sees it (a subclass may route its peer links elsewhere)."""
        return self.spec

    # ---- processes ----------------------------------------------------------------------------------------
    def start(self, i: int) -> None:
        env = {**os.environ, **self.env_common, "SHOAL_RAFT_ID": str(i), "SHOAL_PORT": str(self.api_ports[i]),
               "SHOAL_RAFT_MEMBERS": self.members_spec(i), "SHOAL_DATA_DIR": str(self.data_dir(i)),
               "SHOAL_CERT_DIR": str(self.certs.member_dir(i)),
               "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(self.base / "logs" / f"raftstore-{i}.log", "ab") as logf:  # the child keeps its own copy
            self.procs[i] = subprocess.Popen([sys.executable, "-m", "services.raftstore"], env=env, cwd=ROOT,
                                             stdout=logf, stderr=subprocess.STDOUT)

    def start_all(self, timeout: float = 30.0) -> RaftProcs:
        """Start every member and wait for /healthz (`timeout` s each); on failure nothing is left running."""
        try:
            for i in self.ids:
                self.start(i)
            for i in self.ids:
                eventually(lambda i=i: self.healthy(i), timeout, f"raftstore {i} to answer /healthz", 0.05)  # type: ignore[misc]
        except BaseException:
            self.close()
            raise
        return self

    def alive(self, i: int) -> bool:
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def kill(self, i: int) -> None:
        p = self.procs[i]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self, i: int, timeout: float = 10) -> int:
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return int(p.returncode)

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def close(self) -> None:
        for i in list(self.procs):
            if self.alive(i):
                self.procs[i].kill()
                self.procs[i].wait(5)
        self.http.close()

    def log_tail(self, i: int, lines: int = 30) -> str:
        path = self.base / "logs" / f"raftstore-{i}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- observing ----------------------------------------------------------------------------------------
    def healthy(self, i: int) -> bool:
        try:
            return self.http.get(self.url(i) + "/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            r = self.http.get(self.url(i) + "/v1/status", params={"hash": "true"})
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def leader(self, among: list[int] | None = None) -> int | None:
        """The member that says it leads and that every live member in `among` agrees on."""
        sts = [s for i in (among or self.ids) if self.alive(i) and (s := self.status(i)) is not None]
        leaders = {s["id"] for s in sts if s["role"] == "leader"}
        if len(leaders) != 1:
            return None
        lead = leaders.pop()
        return lead if all(s["leader"] == lead for s in sts) else None

    def wait_leader(self, timeout: float = 10.0, among: list[int] | None = None) -> int:
        return eventually(lambda: self.leader(among), timeout, "a raft leader", 0.05)

    def converged(self, among: list[int] | None = None) -> str | None:
        """The common state hash once every member in `among` applied the same index, else None."""
        return converged_hash([self.status(i) for i in (among or self.ids)])
