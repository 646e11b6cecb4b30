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


_SOAK_IDS: set[str] = set()
_SECONDS: dict[str, float] = {}


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    _SOAK_IDS.update(item.nodeid for item in session.items if "soak" in item.keywords)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _SECONDS[report.nodeid] = _SECONDS.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The time each tier took (setup, call and teardown summed): the default tier must stay well under
    20 minutes on 2 cores (a run with SHOAL_SOAK=1 shows both)."""
    if not _SECONDS:
        return
    soak = sum(s for nodeid, s in _SECONDS.items() if nodeid in _SOAK_IDS)
    by_dir: dict[str, float] = {}
    for nodeid, s in _SECONDS.items():
        if nodeid not in _SOAK_IDS:
            top = "/".join(nodeid.split("/")[:2])
            by_dir[top] = by_dir.get(top, 0.0) + s
    default = sum(by_dir.values())
    dirs = ", ".join(f"{d} {s / 60:.1f}" for d, s in sorted(by_dir.items()))
    terminalreporter.write_line(f"tier times: default {default / 60:.1f} min ({dirs}); soak {soak / 60:.1f} min")
