"""Allocator settings: the shared SHOAL_* variables plus the leader-loop knobs."""

from __future__ import annotations

from shoal.leader_loop import LeaderSettings

DEFAULT_PORT = 4322


class AllocatorSettings(LeaderSettings):
    """`SHOAL_NATS_URL`, `SHOAL_STORE_MEMBERS`, `SHOAL_HOST`, `SHOAL_PORT` (default 4322), `SHOAL_INSTANCE`,
    and the knobs of `shoal.leader_loop.LeaderSettings` (`SHOAL_MAX_TXN_OPS` bounds each pass's batch)."""

    port: int = DEFAULT_PORT
