"""`python -m services.allocator`: the allocator (one active instance per cluster, the rest standby) on
SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4322), over the raftstore members in SHOAL_STORE_MEMBERS and NATS at
SHOAL_NATS_URL (optional: without it the store is polled), over mutual TLS with the identity in
SHOAL_CERT_DIR (required)."""

from __future__ import annotations

from services.allocator.app import create_app
from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from shoal.clock import SystemClock
from shoal.leader_loop import serve_leader
from shoal.runner import run


async def main(settings: AllocatorSettings) -> None:
    await serve_leader(settings, Allocator.name,
                       lambda store: Allocator(store, None, SystemClock(), settings),
                       lambda sub, store: create_app(settings, store=store, allocator=sub))


if __name__ == "__main__":
    cfg = AllocatorSettings()
    run(lambda: main(cfg))
