"""Secrets and configs in container tasks on the real Docker engine (issue 10), on a whole `shoal up` cluster
whose agent runs the docker executor: the engine is plain (not in swarm mode), so the agent writes each task's
files to its tmpfs directory and the engine bind-mounts them read-only — a task reads the secret at
/run/secrets/<name> (and at a target it names) and the config at its path, with the modes asked for; the
container's own filesystem is not where they live (it cannot change them); after `service rm` the container and
the files are gone. Skipped without an engine (tests/docker/conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import payloads
from shoal.supervisor import Layout
from tests.docker.conftest import ENGINE_HOST, RUN_ID, RUN_LABEL
from tests.e2e.harness import Cluster, eventually, running_cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]


@pytest.fixture
def docker_cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path / "shoal", agents=1, timeout=120,
                               env={"SHOAL_EXECUTORS": "docker", "SHOAL_DOCKER_HOST": ENGINE_HOST})


def containers_of(task_id: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=shoal.task.id={task_id}"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_container_tasks_read_their_secrets_and_configs(docker_cluster: Cluster, task_image: str) -> None:
    c = docker_cluster
    value = secrets.token_hex(24)
    config = f"listen {secrets.token_hex(6)}"
    c.cli("secret", "create", "db-password", "-", input=value)
    r = c.http.post("/v1/configs", json={"name": "app.conf", "data": base64.b64encode(config.encode()).decode()})
    assert r.status_code == 201, r.text
    script = ("stat -c '%a %u' /run/secrets/db-password /run/secrets/db/pw /etc/app/app.conf;"
              " sha256sum < /run/secrets/db-password | cut -c1-64; sha256sum < /run/secrets/db/pw | cut -c1-64;"
              " cat /etc/app/app.conf; echo;"
              " (echo x > /run/secrets/db-password) 2>/dev/null && echo writable || echo read-only;"
              " echo done; exec sleep 300")
    spec = {"name": "boxed", "mode": {"replicated": {"replicas": 1}},
            "task": {"container": {"image": task_image, "command": ["sh", "-c", script], "stop_grace_period": "1s",
                                   "labels": {RUN_LABEL: RUN_ID}},
                     "secrets": [{"source": "db-password"},
                                 {"source": "db-password", "target": "db/pw", "uid": "1000", "mode": 0o400}],
                     "configs": [{"source": "app.conf", "target": "/etc/app/app.conf", "mode": 0o440}]}}
    r = c.http.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text

    def output() -> tuple[str, list[str]] | None:
        running = [t for t in c.tasks("boxed") if t["status"]["state"] == "running"]
        if not running:
            return None
        task_id = running[0]["id"]
        ids = containers_of(task_id)
        if not ids:
            return None
        logs = subprocess.run(["docker", "logs", ids[0]], capture_output=True, text=True).stdout
        return (task_id, logs.splitlines()) if "done" in logs else None

    task_id, lines = eventually(output, 90, "the container task to read its secrets and config")
    digest = hashlib.sha256(value.encode()).hexdigest()
    assert lines == ["444 0", "400 1000", "440 0", digest, digest, config, "read-only", "done"], lines

    (cid,) = containers_of(task_id)
    mounts = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                       check=True).stdout)[0]["Mounts"]
    files = payloads.default_base(c.layout.data_dir / "agents" / "agent-1", f"{Layout._hostname()}-agent-1")
    by_target = {m["Destination"]: m for m in mounts}
    assert set(by_target) >= {"/run/secrets/db-password", "/run/secrets/db/pw", "/etc/app/app.conf"}
    for target in ("/run/secrets/db-password", "/run/secrets/db/pw", "/etc/app/app.conf"):
        m = by_target[target]
        assert m["Type"] == "bind" and m["RW"] is False and m["Source"].startswith(f"{files}/{task_id}/"), m

    c.cli("service", "rm", "boxed")
    eventually(lambda: not containers_of(task_id), 60, "the task's container removed after service rm")
    eventually(lambda: not (files / task_id).exists(), 30, "the task's files removed from the node")
