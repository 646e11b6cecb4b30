"""A real local cluster for end-to-end tests: every process of `shoal up`, on free loopback ports."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from shoal import transport
from shoal.supervisor import Layout, Supervisor

T = TypeVar("T")


def together(items: list[T], uses: Callable[[T], bool]) -> list[T]:
    """`items` with those that `uses` picks moved together where the first of them stood, each group keeping its
    order (the tests on the session's shared cluster run one after another: tests/e2e/conftest.py)."""
    users = [it for it in items if uses(it)]
    if not users:
        return list(items)
    first = items.index(users[0])
    rest = [it for it in items if not uses(it)]
    return rest[:first] + users + rest[first:]


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections take their local port from it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port() -> int:
    """A base port whose whole block (base .. base+40) is free on loopback, plus the gateway port base+45 —
    below the ephemeral range: a member restarted by a test must find its port again, and an outgoing
    connection of any process can take a free ephemeral port meanwhile (seen: a raftstore member refused
    'address already in use' for minutes)."""
    for _ in range(200):
        base = random.randrange(20000, ephemeral_low() - 50, 50)
        if all(bindable(port) for port in [*range(base, base + 41), base + 45]):
            return base
    raise RuntimeError("no free port block found")


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on loopback, below the ephemeral range (see free_base_port)."""
    ports: list[int] = []
    for _ in range(100 * n):
        port = random.randrange(10000, ephemeral_low())
        if port not in ports and bindable(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free ports found")


def converged_hash(statuses: list[dict[str, Any] | None]) -> str | None:
    """The raftstore members' common state hash (from `/v1/status?hash=true`) once every one answered and all
    applied the same index, else None."""
    if any(s is None for s in statuses):
        return None
    applied = {s["applied_index"] for s in statuses if s}
    hashes = {s["state_hash"] for s in statuses if s}
    return str(hashes.pop()) if len(applied) == 1 and len(hashes) == 1 else None


def items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and "items" in body:
        return list(body["items"])
    return list(body)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def eventually(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25, *,
               retry_on: tuple[type[Exception], ...] = (httpx.HTTPError, AssertionError)) -> T:
    """Poll `fn` until it returns something truthy (an exception of `retry_on` counts as not yet); fail with
    `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except retry_on as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def running_cluster(data_dir: Path, agents: int = 2, *, ready_nodes: bool = False, env: dict[str, str] | None = None,
                    timeout: float = 90.0) -> Generator[Cluster, None, None]:
    """What a cluster fixture yields from: a started cluster (`env` added to every process's), stopped afterwards
    even if it never became healthy; with `ready_nodes`, yielded once every agent's node is READY."""
    c = Cluster(data_dir, agents=agents)
    c.layout.extra_env.update(env or {})
    try:
        c.start(timeout=timeout)
        if ready_nodes:
            eventually(lambda: len([n for n in c.nodes() if n["status"]["state"] == "ready"]) == agents, 30,
                       f"{agents} ready nodes")
        yield c
    finally:
        c.stop()


class Cluster:
    def __init__(self, data_dir: Path, agents: int = 2, heartbeat_period: float = 1.0) -> None:
        base = free_base_port()
        self.layout = Layout(data_dir, base_port=base, gateway_port=base + 45, agents=agents,
                             heartbeat_period=heartbeat_period)
        self.sup = Supervisor(self.layout)
        self._http: httpx.Client | None = None
        self._manager: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """The admin's client to the gateway (the bundle `shoal up` writes)."""
        if self._http is None:
            creds = transport.Credentials.client_bundle(self.layout.client_dir)
            self._http = transport.sync_http_client(creds, base_url=self.layout.gateway_url, timeout=10.0)
        return self._http

    @http.setter
    def http(self, client: httpx.Client) -> None:
        self._http = client

    @property
    def manager_http(self) -> httpx.Client:
        """A manager process's identity (the gateway's), for tests that talk to raftstore members directly."""
        if self._manager is None:
            creds = transport.Credentials(self.layout.cert_dir("gateway"))
            self._manager = transport.sync_http_client(creds, timeout=2.0)
        return self._manager

    def join_manager(self, cert_root: Path, components: tuple[str, ...]) -> str:
        """Join a new manager node through the CA with the manager token (the path `shoal swarm join` takes):
        one certificate per component under `cert_root/<component>`; returns the new node id."""
        from shoal import pki

        token = self.http.get("/v1/swarm/join-tokens").json()["manager"]
        keys = {c: pki.new_key() for c in components}
        body = {"token": token, "csrs": {c: pki.make_csr(k).decode() for c, k in keys.items()},
                "hosts": ["127.0.0.1", "localhost"]}
        ctx = ssl.create_default_context(cafile=str(self.layout.client_dir / "ca.pem"))
        r = httpx.post(self.layout.url_of("ca") + "/v1/join", json=body, verify=ctx, timeout=30)
        assert r.status_code == 200, r.text
        reply = r.json()
        for c, key in keys.items():
            pki.write_identity(cert_root / c, reply["certificates"][c].encode(), pki.key_pem(key),
                               reply["roots"].encode())
        return str(reply["node_id"])

    def start(self, timeout: float = 90.0) -> Cluster:
        self.sup.start()
        self.sup.wait_healthy(timeout)
        return self

    def stop(self) -> None:
        self.sup.stop()
        for c in (self._http, self._manager):
            if c is not None:
                c.close()

    # ---- the `shoal` CLI, as a user runs it -----------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `shoal ARGS...` (the venv's console script) against this cluster's gateway (SHOAL_URL), with
        `input` on its stdin (else none). With `check`, a non-zero exit fails the test, showing what the
        command printed."""
        exe = Path(sys.executable).parent / "shoal"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "shoal.cli"]
        env = {**os.environ, "SHOAL_URL": self.layout.gateway_url, "SHOAL_CERT_PATH": str(self.layout.client_dir)}
        if input is None:
            done = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        else:
            done = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=timeout,
                                  input=input)
        if check:
            assert done.returncode == 0, f"shoal {' '.join(args)} exited {done.returncode}: {done.stderr}{done.stdout}"
        return done

    # ---- API helpers --------------------------------------------------------------------------------------
    def create_service(self, name: str, replicas: int, command: list[str] | None = None,
                       restart_delay: str = "1s", **task: Any) -> dict[str, Any]:
        spec = {"name": name, "mode": {"replicated": {"replicas": replicas}},
                "task": {"process": {"command": command or ["sleep", "300"], "stop_grace_period": "2s"},
                         "restart": {"condition": "any", "delay": restart_delay}, **task}}
        r = self.http.post("/v1/services", json=spec)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def scale(self, name: str, replicas: int) -> None:
        for _ in range(20):
            svc = self.http.get(f"/v1/services/{name}").json()
            spec = svc["spec"]
            spec["mode"] = {"replicated": {"replicas": replicas}}
            r = self.http.put(f"/v1/services/{name}", json={"version": svc["meta"]["version"], "spec": spec})
            if r.status_code == 200:
                return
            assert r.status_code in (409, 503), r.text
            time.sleep(0.2)
        raise AssertionError(f"could not scale {name}")

    def tasks(self, service: str | None = None, **params: str) -> list[dict[str, Any]]:
        if service:
            params["service"] = service
        return items(self.http.get("/v1/tasks", params=params).json())

    def running(self, service: str) -> list[dict[str, Any]]:
        """Tasks that are running, wanted running, and whose process is really alive."""
        return [t for t in self.tasks(service)
                if t["status"]["state"] == "running" and t["desired_state"] == "running"
                and pid_alive(t["status"].get("pid"))]

    def wait_running(self, service: str, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Exactly `n` live running tasks and nothing else of the service still wanted running."""
        def check() -> list[dict[str, Any]] | None:
            tasks = self.tasks(service)
            live = [t for t in tasks if t["status"]["state"] == "running" and t["desired_state"] == "running"
                    and pid_alive(t["status"].get("pid"))]
            wanted = [t for t in tasks if t["desired_state"] == "running"]
            return live if len(live) == n and len(wanted) == n else None
        return eventually(check, timeout, f"{n} running tasks of {service}")

    def nodes(self) -> list[dict[str, Any]]:
        return items(self.http.get("/v1/nodes").json())

    def raft_status(self) -> list[dict[str, Any]]:
        out = []
        for url in self.layout.store_members:
            try:
                out.append(self.manager_http.get(url + "/v1/status", timeout=1.0).json())
            except httpx.HTTPError:
                pass
        return out

    def raft_leader(self) -> int | None:
        for st in self.raft_status():
            if st.get("role") == "leader":
                return int(st["id"])
        return None
