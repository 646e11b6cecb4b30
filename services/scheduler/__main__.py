"""`python -m services.scheduler`: the scheduler (one active instance per cluster, the rest standby) on
SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4323), over the raftstore members in SHOAL_STORE_MEMBERS and NATS at
SHOAL_NATS_URL (optional: without it the store is polled), over mutual TLS with the identity in
SHOAL_CERT_DIR (required)."""

from __future__ import annotations

from services.scheduler.app import create_app
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.clock import SystemClock
from shoal.leader_loop import serve_leader
from shoal.runner import run


async def main(settings: SchedulerSettings) -> None:
    await serve_leader(settings, Scheduler.name,
                       lambda store: Scheduler(store, None, SystemClock(), settings),
                       lambda sub, store: create_app(settings, store=store, scheduler=sub))


if __name__ == "__main__":
    cfg = SchedulerSettings()
    run(lambda: main(cfg))
