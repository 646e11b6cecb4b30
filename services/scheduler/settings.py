"""Scheduler settings: the shared SHOAL_* variables plus the scheduler's own knobs."""

from __future__ import annotations

from shoal.leader_loop import LeaderSettings
from shoal.planning.scheduler.core import DEBOUNCE_GAP, MAX_LATENCY

DEFAULT_PORT = 4323


class SchedulerSettings(LeaderSettings):
    """`SHOAL_NATS_URL`, `SHOAL_STORE_MEMBERS`, `SHOAL_HOST`, `SHOAL_PORT` (default 4323), `SHOAL_INSTANCE`,
    the knobs of `shoal.leader_loop.LeaderSettings`, plus:

    `SHOAL_DEBOUNCE_GAP` — seconds of quiet after the last new PENDING task before a pass (SwarmKit: 50 ms);
    `SHOAL_MAX_LATENCY` — the longest a new PENDING task waits for its pass (SwarmKit: 1 s)."""

    port: int = DEFAULT_PORT
    debounce_gap: float = DEBOUNCE_GAP
    max_latency: float = MAX_LATENCY
