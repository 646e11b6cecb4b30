"""The CI-sized run of bench/converge.py (N = 3, one round): the floor, Swarm mode and a `shoal up` cluster with
the docker executor each get 3 containers running on the engine; the engine is out of swarm mode afterwards and
no container of the run is left; `--stages` prints every system's stage table with all 3 containers in it (shoal's
through the store's events, to the dispatcher's report). Timings are printed, not asserted."""

from __future__ import annotations

import pytest

from bench import converge

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]


# a benchmark's CI-sized run: the soak tier, which .ci/run runs (the default tier stays well under 20 min)
@pytest.mark.soak
def test_bench_converge_small_run(task_image: str, capsys: pytest.CaptureFixture[str]) -> None:
    was = converge.swarm_state()
    results = converge.main(["--sizes", "3", "--rounds", "1", "--image", task_image, "--timeout", "120",
                             "--stages"])
    out = capsys.readouterr().out
    print(out)
    for m in results:
        assert f"{m.system} N=3: stage" in out
    assert out.count("| container created -> container started | 3 |") == len(results)
    assert "| start -> task created | 3 |" in out and "| container started -> reported | 3 |" in out
    systems = {m.system for m in results}
    assert {"floor", "shoal"} <= systems
    if was == "inactive":  # Swarm rounds run only on an engine that was not in a swarm already
        assert "swarm" in systems
        assert converge.swarm_state() == "inactive", "the bench left the engine in swarm mode"
    assert all(m.n == 3 and 0 < m.seconds < 120 for m in results)
    with converge.engine_client() as c:
        for m in results:
            assert not converge.labelled(c, m.label), f"containers of {m.label} were left behind"
