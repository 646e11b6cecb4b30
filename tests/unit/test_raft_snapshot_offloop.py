"""Snapshots off the event loop (services/raftstore/driver_snapshots.py): a snapshot is captured on the loop,
encoded, sealed, written and fsynced on a worker thread while writes go on, then put in the raft storage and the
WAL cut between Readies; a crash at any point of it restarts to the same state; members stagger their
snapshots. Real drivers over real WALs and snapshot files on disk."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.raftstore import driver_snapshots, snapfile
from services.raftstore.atrest import Sealer
from services.raftstore.driver import Driver, DriverConfig
from services.raftstore.fsm import FSM, encode_txn
from services.raftstore.membership import Membership
from services.raftstore.raft import Message
from services.raftstore.wal import WAL
from shoal.store import txn as t
from shoal.store.txn import TxnResult
from tests.unit.test_raftstore_snapshot_bytes import SEALER, _NoPeers
from tests.unit.test_raftstore_snapshot_bytes import _driver as snapshot_bytes_driver

CFG = DriverConfig(tick=0.01, election_ticks=10, snapshot_interval=10_000, snapshot_bytes=40_000,
                   snapshot_tail=5, snapshot_tail_bytes=10_000)


def _driver(path: Path, cfg: DriverConfig = CFG) -> Driver:
    return snapshot_bytes_driver(path, cfg)


async def _stop_all(net: _Net, tasks: list[asyncio.Task[None]]) -> None:
    for d in net.drivers.values():
        d.stop()
    await asyncio.gather(*tasks)
    for d in net.drivers.values():
        d.wal.close()


@contextlib.asynccontextmanager
async def _leading(path: Path, cfg: DriverConfig = CFG) -> AsyncIterator[Driver]:
    """A single-member driver over `path`, running and leading, with everything it replayed applied."""
    d = _driver(path, cfg)
    run = asyncio.create_task(d.run())
    try:
        for _ in range(1000):
            if d.is_leader and d.fsm.applied_index >= d.storage.last_index():
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the single member never led and applied its log")
        yield d
    finally:
        d.stop()
        await run
        d.wal.close()


def _body(i: int) -> dict[str, Any]:
    return {"ops": [t.create("task", {"id": f"t{i:05d}", "blob": "x" * 2000})], "time": float(i)}


async def _write(d: Driver, i: int) -> None:
    body = _body(i)
    await d.propose(encode_txn(body), parsed=body)


def test_the_chunked_encoding_is_the_snapshot_encoding() -> None:
    fsm = FSM()
    for i in range(1, 2600):  # more than two chunks of one kind, and an empty kind or two
        fsm.mem.apply({"ops": [t.create("task", {"id": f"t{i:05d}", "n": i})], "time": 1.0}, i)
    ms = Membership()
    assert driver_snapshots.encode_captured(fsm.mem.snapshot(), ms.to_json()) == \
        driver_snapshots.encode_state(fsm, ms)
    json.loads(driver_snapshots.encode_captured(FSM().mem.snapshot(), ms.to_json()))  # an empty store too


def test_writes_are_acknowledged_while_the_snapshot_is_written(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot file's write is held on its thread: writes go on being applied and acknowledged; once it
    is released, the snapshot (as of its capture, not of the later writes) goes into the storage and the log
    is compacted. Written on the loop, as before, the held write stalled every acknowledgement."""
    held, release = threading.Event(), threading.Event()
    timed_out: list[bool] = []
    real = snapfile.save

    def held_save(data_dir: Path, snap: Any, sealer: Sealer) -> None:
        held.set()
        timed_out.append(not release.wait(5.0))
        real(data_dir, snap, sealer)

    monkeypatch.setattr(snapfile, "save", held_save)

    async def main() -> None:
        async with _leading(tmp_path) as d:
            i = 0
            while not held.is_set():
                assert i < 200, "no snapshot was started by the byte trigger"
                await _write(d, i)
                i += 1
            captured = d.fsm.applied_index
            started = time.monotonic()
            for j in range(i, i + 30):  # ~60 KB more: past the trigger again, but one snapshot at a time
                await asyncio.wait_for(_write(d, j), 3.0)
            assert time.monotonic() - started < 3.0
            assert not timed_out, "the held snapshot write stalled the writes (it ran on the loop)"
            assert d.storage.snapshot().index == 0, "the snapshot was in the storage before it was durable"
            assert d.fsm.mem.count("task") == i + 30
            release.set()
            await d.settle_snapshot()
            snap = d.storage.snapshot()
            assert 0 < snap.index <= captured + 1  # the capture's index (a no-op may be applied with it)
            assert json.loads(snap.data)["store"]["revision"] == snap.index
            assert len(json.loads(snap.data)["store"]["objects"]["task"]) < i + 30
            assert d.storage.first_index() > 1, "the log was not compacted behind the snapshot"
            on_disk = snapfile.load(tmp_path, SEALER)
            assert on_disk is not None and on_disk.index == snap.index
            want = d.fsm.mem.state_hash()
        monkeypatch.setattr(snapfile, "save", real)
        async with _leading(tmp_path) as again:
            assert again.fsm.mem.count("task") == i + 30
            assert again.fsm.mem.state_hash() == want

    asyncio.run(main())


POINTS = ("before-file", "file-tmp-left", "after-file", "before-wal-cut", "wal-tmp-left", "after-wal-cut")


def test_a_crash_at_any_point_of_a_snapshot_restarts_to_the_same_state(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The member's data directory is copied as a crash would leave it at each point of a snapshot — before
    the snapshot file is written, mid-write (its .tmp left behind), after its fsync and rename, before the WAL
    cut, mid-cut (the WAL's .tmp left), after the cut — while writes go on. Each copy restarts to a state that
    holds every write acknowledged before the copy, and equals the original's state after as many writes."""
    live = tmp_path / "live"
    copies: dict[str, tuple[Path, int]] = {}
    acked = [0]

    def crash_image(point: str, tmp_name: str | None = None) -> None:
        if point in copies:
            return
        at = acked[0]
        dst = tmp_path / point
        shutil.copytree(live, dst, ignore=shutil.ignore_patterns("LOCK"))
        if tmp_name is not None:
            (dst / tmp_name).write_bytes(b"half a file" * 100)
        copies[point] = (dst, at)

    real_durable = snapfile.write_durable

    def durable(path: Path, data: bytes) -> None:
        crash_image("before-file")
        crash_image("file-tmp-left", snapfile.FILE_NAME + ".tmp")
        real_durable(path, data)
        crash_image("after-file")

    monkeypatch.setattr(snapfile, "write_durable", durable)
    hashes: dict[int, str] = {}

    async def main() -> None:
        async with _leading(live) as d:
            real_rewrite = d.wal.rewrite

            def rewrite(*args: Any, **kwargs: Any) -> None:
                crash_image("before-wal-cut")
                crash_image("wal-tmp-left", "wal.tmp")
                real_rewrite(*args, **kwargs)
                crash_image("after-wal-cut")

            d.wal.rewrite = rewrite  # type: ignore[method-assign]

            def record(_: TxnResult) -> None:
                hashes[d.fsm.mem.count("task")] = d.fsm.mem.state_hash()

            d.on_commit = record
            i = 0
            while len(copies) < len(POINTS) or i < 60:
                assert i < 400, f"crash points never reached: {sorted(set(POINTS) - set(copies))}"
                await _write(d, i)
                i += 1
                acked[0] = i
        monkeypatch.setattr(snapfile, "write_durable", real_durable)
        for point in POINTS:
            path, at = copies[point]
            async with _leading(path) as again:
                n = again.fsm.mem.count("task")
                assert n >= at, f"{point}: {at} writes were acknowledged, the restarted member has {n}"
                assert again.fsm.mem.state_hash() == hashes[n], f"{point}: a different state after {n} writes"

    asyncio.run(main())


class _Net:
    """Three drivers wired in process: each message delivered on the next loop turn."""

    def __init__(self) -> None:
        self.drivers: dict[int, Driver] = {}

    def sender(self) -> Any:
        net = self

        class _Sender:
            def send(self, msgs: Sequence[Message]) -> None:
                loop = asyncio.get_running_loop()
                for m in msgs:
                    target = net.drivers.get(m.to)
                    if target is not None:
                        loop.call_soon(target.receive, m)

        return _Sender()


def test_members_do_not_snapshot_at_the_same_index(tmp_path: Path) -> None:
    """Three members that started together take their snapshots at indexes a part of an interval apart,
    not all at the same one (which stalled the leader and both followers at once)."""
    cfg = DriverConfig(tick=0.01, election_ticks=10, snapshot_interval=60, snapshot_tail=5)
    net = _Net()
    for i in (1, 2, 3):
        (tmp_path / str(i)).mkdir()
        wal, replayed = WAL.open(tmp_path / str(i), SEALER)
        net.drivers[i] = Driver(i, [1, 2, 3], wal, replayed, FSM(), net.sender(), cfg, rng=random.Random(i))
    first: dict[int, int] = {}

    async def main() -> None:
        tasks = [asyncio.create_task(d.run()) for d in net.drivers.values()]
        try:
            for _ in range(500):
                leaders = [d for d in net.drivers.values() if d.is_leader]
                if leaders:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("no leader")
            lead = leaders[0]
            for i in range(120):
                body = {"ops": [t.create("config", {"id": f"c{i}", "data": "x"})], "time": float(i)}
                await lead.propose(encode_txn(body), parsed=body)
                for d in net.drivers.values():
                    await d.settle_snapshot()
                    if d.id not in first and d.storage.snapshot().index:
                        first[d.id] = d.storage.snapshot().index
        finally:
            await _stop_all(net, tasks)

    asyncio.run(main())
    assert sorted(first) == [1, 2, 3], f"not every member took a snapshot: {first}"
    assert len(set(first.values())) == 3, f"members snapshotted at the same index: {first}"
    spread = sorted(first.values())
    assert min(b - a for a, b in itertools.pairwise(spread)) >= 60 // 10, first


def test_a_leader_snapshot_waits_for_the_one_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower whose own snapshot is being written (held on its thread) is sent the leader's snapshot: it
    installs it only after its own file landed, so `snapshot.bin` ends up the leader's (newer) one — an older file
    landing over it would leave a WAL that starts past its snapshot, and the member could not restart."""
    cfg = DriverConfig(tick=0.01, election_ticks=10, snapshot_interval=30, snapshot_tail=2,
                       snapshot_stagger=False)
    dirs = {i: tmp_path / str(i) for i in (1, 2, 3)}
    held, release = threading.Event(), threading.Event()
    real = snapfile.save

    def save(data_dir: Path, snap: Any, sealer: Sealer) -> None:
        if data_dir == dirs[3] and threading.current_thread() is not threading.main_thread():
            held.set()
            release.wait(10.0)
        real(data_dir, snap, sealer)

    monkeypatch.setattr(snapfile, "save", save)
    cut = {"on": False}
    net = _Net()
    send = net.sender()

    class _Cut:
        def send(self, msgs: Sequence[Message]) -> None:
            send.send([m for m in msgs if not (cut["on"] and 3 in (m.frm, m.to))])

    for i in (1, 2, 3):
        dirs[i].mkdir()
        wal, replayed = WAL.open(dirs[i], SEALER)
        net.drivers[i] = Driver(i, [1, 2, 3], wal, replayed, FSM(), _Cut(), cfg, rng=random.Random(i))
    n = [0]

    async def write(lead: Driver, count: int) -> None:
        for _ in range(count):
            body = {"ops": [t.create("config", {"id": f"c{n[0]}", "data": "x"})], "time": float(n[0])}
            n[0] += 1
            await lead.propose(encode_txn(body), parsed=body)

    async def main() -> None:
        tasks = [asyncio.create_task(d.run()) for d in net.drivers.values()]
        try:
            for _ in range(500):
                leaders = [d for d in net.drivers.values() if d.is_leader and d.id != 3]
                if leaders:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("no leader among members 1 and 2")
            lead, f3 = leaders[0], net.drivers[3]
            while not held.is_set():  # member 3 starts its own snapshot, held on its thread
                assert n[0] < 200, "member 3 never started a snapshot"
                await write(lead, 1)
            cut["on"] = True
            await write(lead, 100)  # the leader compacts past what member 3 holds
            assert lead.storage.first_index() > f3.storage.last_index() + 1
            cut["on"] = False
            for _ in range(100):  # the leader's snapshot reaches member 3, which waits for its own write
                await asyncio.sleep(0.01)
            assert f3.fsm.mem.count("config") < n[0]
            release.set()
            for _ in range(500):
                if f3.fsm.mem.count("config") == n[0]:
                    break
                await asyncio.sleep(0.01)
            assert f3.fsm.mem.count("config") == n[0], "member 3 did not catch up from the leader's snapshot"
        finally:
            release.set()
            await _stop_all(net, tasks)

    asyncio.run(main())
    on_disk = snapfile.load(dirs[3], SEALER)
    assert on_disk is not None and on_disk.index == net.drivers[3].storage.snapshot().index
    wal, replayed = WAL.open(dirs[3], SEALER)  # restarts: the WAL does not start past the snapshot
    try:
        again = Driver(3, [1, 2, 3], wal, replayed, FSM(), _NoPeers(), cfg, snapshot=on_disk)
        assert again.storage.snapshot().index == on_disk.index
    finally:
        wal.close()
