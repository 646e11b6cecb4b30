"""Whole-cluster chaos with the container runtime (tests/e2e/chaos.py): the same faults, workload and
invariants as tests/e2e/test_chaos.py, with every task a container of the machine's Docker engine. After the
faults stop, the running containers of the run are exactly the RUNNING tasks; after the cluster stops, none is
left. Skipped without an engine (tests/docker/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.conftest import ENGINE_HOST, RUN_ID, RUN_LABEL
from tests.e2e.chaos import Chaos, Live, chaos_seed, soak_seconds
from tests.e2e.harness import Cluster, running_cluster

pytestmark = pytest.mark.docker

CI_SEED = 18
CI_FAULT_SECONDS = 25.0
CONVERGE_SECONDS = 60.0
CHAOS_LABEL = "shoal.test.chaos"


def live_containers(run_id: str) -> Live:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label={CHAOS_LABEL}={run_id}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not out:
        return {}
    live: Live = {}
    for ct in json.loads(subprocess.run(["docker", "inspect", *out], capture_output=True, text=True).stdout or "[]"):
        if not (ct.get("State") or {}).get("Running"):
            continue
        labels = (ct.get("Config") or {}).get("Labels") or {}
        live.setdefault(labels.get("shoal.task.id", "?"), []).append((labels.get("shoal.node.id", "?"), ct["Id"][:12]))
    return live


@pytest.fixture
def docker_cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path / "shoal", agents=2, timeout=120,
                               env={"SHOAL_EXECUTORS": "docker", "SHOAL_DOCKER_HOST": ENGINE_HOST})


def run_docker_chaos(cluster: Cluster, image: str, seed: int, seconds: float) -> None:
    run_id = uuid.uuid4().hex[:12]

    def container_task(run: str, generation: int) -> dict[str, Any]:
        return {"container": {"image": image, "command": ["sleep", "100000"], "stop_grace_period": "1s",
                              "labels": {RUN_LABEL: RUN_ID, CHAOS_LABEL: run},
                              "env": {"CHAOS_RUN": run, "GENERATION": str(generation)}}}

    chaos = Chaos(cluster, seed=seed, run_id=run_id, task_spec=container_task, live=live_containers)
    print(f"docker chaos seed {seed}, run {run_id}, {seconds:.0f}s of faults")
    try:
        chaos.run(seconds)
        print(f"converged {chaos.converge(CONVERGE_SECONDS):.1f}s after the faults stopped")
    finally:
        chaos.close()
        cluster.sup.stop()
    print(f"left for the final sweep: {[str(w) for w in cluster.sup.leftovers]}")
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={CHAOS_LABEL}={run_id}"],
                          capture_output=True, text=True).stdout.split()
    assert left == [], f"seed {seed}: containers left after the cluster stopped: {left}"


@pytest.mark.soak  # ~45 s on 2 cores: the CI run (SHOAL_SOAK=1) has it, `./run test` does not
@pytest.mark.timeout(300)
def test_docker_chaos_converges_and_leaves_nothing(docker_cluster: Cluster, task_image: str,
                                                   request: pytest.FixtureRequest) -> None:
    run_docker_chaos(docker_cluster, task_image, chaos_seed(request.config.getoption("--seed"), CI_SEED),
                     CI_FAULT_SECONDS)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_docker_chaos_soak(docker_cluster: Cluster, task_image: str, request: pytest.FixtureRequest) -> None:
    run_docker_chaos(docker_cluster, task_image, chaos_seed(request.config.getoption("--seed"), None),
                     soak_seconds(150.0))
