"""`python -m services.orchestrator`: the orchestrator (one active instance per cluster, the rest standby)
on SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4321), over the raftstore members in SHOAL_STORE_MEMBERS and NATS
at SHOAL_NATS_URL (optional: without it the store is polled), over mutual TLS with the identity in
SHOAL_CERT_DIR (required)."""

from __future__ import annotations

from services.orchestrator.app import create_app
from services.orchestrator.loop import Orchestrator
from services.orchestrator.settings import OrchestratorSettings
from shoal.clock import SystemClock
from shoal.leader_loop import serve_leader
from shoal.runner import run


async def main(settings: OrchestratorSettings) -> None:
    await serve_leader(settings, Orchestrator.name,
                       lambda store: Orchestrator(store, None, SystemClock(), settings),
                       lambda sub, store: create_app(settings, store=store, orchestrator=sub))


if __name__ == "__main__":
    cfg = OrchestratorSettings()
    run(lambda: main(cfg))
