"""shoal.limits: log lines that cannot be forged or flooded, and the connection budget within the fd limit."""

from __future__ import annotations

import io
import logging

import pytest

from shoal.limits import FD_HEADROOM, LogGuard, ServerLimits, connection_budget, escape

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logger_with_guard(guard: LogGuard) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(guard)
    log = logging.getLogger(f"test.limits.{id(guard)}")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    return log, out


def test_user_strings_cannot_forge_a_line() -> None:
    log, out = logger_with_guard(LogGuard())
    log.info("node %s registered", "evil\nERROR dispatcher: forged\r\x00\u2028")
    lines = out.getvalue().splitlines()
    assert lines == ["INFO node evil\\nERROR dispatcher: forged\\r\\x00\\u2028 registered"]
    assert escape("tab\there") == "tab\\there" and escape("plain é") == "plain é"


def test_a_flood_of_one_kind_is_a_few_lines_with_a_count() -> None:
    clock = Clock()
    log, out = logger_with_guard(LogGuard(interval=60, burst=3, clock=clock))
    for i in range(20_000):
        log.error("accept failed: %s", f"fd {i}")
    log.warning("a different kind")  # kinds are counted separately
    assert out.getvalue().count("accept failed") == 3 and "a different kind" in out.getvalue()
    clock.now = 61
    log.error("accept failed: %s", "again")
    last = out.getvalue().splitlines()[-1]
    assert last == "ERROR accept failed: again [19997 more like this in the last 60s not logged]"


def test_the_kind_table_is_bounded() -> None:
    guard = LogGuard(max_kinds=100)
    log, _ = logger_with_guard(guard)
    for i in range(1000):
        log.info(f"remote-controlled template {i}")
    assert len(guard.kinds) <= 100


def test_connections_fit_in_the_descriptors() -> None:
    limits = ServerLimits(max_connections=8192)
    assert connection_budget(limits, 1024) == 1024 - FD_HEADROOM
    assert connection_budget(limits, 1 << 20) == 8192
    assert connection_budget(limits, 100) == 16
