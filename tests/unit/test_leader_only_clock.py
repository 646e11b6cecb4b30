"""`LeaderOnly` builds its lease keeper on the clock it was given (the PlanLoop's), so the lease it writes is
stamped by that clock, not the process's wall clock."""

from __future__ import annotations

import asyncio

from shoal.clock import FakeClock
from shoal.lease import LeaseKeeper
from shoal.models.kinds import Kind
from shoal.service import LeaderOnly
from shoal.store.local import LocalStore


async def test_the_lease_is_stamped_by_the_injected_clock() -> None:
    store = LocalStore()
    clock = FakeClock(1000.0)
    seen: list[LeaseKeeper] = []

    async def work(lease: LeaseKeeper) -> None:
        seen.append(lease)
        leader.stop()
        await asyncio.sleep(3600)

    leader = LeaderOnly(store, "orchestrator", "orchestrator-1", work, lease_duration=1.5, clock=clock)
    await asyncio.wait_for(leader.run(), 5)
    assert seen and seen[0].clock is clock
    lease = await store.get(Kind.LEASE, "orchestrator")
    assert 1000.0 <= lease["expires_at"] - lease["duration"] < 1100.0  # fake time, not 2026's epoch seconds
