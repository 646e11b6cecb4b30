"""A first run that just works: `shoal up` offers the container runtime when a Docker engine answers and says
which runtimes are enabled; `shoal up --scale` and `shoal scale` run more instances of a control-plane role,
each a manager-role component join of its own; the extra instances register and, for leader-only roles, one
is active."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import pki
from shoal.cli.up import docker_engine
from shoal.supervisor import Layout, admin_client
from tests.e2e.harness import eventually, free_base_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class Up:
    """`shoal up --detach` and friends, run as a user runs them (the console script, its own process)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base = free_base_port()
        self.layout = Layout(data_dir, base_port=self.base, gateway_port=self.base + 45)

    def shoal(self, *args: str, env: dict[str, str] | None = None,
              timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).parent / "shoal"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "shoal.cli"]
        base = {k: v for k, v in os.environ.items() if k not in ("SHOAL_EXECUTORS", "SHOAL_DOCKER_HOST")}
        return subprocess.run([*argv, *args], env={**base, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def up(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.shoal("up", "--detach", "--data-dir", str(self.data_dir), "--base-port", str(self.base),
                          "--gateway-port", str(self.base + 45), "--agents", "1", "--heartbeat-period", "1",
                          "--timeout", "120", *extra, env=env)

    def get(self, path: str) -> Any:
        with admin_client(self.layout, timeout=5.0) as http:
            r = http.get(self.layout.gateway_url + path)
            assert r.status_code == 200, r.text
            return r.json()

    def instances(self) -> dict[str, list[dict[str, Any]]]:
        by_role: dict[str, list[dict[str, Any]]] = {}
        for x in self.get("/v1/cluster")["instances"]:
            by_role.setdefault(str(x["role"]), []).append(x)
        return by_role

    def executors(self) -> list[list[str]]:
        body = self.get("/v1/nodes")
        nodes = body.get("items", body) if isinstance(body, dict) else body
        return [sorted(n["description"]["executors"]) for n in nodes if n.get("description")]

    def down(self) -> None:
        self.shoal("down", "--data-dir", str(self.data_dir), timeout=90)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Up]:
    u = Up(tmp_path / "shoal")
    try:
        yield u
    finally:
        u.down()


def test_up_without_a_docker_engine_offers_process_and_scales_roles(local: Up, tmp_path: Path) -> None:
    # No engine for the `shoal up` process (DOCKER_HOST at a socket nothing serves): process only, said so.
    dead = f"unix://{tmp_path / 'no-docker.sock'}"
    done = local.up("--scale", "dispatcher=2", "--scale", "scheduler=2", env={"DOCKER_HOST": dead})
    assert done.returncode == 0, done.stderr + done.stdout
    said = done.stdout + done.stderr
    assert "runtimes enabled: process; container is off" in said, said
    assert "dispatcher: 2 instance(s)" in said and "scheduler: 2 instance(s)" in said, said
    assert local.executors() == [["process"]]

    def scaled(n_dispatchers: int) -> dict[str, list[dict[str, Any]]] | None:
        by_role = local.instances()
        ok = (len(by_role.get("dispatcher", [])) == n_dispatchers and len(by_role.get("scheduler", [])) == 2
              and sum(bool(x["active"]) for x in by_role["scheduler"]) == 1
              and len(by_role.get("orchestrator", [])) == 1)
        return by_role if ok else None

    by_role = eventually(lambda: scaled(2), 30, "two dispatchers and two schedulers (one active) registered")
    assert {x["instance"] for x in by_role["scheduler"]} == {"scheduler-1", "scheduler-2"}
    # each extra instance is a node of its own, certified for its one component by a manager join
    cert = local.layout.cert_dir("dispatcher-2") / pki.CERT_FILE
    ident = pki.identity_of(pki.load_cert(cert.read_bytes()))
    first = pki.identity_of(pki.load_cert((local.layout.cert_dir("dispatcher") / pki.CERT_FILE).read_bytes()))
    assert ident.role == pki.MANAGER and ident.component == "dispatcher" and ident.node_id != first.node_id

    # ... and on the running cluster
    done = local.shoal("scale", "--data-dir", str(local.data_dir), "dispatcher=3")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "dispatcher: 3 instance(s)" in done.stdout, done.stdout
    eventually(lambda: scaled(3), 30, "three dispatchers registered")
    done = local.shoal("scale", "--data-dir", str(local.data_dir), "dispatcher=1")
    assert done.returncode == 0, done.stderr + done.stdout
    eventually(lambda: scaled(1), 30, "back to one dispatcher")
    assert not local.layout.cert_dir("dispatcher-2").exists()

    bad = local.shoal("scale", "--data-dir", str(local.data_dir), "raftstore=5")
    assert bad.returncode == 2 and "cannot be scaled" in bad.stderr


def test_up_with_a_docker_engine_offers_the_container_runtime(local: Up) -> None:
    version, why = docker_engine(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    if version is None:
        pytest.skip(f"no Docker engine here: {why}")
    done = local.up()
    assert done.returncode == 0, done.stderr + done.stdout
    said = done.stdout + done.stderr
    assert f"runtimes enabled: process, container (Docker engine {version}" in said, said
    eventually(lambda: local.executors() == [["container", "docker", "process"]] or None, 30,
               "the agent to offer the container runtime")


def test_scale_without_a_cluster_says_what_to_do(tmp_path: Path) -> None:
    u = Up(tmp_path / "none")
    done = u.shoal("scale", "--data-dir", str(u.data_dir), "dispatcher=2")
    assert done.returncode == 1 and "no cluster running" in done.stderr and "shoal up" in done.stderr
