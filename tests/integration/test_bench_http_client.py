"""A CI-sized run of bench/http_client.py, so it cannot rot (the figures are printed, not asserted)."""

from __future__ import annotations

import pytest

from bench import http_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_bench_http_client_small_run_measures_every_client() -> None:
    r = http_client.main(["--requests", "200", "--rounds", "1"])
    assert all(r[way] > 0 for way in http_client.WAYS)
    assert r["session_direct_ratio"] > 0 and r["session_httpx_api_ratio"] > 0
