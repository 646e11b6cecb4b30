"""A CI-sized run of bench/tls_write_pieces.py, so it cannot rot (the figures are printed, not asserted: RSS)."""

from __future__ import annotations

import pytest

from bench import tls_write_pieces

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_bench_tls_write_pieces_small_run_measures_both_ways() -> None:
    r = tls_write_pieces.main(["--connections", "10", "--size", "100000", "--rounds", "1"])
    assert set(r) == {"whole", "pieces"} and all(set(v) == {"per_connection", "per_answer", "cpu_per_mb"}
                                                for v in r.values())
