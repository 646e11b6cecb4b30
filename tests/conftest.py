"""Shared pytest options: `--seeds N` (simulation seeds), `--soak` / SHOAL_SOAK=1 (long runs, bounded in CI)."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seeds", type=int, default=None,
                     help="number of simulation seeds to run (default: the fixed CI slice)")
    parser.addoption("--seed-base", type=int, default=0,
                     help="first simulation seed of `--seeds N` (so a wide sweep splits across processes)")
    parser.addoption("--seed", type=int, default=None, help="replay one simulation seed")
    parser.addoption("--soak", action="store_true", default=False, help="run the soak/scale tier")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = config.getoption("--soak") or os.environ.get("SHOAL_SOAK") == "1"
    if soak:
        return
    skip = pytest.mark.skip(reason="soak tier: run with --soak or SHOAL_SOAK=1")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> list[int]:
    """The seeds a simulation test runs: one replayed seed, `--seeds N`, or the fixed CI slice of 500."""
    one = request.config.getoption("--seed")
    if one is not None:
        return [one]
    n = request.config.getoption("--seeds") or 500
    base = request.config.getoption("--seed-base")
    return list(range(base, base + n))
