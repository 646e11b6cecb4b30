"""StoreMirror: list + watch, own writes folded in, lost hints only delay."""

from __future__ import annotations

import asyncio

from shoal.bus import MemoryBus
from shoal.bus.subjects import STORE_EVENTS
from shoal.errors import Unavailable
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.memory import MemoryStore
from shoal.store.mirror import HINT_WAIT, HintRelay, StoreMirror
from shoal.store.txn import WatchBatch


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
    relay = HintRelay()
    await relay.attach(bus)
    m = StoreMirror(store, ["task"], poll_interval=0.05)
    relay.mirror = m
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    m.stop()
    await runner
    for i in range(5):  # more than the history while the mirror is stopped
        await store.txn([t.create("task", {"id": f"t{i}"})])
    m2 = StoreMirror(store, ["task"], poll_interval=0.05)
    relay.mirror = m2
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


async def test_a_hint_wakes_the_mirror_before_its_poll_and_on_sync_sees_every_batch() -> None:
    store = LocalStore()
    seen: list[list[str] | None] = []
    m = StoreMirror(store, ["task"], poll_interval=30.0,
                    on_sync=lambda ch: seen.append(None if ch is None else [c.id for c in ch]))
    relay = HintRelay(m)
    bus = MemoryBus()
    await relay.attach(bus)
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    assert seen == [None]  # the first sync is a full list
    res = await store.txn([t.create("task", {"id": "t1"})])
    await bus.publish(STORE_EVENTS, {"revision": res.revision})
    for _ in range(40):
        if m.get("task", "t1") is not None:
            break
        await asyncio.sleep(0.025)
    assert m.get("task", "t1") is not None  # long before the 30 s poll
    assert ["t1"] in seen
    m.stop()
    await asyncio.wait_for(runner, 2)


class _Down(LocalStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def list(self, kind: str, **filters: object) -> tuple[int, list[dict[str, object]]]:
        self.calls += 1
        raise Unavailable("store down")

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> WatchBatch:
        self.calls += 1
        raise Unavailable("store down")


async def test_an_unavailable_store_backs_off_and_stop_ends_the_backoff_at_once() -> None:
    store = _Down()
    m = StoreMirror(store, ["task"], poll_interval=0.05)
    runner = asyncio.create_task(m.run())
    await asyncio.sleep(0.5)
    assert 2 <= store.calls <= 5 and not m.ready.is_set()  # 0.1, 0.2, 0.4 s apart: not a busy loop
    m.stop()
    await asyncio.wait_for(runner, 0.5)  # not the rest of a 0.8 s backoff


async def test_a_hint_of_kinds_the_mirror_does_not_follow_does_not_wake_it() -> None:
    store = LocalStore()
    m = StoreMirror(store, ["task"], poll_interval=30.0)
    relay = HintRelay(m)
    bus = MemoryBus()
    await relay.attach(bus)
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    await asyncio.sleep(0.1)  # the wake of attach() (hints missed while detached) is spent
    start = m.revision
    lease = await store.txn([t.create("lease", {"id": "scheduler"})])  # a renewal: nothing the mirror follows
    await bus.publish(STORE_EVENTS, {"revision": lease.revision,
                                     "changes": [{"kind": "lease", "action": "create", "id": "scheduler"}]})
    await asyncio.sleep(0.2)
    assert m.revision == start  # not woken: no watch request for a lease renewal
    task = await store.txn([t.create("task", {"id": "t1"})])
    await bus.publish(STORE_EVENTS, {"revision": task.revision,
                                     "changes": [{"kind": "task", "action": "create", "id": "t1"}]})
    for _ in range(40):
        if m.get("task", "t1") is not None:
            break
        await asyncio.sleep(0.025)
    assert m.get("task", "t1") is not None and m.revision == task.revision  # past the lease revision too
    await bus.publish(STORE_EVENTS, {"revision": task.revision + 1})  # no list of changes: wakes, as before
    m.stop()
    await asyncio.wait_for(runner, 2)


async def test_changed_ids_are_handed_over_once_and_a_relist_means_everything() -> None:
    store = LocalStore()
    await store.txn([t.create("task", {"id": "t1", "service_id": "s"}), t.create("node", {"id": "n1"})])
    m = StoreMirror(store, ["task", "node"], poll_interval=30.0, track_changes=True)
    assert await m.sync_once() is None  # the first list
    assert m.take_changes() is None  # everything may have changed
    assert m.take_changes() == {"task": set(), "node": set()}
    res = await store.txn([t.create("task", {"id": "t2", "service_id": "s"}), t.delete("task", "t1")])
    m.apply_written(res)  # own writes count
    await store.txn([t.update("node", {"id": "n1", "spec": {}}), t.create("secret", {"id": "x"})])
    await m.sync_once()  # the watch replays t1/t2 (not newer: not counted again) and brings n1
    assert m.take_changes() == {"task": {"t1", "t2"}, "node": {"n1"}}
    await m.sync_once()
    assert m.take_changes() == {"task": set(), "node": set()}
    m.resync()
    await m.sync_once()
    assert m.take_changes() is None
    plain = StoreMirror(store, ["task"])  # not tracking: every pass is a full one
    await plain.sync_once()
    await store.txn([t.create("task", {"id": "t3", "service_id": "s"})])
    await plain.sync_once()
    assert plain.take_changes() is None


async def test_the_mirror_holds_what_tasks_repeat_once_through_lists_watches_and_own_writes() -> None:
    """Every follower holds every task: a task's copy of its service's spec and its repeated strings are held
    once (shoal.store.shared.Sharer, as the store does), whichever way the task reached the mirror."""
    spec = {"process": {"command": ["sleep", "infinity"]}, "restart": {"condition": "any", "delay": 5.0}}

    def task(i: int) -> dict[str, object]:
        return {"id": f"t{i}", "service_id": "s1", "spec": {**spec}, "endpoint_spec": {"mode": "vip", "ports": []},
                "status": {"state": "running", "message": "started"}}

    store = LocalStore()
    await store.txn([t.create("task", task(0)), t.create("task", task(1))])
    seen: list[object] = []
    m = StoreMirror(store, ["task"], poll_interval=0.05,
                    on_sync=lambda changes: seen.extend(c.object for c in changes or ()))
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    m.apply_written(await store.txn([t.create("task", task(2))]))  # a write of its own
    await store.txn([t.create("task", task(3))])  # a write it hears of through the watch
    for _ in range(40):
        if "t3" in m.objects["task"]:
            break
        await asyncio.sleep(0.05)
    m.stop()
    await runner
    tasks = [m.get("task", f"t{i}") for i in range(4)]
    assert all(x is not None for x in tasks)
    assert all(x["spec"] is tasks[0]["spec"] for x in tasks)  # type: ignore[index]
    assert all(x["endpoint_spec"] is tasks[0]["endpoint_spec"] for x in tasks)  # type: ignore[index]
    assert all(x["status"]["message"] is tasks[0]["status"]["message"] for x in tasks)  # type: ignore[index]
    assert all(x["service_id"] is tasks[0]["service_id"] for x in tasks)  # type: ignore[index]
    # what it holds is what the store holds, and a follower indexing the changes sees the mirror's objects
    assert [x == y for x, y in zip(tasks, [store.mem.get("task", f"t{i}") for i in range(4)], strict=True)] \
        == [True] * 4
    assert any(o is tasks[3] for o in seen)


class _Follower(LocalStore):
    """A follower member: a commit becomes visible to its watch `lag` seconds after the leader applied it (and
    announced it on NATS) — when the follower hears of the commit with the next append or heartbeat."""

    def __init__(self, lag: float) -> None:
        super().__init__()
        self.lag = lag
        self.visible_at = 0.0
        self.uptos: list[int] = []  # what each watch named as the revision it must reach

    async def txn(self, ops, **kw):  # type: ignore[no-untyped-def,override]
        res = await super().txn(ops, **kw)
        self.visible_at = asyncio.get_running_loop().time() + self.lag
        return res

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> WatchBatch:
        self.uptos.append(upto)
        hidden = self.visible_at - asyncio.get_running_loop().time()
        if hidden > 0:
            if wait <= hidden:
                await asyncio.sleep(wait)
                return WatchBatch(after, [])
            await asyncio.sleep(hidden)
        batch = await super().watch(after, 0.0)
        # it hands out one commit per answer: it has applied the first, the next is still on its way
        return WatchBatch(batch.events[0].revision, batch.events[:1]) if batch.events else batch


async def test_a_hint_that_reaches_the_mirror_before_its_member_applied_the_commit_is_not_lost() -> None:
    """The leader publishes a hint as it applies; the mirror's member, a follower, applies ~0.1 s later. The
    mirror's watch waits on its member for the hinted revision instead of finding nothing and sleeping a whole
    poll interval (each stage of a service's start took ~1 s: orchestrator, allocator, scheduler, dispatcher)."""
    store = _Follower(lag=0.2)
    relay = HintRelay()
    m = StoreMirror(store, ["task"], poll_interval=30.0)
    relay.mirror = m
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    await store.txn([t.create("task", {"id": "t1"})])
    res = await store.txn([t.create("task", {"id": "t2"})])  # hinted only after both commits applied
    await relay._on_hint({"revision": res.revision, "changes": [{"kind": "task", "id": "t2"}]})
    try:
        for _ in range(40):
            if m.get("task", "t2") is not None:
                break
            await asyncio.sleep(0.05)
        assert m.get("task", "t1") is not None, "the hinted change waited for the 30 s poll"
        assert m.get("task", "t2") is not None, "the hint's own commit, after a first answer, waited for the poll"
        # the watches that waited for the hint named its revision, so a follower member asks its leader at once
        assert res.revision in store.uptos, store.uptos
        # a hint of a revision that never commits costs HINT_WAIT of waited watches, then the poll goes on
        await relay._on_hint({"revision": 10**9})
        await asyncio.sleep(HINT_WAIT + 0.3)
        assert m._behind_hint() == 0.0 and m._hinted == 0
    finally:
        m.stop()
        await runner
