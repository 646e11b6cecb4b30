"""The event-loop stall watchdog (shoal/stalls.py): the pure clock, and a real loop blocked on purpose."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from shoal.runner import watched
from shoal.stalls import StallClock, StallWatch, threshold_from


def test_clock_samples_once_per_stall_and_reports_its_length() -> None:
    c = StallClock(threshold=1.0)
    assert not c.should_sample(5.0)  # the loop never turned: nothing to judge
    assert c.turned(10.0) is None
    assert not c.should_sample(10.9)
    assert c.should_sample(11.0)
    c.sampled = "stack"
    assert not c.should_sample(12.0)  # one sample a stall
    assert c.turned(13.5) == (3.5, "stack")
    assert (c.stalls, c.longest) == (1, 3.5)
    assert c.turned(13.6) is None  # a normal turn reports nothing
    assert not c.should_sample(14.0)


@pytest.mark.parametrize("raw,expected", [("", 2.0), ("0", 0.0), ("0.5", 0.5)])
def test_threshold_from_env(raw: str, expected: float) -> None:
    assert threshold_from({"SHOAL_STALL_WARN": raw}) == expected


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_bad_threshold_is_refused_with_the_variable_named(raw: str) -> None:
    with pytest.raises(SystemExit, match="SHOAL_STALL_WARN"):
        threshold_from({"SHOAL_STALL_WARN": raw})


def _block_the_loop(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # pure Python: the watchdog thread gets the GIL and sees this frame
        sum(range(100))


async def test_a_blocked_loop_is_logged_with_the_blocking_frame(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.stalls")
    watch = StallWatch(0.2, tick=0.02)
    watch.start()
    try:
        await asyncio.sleep(0.1)
        _block_the_loop(0.6)
        await asyncio.sleep(0.1)
    finally:
        watch.stop()
    lines = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "_block_the_loop" in lines[0]
    assert watch.state.stalls == 1 and 0.5 <= watch.state.longest < 2.0


async def test_a_busy_but_turning_loop_is_no_stall(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.stalls")
    watch = StallWatch(0.2, tick=0.02)
    watch.start()
    try:
        for _ in range(20):
            _block_the_loop(0.03)
            await asyncio.sleep(0)
    finally:
        watch.stop()
    assert watch.state.stalls == 0
    assert not [r for r in caplog.records if "stalled" in r.getMessage()]


async def test_watched_returns_the_work_with_and_without_the_watchdog() -> None:
    async def work() -> int:
        await asyncio.sleep(0.05)
        return 7

    assert await watched(work(), 0.5) == 7
    assert await watched(work(), 0) == 7
