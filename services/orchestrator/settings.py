"""Orchestrator settings: the shared SHOAL_* variables plus the orchestrator's own knobs."""

from __future__ import annotations

from shoal.leader_loop import LeaderSettings
from shoal.planning.orchestrator.restart import STOP_TIMEOUT

DEFAULT_PORT = 4321


class OrchestratorSettings(LeaderSettings):
    """`SHOAL_NATS_URL`, `SHOAL_STORE_MEMBERS`, `SHOAL_HOST`, `SHOAL_PORT` (default 4321), `SHOAL_INSTANCE`,
    the leader-loop knobs of `shoal.leader_loop.LeaderSettings`, plus:

    `SHOAL_RESTART_STOP_TIMEOUT` — seconds a replacement waits (after its restart delay) for the task it
    replaces to stop before it is started anyway (SwarmKit: 1 minute)."""

    port: int = DEFAULT_PORT
    restart_stop_timeout: float = STOP_TIMEOUT
