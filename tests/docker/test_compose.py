"""docker-compose.yml end to end on the real engine (images from scripts/docker-images.sh, `up --no-build`):
scaled up with every scale flag, a 6-replica service of the task image created through the gateway runs as 6
sibling containers; a host-mode published port answers on 127.0.0.1; the active scheduler container is killed
and a standby takes over, a scale to 8 converges; a dispatcher container is stopped and its agents move to the
others while their tasks keep running; a container task reads a secret and a config (the agent container
writes them where the engine can bind-mount them); the real `docker` CLI creates a service and reads the logs of
its tasks on every agent (through the scaled dispatchers); `down` leaves nothing behind. The tests run in file
order on one cluster (module fixture)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from shoal import transport
from tests.docker.conftest import ROOT, RUN_ID, RUN_LABEL, build_images
from tests.e2e import harness
from tests.e2e.test_docker_cli import docker_at, require_docker_client

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

T = TypeVar("T")
PROJECT = f"shoalci{RUN_ID[:8]}"
SERVICE = f"web-{RUN_ID[:6]}"
SCALE = {"gateway": 2, "dispatcher": 3, "scheduler": 2, "orchestrator": 2, "allocator": 2, "agent": 3}
TAKEOVER_TARGET, TOLERANCE = 2.0, 0.5
TASK_FILES_ROOT = f"/dev/shm/shoal-compose-{RUN_ID}"  # where the agents write tasks' secrets (host tmpfs)


def compose_cmd() -> list[str]:
    """`docker compose` (v2) when the plugin is there, else docker-compose 1.29."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("neither `docker compose` nor docker-compose is installed (scripts/docker-engine.sh)")
    return [exe]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: what a poll of the compose cluster may raise while it is not there yet
NOT_YET = (httpx.HTTPError, subprocess.CalledProcessError, ValueError, KeyError, transport.TransportError)


def eventually(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    return harness.eventually(fn, timeout, what, interval, retry_on=NOT_YET)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=300).stdout


class Compose:
    def __init__(self, images: dict[str, str]) -> None:
        self.port = free_port()
        self.client_dir = Path(tempfile.mkdtemp(prefix="shoal-compose-client-"))
        self.env = {**os.environ, "SHOAL_IMAGE": images["SHOAL_IMAGE"], "SHOAL_GATEWAY_PORT": str(self.port),
                    "COMPOSE_HTTP_TIMEOUT": "900", "SHOAL_HEARTBEAT_PERIOD": "2",
                    "SHOAL_CLIENT_DIR": str(self.client_dir), "SHOAL_TASK_FILES_ROOT": TASK_FILES_ROOT}
        self.cmd = [*compose_cmd(), "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]
        self.url = f"https://127.0.0.1:{self.port}"
        self._http: httpx.Client | None = None
        self.down_done = False

    def client(self) -> httpx.Client:
        """A new admin client (the bundle the cluster's bootstrap wrote to SHOAL_CLIENT_DIR)."""
        creds = transport.Credentials.client_bundle(self.client_dir)
        return transport.sync_http_client(creds, base_url=self.url, timeout=10)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = self.client()
        return self._http

    def run(self, *args: str, timeout: float = 900) -> str:
        out = subprocess.run([*self.cmd, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def containers(self, service: str, *, all_: bool = False) -> list[str]:
        flags = ["-a"] if all_ else []
        return docker("ps", *flags, "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                      "--filter", f"label=com.docker.compose.service={service}").split()

    def cluster(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/v1/cluster").json()
        return body

    def lease(self, role: str) -> dict[str, Any]:
        """The role's lease; waits while the gateway's diagnostic view cannot read the store (`subsystems`
        null: a slow answer under load)."""
        def read() -> dict[str, Any] | None:
            leases = self.cluster()["subsystems"]
            return None if leases is None else dict(next(x for x in leases if x["name"] == role))
        return eventually(read, 30, f"the {role} lease", interval=0.05)

    def task_containers(self) -> list[dict[str, Any]]:
        """The running containers of the test service, as `docker ps` sees them."""
        out = docker("ps", "--filter", f"label=shoal.service.name={SERVICE}", "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def agent_status(self, container: str) -> dict[str, Any]:
        code = ("import ssl, urllib.request; c = ssl.create_default_context(cafile='/client/ca.pem'); "
                "c.check_hostname = False; c.load_cert_chain('/client/cert.pem', '/client/key.pem'); "
                "print(urllib.request.urlopen('https://127.0.0.1:4331/v1/status', context=c).read().decode())")
        result: dict[str, Any] = json.loads(docker("exec", container, "python", "-c", code))
        return result

    def scale_service(self, replicas: int) -> None:
        def attempt() -> bool:
            svc = self.http.get(f"/v1/services/{SERVICE}").json()
            spec = {**svc["spec"], "mode": {"replicated": {"replicas": replicas}}}
            r = self.http.put(f"/v1/services/{SERVICE}", json={"version": svc["meta"]["version"], "spec": spec})
            return r.status_code == 200
        eventually(attempt, 30, f"scaling {SERVICE} to {replicas}")

    def running(self, n: int, timeout: float = 240) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            cs = self.task_containers()
            tasks = self.http.get("/v1/tasks", params={"service": SERVICE}).json()["items"]
            live = [x for x in tasks if x["status"]["state"] == "running" and x["desired_state"] == "running"]
            return cs if len(cs) == n and len(live) == n else None
        return eventually(check, timeout, f"{n} running containers of {SERVICE}", interval=1.0)


@pytest.fixture(scope="module")
def compose() -> Iterator[Compose]:
    images = build_images("all")
    c = Compose(images)
    try:
        t0 = time.monotonic()
        c.run("up", "-d", "--no-build", *[f"--scale={k}={v}" for k, v in SCALE.items()])
        eventually(lambda: c.http.get("/readyz").status_code == 200, 180, "the gateway (through lb) ready")
        with pytest.raises(httpx.HTTPError):  # just as secure as `shoal up`: no plaintext through the balancer
            httpx.get(f"http://127.0.0.1:{c.port}/v1/services", timeout=5)
        print(f"\ncompose up with {SCALE}: {time.monotonic() - t0:.0f}s")
        yield c
    finally:
        if not c.down_done:
            subprocess.run([*c.cmd, "logs", "--no-color", "--tail=30"], env=c.env, timeout=120)
            subprocess.run([*c.cmd, "down", "-v", "--remove-orphans", "-t", "30"], env=c.env, timeout=900,
                           capture_output=True)
        leftovers = docker("ps", "-aq", "--filter", f"label=shoal.service.name={SERVICE}").split()
        if leftovers:
            docker("rm", "-f", "-v", *leftovers)
        shutil.rmtree(TASK_FILES_ROOT, ignore_errors=True)
        c.http.close()


def test_up_with_every_scale_flag_lists_each_instance(compose: Compose) -> None:
    def ready() -> dict[str, Any] | None:
        body = compose.cluster()
        counts: dict[str, int] = {}
        for x in body["instances"]:
            counts[x["role"]] = counts.get(x["role"], 0) + 1
        nodes = compose.http.get("/v1/nodes").json()["items"]
        ok = (all(counts.get(role, 0) == n for role, n in SCALE.items() if role != "agent")
              and len([n for n in nodes if n["status"]["state"] == "ready"
                       and "container" in n["description"]["executors"]]) == SCALE["agent"])
        # one active instance per leader-only role, shown with its lease's term
        leases = {x["name"]: x for x in body["subsystems"] or []}
        for role in ("orchestrator", "allocator", "scheduler"):
            mine = [x for x in body["instances"] if x["role"] == role]
            ok = ok and sorted(x["state"] for x in mine) == ["active", "standby"] and all(
                x["term"] == leases[role]["term"] for x in mine if x["active"])
        return body if ok else None

    eventually(ready, 180, "every instance listed (one active per leader-only role, with its lease term) and "
               "every agent's node READY with the container runtime")
    # The balancer in front spreads connections over both gateways.
    seen = set()
    for _ in range(6):
        with compose.client() as fresh:  # a new connection each time
            seen.add(fresh.get("/v1/status").json()["instance"])
    assert len(seen) == 2, seen


def test_six_replicas_of_the_task_image_run_as_sibling_containers(compose: Compose) -> None:
    spec = {"name": SERVICE, "mode": {"replicated": {"replicas": 6}},
            "task": {"container": {"image": "shoal-task:local", "command": ["sleep", "3600"], "init": True,
                                   "labels": {RUN_LABEL: RUN_ID}},
                     "restart": {"condition": "any", "delay": "1s"}}}
    r = compose.http.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text
    containers = compose.running(6)
    nodes = {c["Labels"].split("shoal.node.id=")[1].split(",")[0] for c in containers}
    assert len(nodes) == 3, "spread over the three agents"


def test_a_host_mode_published_port_answers_on_the_host(compose: Compose) -> None:
    port = free_port()
    name = f"http-{RUN_ID[:6]}"
    spec = {"name": name, "mode": {"replicated": {"replicas": 1}},
            "task": {"container": {"image": "shoal-task:local", "init": True, "labels": {RUN_LABEL: RUN_ID},
                                   "command": ["sh", "-c", "echo served-by-shoal > /www/index.html; "
                                                           "exec httpd -f -p 8080 -h /www"]}},
            "endpoint": {"ports": [{"target_port": 8080, "published_port": port, "publish_mode": "host"}]}}
    r = compose.http.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text
    body = eventually(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text, 120,
                      f"the task's httpd on 127.0.0.1:{port}", interval=1.0)
    assert body.strip() == "served-by-shoal"
    assert compose.http.delete(f"/v1/services/{name}").status_code in (200, 204)
    eventually(lambda: not docker("ps", "-aq", "--filter", f"label=shoal.service.name={name}").split(), 60,
               "the removed service's container gone")


def test_killing_the_active_scheduler_hands_over_and_a_scale_to_8_converges(compose: Compose) -> None:
    before = compose.lease("scheduler")
    active = next(x for x in compose.cluster()["instances"] if x["role"] == "scheduler" and x["active"])
    docker("kill", active["host"])  # the instance's host is its container's hostname (the short id)
    killed_at = time.monotonic()
    after = eventually(lambda: (x := compose.lease("scheduler"))["holder"] != before["holder"] and x, 15,
                       "a standby scheduler to take the lease", interval=0.05)
    takeover = time.monotonic() - killed_at
    print(f"\nscheduler takeover after docker kill: {takeover:.2f}s (term {before['term']} -> {after['term']})")
    assert after["term"] == before["term"] + 1
    assert takeover <= TAKEOVER_TARGET + TOLERANCE, f"takeover took {takeover:.2f}s"
    compose.scale_service(8)
    compose.running(8)


def test_a_stopped_dispatcher_hands_its_agents_over_and_their_tasks_keep_running(compose: Compose) -> None:
    agents = compose.containers("agent")
    status = {a: compose.agent_status(a) for a in agents}
    ip_of = {}
    for d in compose.containers("dispatcher"):
        nets = json.loads(docker("inspect", d))[0]["NetworkSettings"]["Networks"]
        ip_of[d] = next(iter(nets.values()))["IPAddress"]
    served: dict[str, list[str]] = {d: [a for a, st in status.items() if ip_of[d] in (st["dispatcher"] or "")]
                                    for d in ip_of}
    victim = max(served, key=lambda d: len(served[d]))
    moved = served[victim]
    assert moved, f"no agent talks to a dispatcher: {status}"
    before = {c["ID"] for c in compose.task_containers()}
    docker("stop", victim)

    def reconnected() -> bool:
        for a in moved:
            st = compose.agent_status(a)
            if not st["connected"] or ip_of[victim] in (st["dispatcher"] or ""):
                return False
        return True

    eventually(reconnected, 60, f"agents {moved} registered with another dispatcher")
    time.sleep(3)
    assert {c["ID"] for c in compose.task_containers()} == before, "task containers were replaced or stopped"
    tasks = compose.http.get("/v1/tasks", params={"service": SERVICE}).json()["items"]
    assert len([x for x in tasks if x["status"]["state"] == "running"]) == 8
    nodes = compose.http.get("/v1/nodes").json()["items"]
    assert all(n["status"]["state"] == "ready" for n in nodes)


def test_a_container_task_reads_its_secret_and_config_through_the_agent_container(compose: Compose) -> None:
    """The agent is a container: it writes the task's files under the host directory it shares with the engine,
    which bind-mounts them into the sibling task container."""
    value = secrets.token_hex(24)
    name = f"sec-{RUN_ID[:6]}"
    for kind, data in (("secrets", value), ("configs", "listen 8080")):
        r = compose.http.post(f"/v1/{kind}", json={"name": name, "data": base64.b64encode(data.encode()).decode()})
        assert r.status_code == 201, r.text
    script = (f"stat -c %a /run/secrets/{name}; sha256sum < /run/secrets/{name} | cut -c1-64; cat /etc/app.conf;"
              " echo; echo done; exec sleep 3600")
    spec = {"name": name, "mode": {"replicated": {"replicas": 1}},
            "task": {"container": {"image": "shoal-task:local", "command": ["sh", "-c", script],
                                   "labels": {RUN_LABEL: RUN_ID}, "stop_grace_period": "1s"},
                     "secrets": [{"source": name, "mode": 0o400}],
                     "configs": [{"source": name, "target": "/etc/app.conf"}]}}
    r = compose.http.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text

    def logs() -> list[str] | None:
        ids = docker("ps", "-aq", "--filter", f"label=shoal.service.name={name}").split()
        out = docker("logs", ids[0]) if ids else ""
        return out.splitlines() if "done" in out else None

    lines = eventually(logs, 120, "the task container to read its secret and config")
    assert lines == ["400", hashlib.sha256(value.encode()).hexdigest(), "listen 8080", "done"], lines
    assert compose.http.delete(f"/v1/services/{name}").status_code == 200
    eventually(lambda: not docker("ps", "-aq", "--filter", f"label=shoal.service.name={name}").split(), 60,
               "the task container removed")
    eventually(lambda: not [p for p in Path(TASK_FILES_ROOT).rglob("*") if p.is_file()], 30,
               "the task's files removed from the host directory")


def test_the_docker_cli_drives_the_compose_cluster_and_reads_logs_through_every_dispatcher(compose: Compose) -> None:
    """A short session of the real `docker` CLI (tests/e2e/test_docker_cli.py picks it) through the balancer, with
    the bundle the bootstrap wrote: nodes, an attached create converging, and `docker service logs` of a task on
    every agent — the agents' sessions are spread over the scaled dispatchers behind one name, which the gateway
    resolves to each address to find the holder (before, it asked one of them and most nodes said "no session")."""
    require_docker_client()
    name = f"cli-{RUN_ID[:6]}"
    config = Path(tempfile.mkdtemp(prefix="shoal-compose-docker-config-"))

    def d(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker_at(f"127.0.0.1:{compose.port}", compose.client_dir, config, *args, timeout=timeout,
                         check=check)

    assert d("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.41"
    ready = [ln for ln in d("node", "ls").stdout.splitlines()[1:] if " Ready " in ln]
    assert len(ready) == SCALE["agent"], ready
    script = 'i=0; while true; do i=$((i+1)); echo "line-$i of $SHOAL_TASK_SLOT"; sleep 0.5; done'
    created = d("service", "create", "--name", name, "--replicas", "3", "--update-monitor", "1s",
                "--stop-grace-period", "1s",
                "--container-label", f"{RUN_LABEL}={RUN_ID}", "shoal-task:local", "sh", "-c", script, timeout=240)
    assert re.search(r"verify: Service (\w+ )?converged\s*$", created.stdout), created.stdout + created.stderr
    tasks = compose.http.get("/v1/tasks", params={"service": name}).json()["items"]
    running = [x for x in tasks if x["status"]["state"] == "running"]
    nodes = {x["node_id"] for x in running}

    def every_task_logged() -> subprocess.CompletedProcess[str] | None:
        out = d("service", "logs", "--tail", "2", name)
        slots = set(re.findall(r"\| line-\d+ of (\d+)", out.stdout))
        return out if slots == {"1", "2", "3"} and "cannot be read" not in out.stderr else None

    logs = eventually(every_task_logged, 60, f"`docker service logs` to show a line of each task on {nodes}")
    assert len(nodes) >= 2, f"the tasks should be spread over the agents: {running}"
    assert not logs.stderr.strip(), logs.stderr
    d("service", "rm", name)
    eventually(lambda: not docker("ps", "-aq", "--filter", f"label=shoal.service.name={name}").split(), 60,
               "the service's containers removed")


def test_down_leaves_nothing_behind(compose: Compose) -> None:
    t0 = time.monotonic()
    compose.run("down", "-v")
    compose.down_done = True
    print(f"\ncompose down: {time.monotonic() - t0:.0f}s")
    assert docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").split() == []
    assert docker("ps", "-aq", "--filter", f"label=shoal.service.name={SERVICE}").split() == []
    assert docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").split() == []
    assert docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").split() == []
