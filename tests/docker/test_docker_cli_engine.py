"""Scripted sessions of the real `docker` CLI (Debian's docker.io client, 20.10, unless SHOAL_DOCKER_CLI names
another) against a `shoal up` cluster whose agents run container tasks on the real engine: the service commands
with their progress bars, scale, update (image, env, a published port), rollback, `service logs` of containers
(and `shoal service logs` of the same tasks), secrets, configs, overlay networks, join tokens, and the errors of
bad calls (missing service, stale version, name clash, swarm init/join, `docker run`).

What each command changed is checked on the real engine too (its containers, their image, env and ports). The
CLI gets DOCKER_HOST/DOCKER_TLS_VERIFY/DOCKER_CERT_PATH (the admin bundle, as `shoal env` prints them) in its own
environment only; the cluster and the engine checks run without them. Skipped without an engine or client
(tests/docker/conftest.py); SHOAL_REQUIRE_DOCKER=1 makes that a failure."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal import transport
from tests.docker.conftest import ENGINE_HOST, RUN_ID, RUN_LABEL
from tests.e2e.harness import Cluster, eventually, running_cluster
from tests.e2e.test_docker_cli import docker, require_docker_client

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

LABEL = f"{RUN_LABEL}={RUN_ID}"  # on every task container, so the run's cleanup finds them
HTTPD = "echo served-by-$SHOAL_TASK_SLOT > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"
#: the progress loop's last line: CLI 20.10 `verify: Service converged`, CLI 28.x `verify: Service <id> converged`
CONVERGED = re.compile(r"verify: Service (\w+ )?converged\s*$")
TALKER = 'i=0; while true; do i=$((i+1)); echo "out-$i"; echo "err-$i" >&2; sleep 0.2; done'


def engine(*args: str, check: bool = True) -> str:
    """`docker ARGS` against the real engine (no DOCKER_HOST: this process's environment never has one)."""
    host = ENGINE_HOST if "://" in ENGINE_HOST else f"unix://{ENGINE_HOST}"
    return subprocess.run(["docker", "-H", host, *args], check=check, capture_output=True, text=True,
                          timeout=60).stdout


def containers(service: str) -> list[dict[str, Any]]:
    """The running containers of a shoal service on the real engine, inspected (one removed between the
    listing and the inspection — a rolling update — is left out)."""
    ids = engine("ps", "-q", "--filter", f"label=shoal.service.name={service}").split()
    out = engine("inspect", *ids, check=False) if ids else ""
    return [ct for ct in json.loads(out or "[]") if ct["State"]["Running"]]


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_docker_client()
    yield from running_cluster(tmp_path_factory.mktemp("shoal-docker-cli") / "shoal", agents=2, timeout=120,
                               env={"SHOAL_EXECUTORS": "docker", "SHOAL_DOCKER_HOST": ENGINE_HOST})


class RacingProxy:
    """A TLS-terminating HTTP/1.1 proxy in front of the gateway for the CLI, to make one race happen on purpose:
    `before_update` runs once between the CLI's read of a service and its `POST /services/{id}/update` (another
    writer gets in first). It presents the gateway's own certificate (so the CLI's checks pass) and forwards
    with the admin bundle."""

    def __init__(self, cluster: Cluster, before_update: Callable[[], None]) -> None:
        self.before_update = before_update
        self.raced = False
        upstream = transport.sync_http_client(transport.Credentials.client_bundle(cluster.layout.client_dir),
                                              base_url=cluster.layout.gateway_url, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if (self.command == "POST" and not proxy.raced
                        and re.match(r"^/v[\d.]+/services/[^/]+/update", self.path)):
                    proxy.raced = True
                    proxy.before_update()
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type",)}
                resp = upstream.request(self.command, self.path, content=body, headers=headers)
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() in ("content-type", "api-version", "ostype", "docker-experimental", "swarm"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.content)

            do_GET = do_POST = do_HEAD = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx: ssl.SSLContext = transport.Credentials(cluster.layout.cert_dir("gateway")).context("server")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.upstream = upstream
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> RacingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


# soak tier (which .ci/run runs): the docker CLI's session with process tasks stays in the default tier
# (tests/e2e/test_docker_cli.py), and so does this module's logs test on a real engine
@pytest.mark.soak
def test_docker_cli_session_with_container_services(cli_cluster: Cluster, task_image: str, tmp_path: Path) -> None:
    c = cli_cluster

    def d(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return docker(c, *args, **kw)

    version = json.loads(d("version", "--format", "{{json .}}").stdout)
    assert version["Server"]["ApiVersion"] == "1.41" and version["Server"]["Platform"]["Name"] == "shoal"
    nodes = eventually(lambda: [ln for ln in d("node", "ls").stdout.splitlines()[1:] if " Ready " in ln], 30,
                       "both agents' nodes Ready in `docker node ls`")
    assert len(nodes) == 2 and sum("*" in ln for ln in nodes) == 1, nodes
    me = json.loads(d("node", "inspect", "self").stdout)[0]
    d("node", "update", "--label-add", "disk=ssd", me["ID"])
    assert json.loads(d("node", "inspect", me["ID"]).stdout)[0]["Spec"]["Labels"] == {"disk": "ssd"}
    assert c.http.get(f"/v1/nodes/{me['ID']}").json()["spec"]["labels"] == {"disk": "ssd"}

    # attached create: the CLI polls the progress until the tasks run, then verifies for --update-monitor
    created = d("service", "create", "--name", "web", "--replicas", "2", "--update-monitor", "1s",
                "--update-parallelism", "0", "--rollback-parallelism", "0", "--rollback-monitor", "1s",
                "--stop-grace-period", "1s", "--container-label", LABEL, task_image, "sh", "-c", HTTPD, timeout=120)
    out = created.stdout
    assert "overall progress: 2 out of 2 tasks" in out and CONVERGED.search(out), out
    # shoal resolves no digests (/distribution answers 404): the CLI warns and keeps the tag, as documented
    assert "could not be accessed on a registry to record" in created.stderr
    assert len(containers("web")) == 2
    ls = d("service", "ls").stdout
    assert re.search(rf"\sweb\s+replicated\s+2/2\s+{re.escape(task_image)}", ls), ls
    ps = [ln.split() for ln in d("service", "ps", "web").stdout.splitlines()[1:]]
    assert sorted(p[1] for p in ps) == ["web.1", "web.2"] and all("Running" in p for p in ps), ps
    spec = json.loads(d("service", "inspect", "web").stdout)[0]["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == task_image
    assert spec["TaskTemplate"]["ContainerSpec"]["Args"] == ["sh", "-c", HTTPD]

    scaled = d("service", "scale", "web=3", timeout=120)
    assert CONVERGED.search(scaled.stdout), scaled.stdout + scaled.stderr
    assert len(containers("web")) == 3

    # update: a new image tag, an env var, a host-mode published port — each seen on the engine's containers
    new_image = f"shoal-task:cli-{RUN_ID}"
    engine("tag", task_image, new_image)
    try:
        updated = d("service", "update", "--image", new_image, "--env-add", "COLOR=blue", "--publish-add",
                    "mode=host,target=8080", "web", timeout=180)
        assert CONVERGED.search(updated.stdout), updated.stdout + updated.stderr

        def updated_containers() -> list[dict[str, Any]] | None:
            cs = containers("web")
            return cs if len(cs) == 3 and all(x["Config"]["Image"] == new_image for x in cs) else None
        cs = eventually(updated_containers, 30, "three containers of the new image")
        for ct in cs:
            assert "COLOR=blue" in ct["Config"]["Env"]
            (binding,) = ct["NetworkSettings"]["Ports"]["8080/tcp"][:1]
            port = int(binding["HostPort"])
            slot = ct["Config"]["Labels"]["shoal.slot"]
            body = eventually(lambda p=port: httpx.get(f"http://127.0.0.1:{p}/", timeout=2).text, 20,
                              f"the task's httpd on its published port {port}")
            assert body.strip() == f"served-by-{slot}"
        inspected = json.loads(d("service", "inspect", "web").stdout)[0]
        assert inspected["Spec"]["EndpointSpec"]["Ports"] == [
            {"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]  # PublishedPort 0 is omitted
        assert inspected["UpdateStatus"]["State"] == "completed"

        rolled = d("service", "rollback", "web", timeout=180)
        assert CONVERGED.search(rolled.stdout), rolled.stdout + rolled.stderr
        cs = eventually(lambda: (x := containers("web")) and len(x) == 3
                        and all(ct["Config"]["Image"] == task_image for ct in x) and x, 30,
                        "the containers back on the previous image")
        assert all("COLOR=blue" not in ct["Config"]["Env"] for ct in cs)
        back = json.loads(d("service", "inspect", "web").stdout)[0]
        assert back["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == task_image
        assert "Ports" not in back["Spec"].get("EndpointSpec", {}) or not back["Spec"]["EndpointSpec"]["Ports"]
    finally:
        engine("rmi", new_image)

    # errors of bad calls, as the CLI prints them
    missing = d("service", "inspect", "nope", check=False)
    assert missing.returncode == 1 and "no such service: nope" in missing.stderr.lower()
    assert "no such service: nope" in d("service", "ps", "nope", check=False).stderr
    assert "no such task or service: nope" in d("service", "logs", "nope", check=False).stderr
    clash = d("service", "create", "-d", "--name", "web", task_image, "true", check=False)
    assert clash.returncode == 1 and clash.stderr.strip() == (
        "Error response from daemon: rpc error: code = AlreadyExists desc = name conflicts with an existing "
        "object: service web already exists"), clash.stderr
    before = c.http.get("/v1/services/web").json()["meta"]["version"]

    def other_writer() -> None:  # someone else scales web between the CLI's read and its write
        c.scale("web", 2)

    with RacingProxy(c, other_writer) as proxy:
        stale = d("service", "update", "-d", "--env-add", "LATE=1", "web", check=False, host=proxy.host)
    assert proxy.raced and stale.returncode == 1
    assert stale.stderr.strip() == "Error response from daemon: rpc error: code = Unknown desc = update out of " \
                                   "sequence", stale.stderr
    after = c.http.get("/v1/services/web").json()
    assert after["meta"]["version"] > before and "LATE" not in json.dumps(after["spec"])
    for verb in ("init", "join"):
        args = ["swarm", "join", "--token", "SWMTKN-1-x", "127.0.0.1:2377"] if verb == "join" else ["swarm", "init"]
        refused = d(*args, check=False)
        assert refused.returncode == 1 and refused.stderr.startswith(
            'Error response from daemon: This node is already part of a swarm. Use "docker swarm leave" to leave '
            "this swarm and join another one."), refused.stderr
    run = d("run", "--rm", task_image, "true", check=False)
    assert run.returncode != 0 and "`docker run` and the container commands: not supported by shoal" in run.stderr

    d("service", "rm", "web")
    eventually(lambda: not containers("web"), 60, "web's containers removed from the engine")
    gone = d("service", "ps", "web", check=False)
    assert gone.returncode == 1 and "no such service: web" in gone.stderr

    # secrets, configs, overlay networks, join tokens
    d("secret", "create", "db-pw", "-", stdin="s3cret")
    assert re.search(r"\sdb-pw\s", d("secret", "ls").stdout)
    secret = json.loads(d("secret", "inspect", "db-pw").stdout)[0]
    assert secret["Spec"]["Name"] == "db-pw" and "Data" not in secret["Spec"]
    clash = d("secret", "create", "db-pw", "-", stdin="again", check=False)
    assert clash.returncode == 1 and "db-pw already exists" in clash.stderr
    d("secret", "rm", "db-pw")
    assert "db-pw" not in d("secret", "ls").stdout
    conf = tmp_path / "app.conf"
    conf.write_text("listen 8080\n")
    d("config", "create", "app.conf", str(conf))
    assert "listen 8080" in d("config", "inspect", "--pretty", "app.conf").stdout
    d("config", "rm", "app.conf")
    d("network", "create", "-d", "overlay", "backend")
    nets = d("network", "ls", "--filter", "driver=overlay").stdout
    assert re.search(r"\sbackend\s+overlay\s+swarm", nets) and re.search(r"\singress\s+overlay\s+swarm", nets)
    d("network", "rm", "backend")
    assert "backend" not in d("network", "ls").stdout
    tokens = c.http.get("/v1/swarm/join-tokens").json()
    assert d("swarm", "join-token", "-q", "worker").stdout.strip() == tokens["worker"]
    assert d("swarm", "join-token", "-q", "manager").stdout.strip() == tokens["manager"]


def test_container_logs_through_docker_and_shoal_service_logs(cli_cluster: Cluster, task_image: str) -> None:
    """A container task's stdout and stderr, read by the agent from the engine's logs endpoint, reach `docker
    service logs` (each on its own stream, with exact times) and `shoal service logs`."""
    c = cli_cluster
    d = docker
    d(c, "service", "create", "-d", "--name", "talk", "--stop-grace-period", "1s", "--container-label", LABEL,
      task_image, "sh", "-c", TALKER)

    def shown() -> subprocess.CompletedProcess[str] | None:
        out = d(c, "service", "logs", "--tail", "6", "talk")
        return out if "out-" in out.stdout and "err-" in out.stderr else None

    out = eventually(shown, 60, "`docker service logs` to show both streams of the container")
    # stdout lines on the CLI's stdout, stderr lines on its stderr: the engine keeps the streams apart
    assert all(re.match(r"^talk\.1\.\w+@[\w.-]+\s+\| out-\d+$", ln) for ln in out.stdout.splitlines()), out.stdout
    assert all(re.match(r"^talk\.1\.\w+@[\w.-]+\s+\| err-\d+$", ln) for ln in out.stderr.splitlines()), out.stderr
    assert len(out.stdout.splitlines()) + len(out.stderr.splitlines()) <= 6  # tail counts both streams
    stamped = d(c, "service", "logs", "-t", "--tail", "2", "--raw", "talk").stdout.splitlines()
    assert stamped and all(re.match(r"^20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z out-\d+$", ln) for ln in stamped)
    # follow: new lines keep coming (bounded: the client is stopped after 3 s)
    with pytest.raises(subprocess.TimeoutExpired) as exc:
        d(c, "service", "logs", "-f", "--tail", "0", "talk", timeout=3)
    followed = exc.value.stdout.decode() if isinstance(exc.value.stdout, bytes) else str(exc.value.stdout or "")
    numbers = [int(m) for m in re.findall(r"\| out-(\d+)", followed)]
    assert len(numbers) >= 3 and numbers == sorted(numbers), followed

    # one task's logs, by its ID (the CLI asks /services/{id} first, then /tasks/{id} on the 404)
    (task,) = [x for x in c.tasks("talk") if x["desired_state"] == "running"]
    one = d(c, "service", "logs", "--tail", "2", task["id"])
    assert one.stdout and all(f"talk.1.{task['id'][:12]}@" in ln for ln in one.stdout.splitlines()), one.stdout

    shoal = c.cli("service", "logs", "--tail", "4", "-t", "talk")
    lines = [ln for ln in shoal.stdout.splitlines() if "| out-" in ln or "| err-" in ln]
    assert lines and all(ln.startswith("20") and "talk.1" in ln for ln in lines), shoal.stdout
    assert any("| err-" in ln for ln in lines + shoal.stderr.splitlines()), shoal.stdout + shoal.stderr
    d(c, "service", "rm", "talk")
    eventually(lambda: not containers("talk"), 60, "talk's container removed")
