"""The real `docker` CLI drives a `shoal up` cluster through the gateway's Docker Engine API subset, over the
same mutual TLS as the rest of the gateway (DOCKER_HOST/DOCKER_TLS_VERIFY/DOCKER_CERT_PATH = the admin bundle).

DOCKER_HOST is only ever set in the environment of the `docker` commands run here, never exported to the
cluster's processes (the docker executor and image builds talk to the real engine). The client is
SHOAL_DOCKER_CLI when set, else Debian's docker.io client (/usr/bin/docker, 20.10: what CI installs), else the
first `docker` on PATH. Without a docker client the tests skip, except with SHOAL_REQUIRE_DOCKER=1 or in CI
(`CI` set), where they fail loudly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, eventually

pytestmark = pytest.mark.timeout(240)
DEBIAN_CLIENT = "/usr/bin/docker"  # docker.io's client (20.10 on bookworm); /usr/local/bin may hold another


def docker_client() -> str | None:
    """The `docker` client these tests drive (see the module's docstring)."""
    chosen = os.environ.get("SHOAL_DOCKER_CLI")
    if chosen:
        return shutil.which(chosen)
    if os.access(DEBIAN_CLIENT, os.X_OK):
        return DEBIAN_CLIENT
    return shutil.which("docker")


def require_docker_client() -> str:
    """The client, or a skip — a failure when the run must have one (SHOAL_REQUIRE_DOCKER=1, CI)."""
    exe = docker_client()
    if exe is None:
        if os.environ.get("SHOAL_REQUIRE_DOCKER") == "1" or os.environ.get("CI"):
            pytest.fail("the docker client is missing: install docker.io (scripts/docker-engine.sh) for the "
                        "Docker API tests (SHOAL_REQUIRE_DOCKER=1 / CI)")
        pytest.skip("no docker client on this machine")
    return exe


DOCKER = docker_client()


def docker_clients() -> list[str]:
    """The clients the process-service session runs with: the chosen one (`docker_client`), plus the first
    `docker` on PATH when that is another binary (e.g. Docker's 28.x client beside Debian's 20.10: soak tier,
    about 25 s); ["missing"] when there is none (the fixture then skips or fails)."""
    first = docker_client()
    other = shutil.which("docker")
    out = [first] if first else []
    if other and first and os.path.realpath(other) != os.path.realpath(first) \
            and not os.environ.get("SHOAL_DOCKER_CLI"):
        out.append(other)
    return out or ["missing"]


@pytest.fixture
def docker_cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): the session creates its own objects (and removes them);
    the node label it adds is put back after it."""
    require_docker_client()
    return shared


def docker(cluster: Cluster, *args: str, check: bool = True, timeout: float = 60.0,
           stdin: str | None = None, host: str | None = None, client: str | None = None,
           cert_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker client against the cluster's gateway (or `host`), DOCKER_* set for this command only."""
    host = host or cluster.layout.gateway_url.split("://", 1)[1]
    return docker_at(host, cert_path or cluster.layout.client_dir, cluster.layout.data_dir / "docker-config", *args,
                     check=check, timeout=timeout, stdin=stdin, client=client)


def docker_at(host: str, cert_path: Path, config: Path, *args: str, check: bool = True, timeout: float = 60.0,
              stdin: str | None = None, client: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` with DOCKER_HOST=tcp://`host`, DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH=`cert_path` (the
    admin bundle) in its own environment only; every other DOCKER_* variable of ours is dropped."""
    config.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=f"tcp://{host}", DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(cert_path),
               DOCKER_CONFIG=str(config))
    exe = client or DOCKER
    assert exe is not None
    done = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)} exited {done.returncode}: {done.stderr}{done.stdout}"
    return done


@pytest.mark.parametrize("client", [pytest.param(x, marks=[pytest.mark.soak] if i else [])
                                    for i, x in enumerate(docker_clients())])
def test_docker_cli_session(docker_cluster: Cluster, tmp_path: Path, client: str) -> None:
    c = docker_cluster

    def d(cluster: Cluster, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return docker(cluster, *args, client=client, **kw)

    out = d(c, "version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    assert out == "1.41"
    nodes = eventually(lambda: [ln for ln in d(c, "node", "ls").stdout.splitlines()[1:] if "Ready" in ln],
                       30, "the agents' nodes to be Ready in `docker node ls`")
    assert len(nodes) >= 2
    node_id = json.loads(d(c, "node", "inspect", "self").stdout)[0]["ID"]
    d(c, "node", "update", "--label-add", "zone=a", node_id)
    assert json.loads(d(c, "node", "inspect", node_id).stdout)[0]["Spec"]["Labels"] == {"zone": "a"}

    # attached create: the progress bars end with the service converged
    created = d(c, "service", "create", "--name", "web", "--replicas", "2", "--update-monitor", "1s",
                     "--container-label", "io.shoal.runtime=process", "--env", "GREETING=hi",
                     "shoal/process", "sleep", "300", timeout=120)
    assert "converged" in created.stdout + created.stderr
    ls = d(c, "service", "ls").stdout
    assert "web" in ls and "2/2" in ls, ls
    ps = [ln for ln in d(c, "service", "ps", "web").stdout.splitlines()[1:] if "Running" in ln]
    assert len(ps) == 2, ps
    spec = json.loads(d(c, "service", "inspect", "web").stdout)[0]["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Command"] == ["sleep", "300"]
    # the /v1 API shows the same service as a process service
    assert c.http.get("/v1/services/web").json()["spec"]["task"]["process"]["env"] == {"GREETING": "hi"}

    d(c, "service", "scale", "web=3", "-d")
    assert c.http.get("/v1/services/web").json()["spec"]["mode"]["replicated"]["replicas"] == 3
    d(c, "service", "update", "-d", "--env-add", "A=B", "web")
    assert c.http.get("/v1/services/web").json()["spec"]["task"]["process"]["env"] == {"GREETING": "hi", "A": "B"}
    d(c, "service", "rollback", "-d", "web")
    assert c.http.get("/v1/services/web").json()["spec"]["task"]["process"]["env"] == {"GREETING": "hi"}

    # errors of bad calls, as the CLI prints them
    missing = d(c, "service", "inspect", "nope", check=False)
    assert missing.returncode != 0 and "no such service: nope" in missing.stderr.lower()
    clash = d(c, "service", "create", "-d", "--name", "web", "--container-label", "io.shoal.runtime=process",
                   "shoal/process", "sleep", "1", check=False)
    assert clash.returncode != 0 and "service web already exists" in clash.stderr
    unsupported = d(c, "service", "create", "-d", "--name", "tty", "-t", "busybox:1", check=False)
    assert unsupported.returncode != 0 and "TaskTemplate.ContainerSpec.TTY is not supported by shoal" in \
        unsupported.stderr
    run = d(c, "run", "--rm", "busybox:1", "true", check=False)
    assert run.returncode != 0 and "not supported by shoal" in run.stderr

    # secrets, configs, networks, join tokens
    d(c, "secret", "create", "pw", "-", stdin="s3cret")
    assert "pw" in d(c, "secret", "ls").stdout
    assert "Data" not in json.loads(d(c, "secret", "inspect", "pw").stdout)[0]["Spec"]
    d(c, "secret", "rm", "pw")
    conf = tmp_path / "app.conf"
    conf.write_text("x=1\n")
    d(c, "config", "create", "app", str(conf))
    assert json.loads(d(c, "config", "inspect", "app").stdout)[0]["Spec"]["Name"] == "app"
    d(c, "config", "rm", "app")
    d(c, "network", "create", "-d", "overlay", "backend")
    nets = d(c, "network", "ls").stdout
    assert "backend" in nets and "ingress" in nets
    d(c, "network", "rm", "backend")
    token = d(c, "swarm", "join-token", "-q", "worker").stdout.strip()
    assert token.startswith("SWMTKN-") or token

    d(c, "service", "rm", "web")
    assert "web" not in d(c, "service", "ls").stdout
    gone = d(c, "service", "ps", "web", check=False)
    assert gone.returncode != 0 and "no such service: web" in gone.stderr
