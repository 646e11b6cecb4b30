"""`python -m services.scheduler`: the scheduler on SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4323), one active
instance per cluster (`shoal.leader_loop.leader_main` says what it connects to)."""

from __future__ import annotations

from services.scheduler.app import create_app
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.leader_loop import leader_main

if __name__ == "__main__":
    cfg = SchedulerSettings()
    leader_main(cfg, Scheduler, lambda sub, store: create_app(cfg, store=store, scheduler=sub))
