"""`bench/scheduler.py` still runs: its smallest case, once (the benchmark itself is not part of the test run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scheduler.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shoal_bench_scheduler", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_smallest_case_runs_and_reports_against_the_published_figure(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    [result] = bench.main(["--case", "1k-nodes-1k-tasks", "--repeat", "1"])
    assert result.placed == 1000 and result.spread == (1, 1)
    out = capsys.readouterr().out
    assert "PUBLISHED figures, not measured here" in out
    assert "swarmkit published 0.189s" in out and "tasks/s" in out
    [stored] = bench.main(["--case", "1k-nodes-1k-tasks", "--repeat", "1", "--store"])  # through a MemoryStore
    assert stored.placed == 1000
    with pytest.raises(SystemExit):
        bench.main(["--case", "no-such-case"])
