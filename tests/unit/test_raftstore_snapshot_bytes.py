"""Snapshots triggered by the bytes of the log, and a tail bounded in bytes (services/raftstore/
driver_snapshots.py): batched transactions make few, large entries, so a count of entries alone let the whole
log stay in memory (40 MiB at 10,000 tasks in ~300 entries against an interval of 10,000)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

from services.raftstore import snapfile
from services.raftstore.atrest import Sealer
from services.raftstore.driver import Driver, DriverConfig
from services.raftstore.fsm import FSM, encode_txn
from services.raftstore.wal import WAL
from shoal.store import txn as t

SEALER = Sealer({1: bytes(32)}, 1)
CFG = DriverConfig(tick=0.01, election_ticks=10, snapshot_interval=10_000, snapshot_bytes=40_000,
                   snapshot_tail=500, snapshot_tail_bytes=10_000)


class _NoPeers:
    def send(self, msgs: object) -> None:
        pass


def _driver(path: Path, cfg: DriverConfig = CFG) -> Driver:
    wal, replayed = WAL.open(path, SEALER)
    snap = snapfile.load(path, SEALER)
    return Driver(1, [1], wal, replayed, FSM(), _NoPeers(), cfg, rng=random.Random(1), snapshot=snap)


def _log_bytes(d: Driver) -> int:
    s = d.storage
    return sum(len(e.data) for e in s.entries(s.first_index(), s.last_index() + 1)) if s.last_index() >= \
        s.first_index() else 0


async def _write(d: Driver, n: int, start: int = 0) -> None:
    for i in range(start, start + n):  # ~2 KB per entry
        body = {"ops": [t.create("task", {"id": f"t{i:05d}", "blob": "x" * 2000})], "time": float(i)}
        await d.propose(encode_txn(body), parsed=body)


@contextlib.asynccontextmanager
async def _leading(path: Path) -> AsyncIterator[Driver]:
    """A single-member driver over `path`, running and leading; stopped and its WAL closed afterwards."""
    d = _driver(path)
    run = asyncio.create_task(d.run())
    try:
        for _ in range(500):
            if d.is_leader:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the single member never led")
        yield d
    finally:
        d.stop()
        await run
        d.wal.close()


def test_snapshot_by_log_bytes_and_a_tail_bounded_in_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        async with _leading(tmp_path) as d:
            await _write(d, 60)  # ~120 KB in 60 entries: far below the entry interval, 3x the byte trigger
            await d.settle_snapshot()  # the last one written on its worker thread is in the storage
            snap = d.storage.snapshot()
            assert snap.index > 0, "no snapshot: the byte trigger did not fire"
            assert d.storage.first_index() > 1, "the log was not compacted"
            # the log in memory: at most the byte trigger since the snapshot plus the tail's bytes (and an entry)
            assert _log_bytes(d) <= CFG.snapshot_bytes + CFG.snapshot_tail_bytes + 4_000
            # the next snapshot waits for as many bytes as this one holds once it is the larger
            assert d._snapshot_size > 0
        # a restart from the snapshot and the compacted WAL has every write (the log's committed entries
        # re-applied once it runs)
        async with _leading(tmp_path) as again:
            for _ in range(200):
                if again.fsm.mem.count("task") == 60:
                    break
                await asyncio.sleep(0.01)
            assert again.fsm.mem.count("task") == 60
            assert again.fsm.mem.state_hash() == d.fsm.mem.state_hash()

    asyncio.run(main())


def test_a_larger_snapshot_spaces_the_next_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with _leading(tmp_path) as d:
            await _write(d, 100)  # the store grows past the byte trigger: ~200 KB of state
            await d.settle_snapshot()
            first = d.storage.snapshot().index
            size = d._snapshot_size
            assert size > CFG.snapshot_bytes
            await _write(d, 10, start=100)  # ~20 KB: less than the last snapshot's size, no new snapshot
            assert d.storage.snapshot().index == first
            await _write(d, size // 2000 + 5, start=110)  # more than its size since: snapshot again
            await d.settle_snapshot()
            assert d.storage.snapshot().index > first

    asyncio.run(main())
