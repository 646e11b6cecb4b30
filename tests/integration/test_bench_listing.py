"""The CI-sized run of bench/listing.py (one raftstore process, a few hundred tasks): the paged, counted
gateway reads answer what the full reads answer (the bench asserts the counts); timings are printed only."""

from __future__ import annotations

import pytest

from bench import listing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_bench_listing_small_run() -> None:
    r = listing.main(["--tasks", "300", "--rounds", "1"])
    assert set(r) >= {"GET /v1/tasks (all)", "GET /v1/services/{name}", "GET /v1/services", listing.PS}
    assert all(v > 0 for v in r.values())
