"""`python -m services.orchestrator`: the orchestrator on SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4321), one active
instance per cluster (`shoal.leader_loop.leader_main` says what it connects to)."""

from __future__ import annotations

from services.orchestrator.app import create_app
from services.orchestrator.loop import Orchestrator
from services.orchestrator.settings import OrchestratorSettings
from shoal.leader_loop import leader_main

if __name__ == "__main__":
    cfg = OrchestratorSettings()
    leader_main(cfg, Orchestrator, lambda sub, store: create_app(cfg, store=store, orchestrator=sub))
