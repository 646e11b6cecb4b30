"""A store follower keeps its large decoded answers out of the collector's young generations
(`shoal.heap.DecodedFreezer`, docs/performance.md "CPU per task, third pass"): only a process that opted in
freezes, and the cycles frozen meanwhile are found again once the reclaim interval has passed."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from shoal import heap, wire
from shoal.heap import DecodedFreezer
from shoal.store.local import LocalStore
from shoal.store.mirror import StoreMirror


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    """An object that can sit in a reference cycle and be watched with a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def _large() -> bytes:
    task = {"id": "x", "spec": {"process": {"command": ["sleep", "1"], "env": []}}, "status": {"state": "running"}}
    body = wire.dumps({"revision": 9, "events": [{"kind": "task", "object": {**task, "id": str(i)}}
                                                 for i in range(200)]})
    assert len(body) >= wire.GC_PAUSE_BYTES
    return body


@pytest.fixture
def freezer(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DecodedFreezer, Clock]]:
    clock = Clock()
    f = DecodedFreezer(interval=60.0, clock=clock)
    monkeypatch.setattr(heap, "decoded", f)
    gc.unfreeze()
    try:
        yield f, clock
    finally:
        gc.unfreeze()  # never leave the test process frozen
        gc.collect()


def test_a_follower_freezes_what_it_decoded(freezer: tuple[DecodedFreezer, Clock]) -> None:
    f, _ = freezer
    f.enable()
    doc = wire.loads(_large())
    assert f.freezes == 1 and f.frozen_since == 100.0
    frozen = gc.get_freeze_count()
    assert frozen >= 200  # the decoded containers (and whatever else was tracked) sit in the permanent generation
    assert all(o is not doc["events"] for o in gc.get_objects(generation=0))
    wire.loads(b'{"small": [1, 2, 3]}')  # below GC_PAUSE_BYTES: decoded as before, nothing frozen
    assert f.freezes == 1


def test_a_process_that_did_not_opt_in_freezes_nothing(freezer: tuple[DecodedFreezer, Clock]) -> None:
    f, _ = freezer
    wire.loads(_large())
    assert f.freezes == 0 and f.frozen_since is None and gc.get_freeze_count() == 0


def test_cycles_frozen_meanwhile_are_collected_at_the_reclaim(freezer: tuple[DecodedFreezer, Clock]) -> None:
    f, clock = freezer
    f.enable()
    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    wire.loads(_large())  # freezes the heap, the cycle included
    del a, b
    gc.collect()
    assert watch() is not None  # frozen: no collection finds it
    clock.now += 59.0
    assert not f.reclaim_if_due() and watch() is not None
    clock.now += 1.0
    assert f.reclaim_if_due() and f.reclaims == 1
    assert watch() is None and gc.get_freeze_count() == 0 and f.frozen_since is None
    assert not f.reclaim_if_due()  # nothing frozen since: nothing to do


async def test_the_mirror_loop_reclaims_when_due(freezer: tuple[DecodedFreezer, Clock]) -> None:
    f, clock = freezer
    f.enable()
    wire.loads(_large())
    clock.now += 61.0
    m = StoreMirror(LocalStore(), ["task"], poll_interval=0.01)
    runner = asyncio.create_task(m.run())
    await asyncio.wait_for(m.ready.wait(), 2)
    await asyncio.sleep(0.05)
    m.stop()
    await runner
    assert f.reclaims == 1 and gc.get_freeze_count() == 0


def test_garbage_cycles_from_before_the_decode_are_freed_not_frozen(freezer: tuple[DecodedFreezer, Clock]) -> None:
    """The answer being decoded was an httpx response, a reference cycle holding the body: dropped before the
    decode, it is collected then, not frozen for a minute with its body."""
    f, _ = freezer
    f.enable()
    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    del a, b
    wire.loads(_large())
    assert f.freezes == 1 and gc.get_freeze_count() > 0
    assert watch() is None
