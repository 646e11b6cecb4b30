"""`bench/planners.py` still runs: a small ramp in both modes, every task RUNNING, the ratio printed (the
benchmark itself is not part of the test run)."""

from __future__ import annotations

import pytest

from bench import planners


def test_small_ramp_runs_in_both_modes_and_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    [row] = planners.main(["--nodes", "3", "--tasks", "150", "--per-pass", "100"])
    for mode in ("incremental", "full"):
        assert row[mode]["running"] == 150
        assert set(row[mode]["cpu"]) == {"orchestrator", "allocator", "scheduler"}
    out = capsys.readouterr().out
    assert "full / incremental" in out and "ms/task" in out
