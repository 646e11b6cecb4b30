"""Dispatcher settings: the shared SHOAL_* variables plus the dispatcher's own knobs."""

from __future__ import annotations

from services.dispatcher.core import ASSIGNMENT_BATCH_DELAY
from shoal.config import CommonSettings

DEFAULT_PORT = 4324


class DispatcherSettings(CommonSettings):
    """`SHOAL_NATS_URL`, `SHOAL_STORE_MEMBERS`, `SHOAL_HOST`, `SHOAL_PORT` (default 4324), plus:

    `SHOAL_HEARTBEAT_PERIOD` — seconds between agent heartbeats, written into the cluster object when this
        dispatcher is the one creating it (the cluster object is the truth afterwards; default 5);
    `SHOAL_STATUS_BATCH_INTERVAL` — at most one write of task status reports per this many seconds, the first
        after a quiet spell at once (default 0.1; shoal/pacing.py);
    `SHOAL_STATUS_BATCH_MAX` — reports that trigger a write at once (default 1000);
    `SHOAL_ASSIGNMENT_BATCH_DELAY` — the least seconds between two assignment messages of a session: a change
        within it of the last message lingers to gather more, one after a quiet spell goes at once (default 0.05);
    `SHOAL_ASSIGNMENT_MAX_WAIT` — upper bound on the `wait` of an assignments long poll (default 60);
    `SHOAL_POLL_INTERVAL` — seconds between store watch polls when no NATS hint arrives (default 1)."""

    port: int = DEFAULT_PORT
    heartbeat_period: float = 5.0
    status_batch_interval: float = 0.1
    status_batch_max: int = 1000
    assignment_batch_delay: float = ASSIGNMENT_BATCH_DELAY
    assignment_max_wait: float = 60.0
    poll_interval: float = 1.0
