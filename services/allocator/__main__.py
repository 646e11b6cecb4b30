"""`python -m services.allocator`: the allocator on SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4322), one active
instance per cluster (`shoal.leader_loop.leader_main` says what it connects to)."""

from __future__ import annotations

from services.allocator.app import create_app
from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from shoal.leader_loop import leader_main

if __name__ == "__main__":
    cfg = AllocatorSettings()
    leader_main(cfg, Allocator, lambda sub, store: create_app(cfg, store=store, allocator=sub))
