"""Whole-cluster chaos with the process runtime (tests/e2e/chaos.py has the workload, faults and invariants):
after the faults stop, every service converges to its replica count with exactly one live process per RUNNING
task — no orphans of tasks the cluster replaced or removed, none of a task started just before its agent was
killed — and stopping the cluster leaves no task process behind.

CI runs one bounded, seeded run (`--seed N` replays another); the soak tier runs for SHOAL_SOAK_SECONDS (150 by
default) with a fresh seed, printed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.chaos import Chaos, chaos_seed, live_processes, soak_seconds
from tests.e2e.harness import Cluster

pytestmark = pytest.mark.e2e

CI_SEED = 18
CI_FAULT_SECONDS = 25.0
CONVERGE_SECONDS = 60.0


@pytest.fixture
def chaos_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "shoal", agents=2, heartbeat_period=1.0)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def run_chaos(cluster: Cluster, seed: int, seconds: float) -> None:
    run_id = uuid.uuid4().hex[:12]
    chaos = Chaos(cluster, seed=seed, run_id=run_id)
    print(f"chaos seed {seed}, run {run_id}, {seconds:.0f}s of faults")
    try:
        chaos.run(seconds)
        took = chaos.converge(CONVERGE_SECONDS)
        print("\n".join(chaos.log))
        print(f"converged {took:.1f}s after the faults stopped; {sum(len(v) for v in live_processes(run_id).values())}"
              " task processes")
    finally:
        chaos.close()
        cluster.sup.stop()  # what `shoal down` runs: agents stop their tasks, then the cluster's leftovers go
    print(f"left for the final sweep: {[str(w) for w in cluster.sup.leftovers]}")
    assert live_processes(run_id) == {}, f"seed {seed}: task processes left after the cluster stopped"


@pytest.mark.soak  # ~40 s on 2 cores: the CI run (SHOAL_SOAK=1) has it, `./run test` does not
@pytest.mark.timeout(200)
def test_chaos_converges_and_leaves_nothing(chaos_cluster: Cluster, request: pytest.FixtureRequest) -> None:
    run_chaos(chaos_cluster, chaos_seed(request.config.getoption("--seed"), CI_SEED), CI_FAULT_SECONDS)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_chaos_soak(chaos_cluster: Cluster, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    run_chaos(chaos_cluster, chaos_seed(request.config.getoption("--seed"), None), soak_seconds(150.0))
    print(f"soak run took {time.monotonic() - started:.0f}s")
