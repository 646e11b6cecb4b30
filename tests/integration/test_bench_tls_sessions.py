"""A CI-sized run of bench/tls_sessions.py, so it cannot rot (the figures are printed, not asserted)."""

from __future__ import annotations

import pytest

from bench import tls_sessions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_bench_tls_sessions_small_run_measures_both_ways() -> None:
    r = tls_sessions.main(["--requests", "300", "--rounds", "1"])  # enough for a few clock ticks of CPU each way
    assert r["new_connection"] > 0 and r["kept_alive"] > 0 and r["ratio"] > 0
