"""StoreMirror: list + watch, own writes folded in, lost hints only delay."""

from __future__ import annotations

import asyncio

from shoal.bus import MemoryBus
from shoal.bus.subjects import STORE_EVENTS
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.memory import MemoryStore
from shoal.store.mirror import StoreMirror


async def test_mirror_follows_store_and_own_writes() -> None:
    store = LocalStore()
    await store.txn([t.create("task", {"id": "t1", "service_id": "s"})])
    m = StoreMirror(store, ["task"], poll_interval=0.05)
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    assert m.get("task", "t1") is not None
    res = await store.txn([t.delete("task", "t1"), t.create("task", {"id": "t2", "service_id": "s"})])
    m.apply_written(res)
    assert m.get("task", "t1") is None and m.get("task", "t2") is not None
    await asyncio.sleep(0.2)  # the watch replays the same changes: no resurrection, no duplicates
    assert sorted(m.objects["task"]) == ["t2"]
    m.stop()
    await runner


async def test_lost_hints_only_delay_and_compaction_relists() -> None:
    store = LocalStore(MemoryStore(history=2))
    bus = MemoryBus()
    bus.drop_all = True
    m = StoreMirror(store, ["task"], bus=bus, poll_interval=0.05)
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    m.stop()
    await runner
    for i in range(5):  # more than the history while the mirror is stopped
        await store.txn([t.create("task", {"id": f"t{i}"})])
    m2 = StoreMirror(store, ["task"], bus=bus, poll_interval=0.05)
    m2.revision = 1
    m2._relist = False
    runner = asyncio.create_task(m2.run())
    for _ in range(40):
        await asyncio.sleep(0.05)
        if len(m2.objects["task"]) == 5:
            break
    assert len(m2.objects["task"]) == 5 and m2.resyncs >= 1
    await bus.publish(STORE_EVENTS, {"revision": 999})
    m2.stop()
    await runner
