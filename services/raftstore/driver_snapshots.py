"""The Driver's snapshots (services/raftstore/driver.py): taking one of the state machine and compacting the
log and the WAL behind it, re-sealing both under a rotated data key, and the disk-space reserve. A part of
`Driver`, which holds the state.

A due snapshot is taken off the event loop, in three steps (docs/raftstore.md, "Snapshots off the loop"):
`start_snapshot` captures the store and the membership at the applied index on the loop (lists of the store's
objects, which are replaced and never changed in place: ~0.5 ms for 20,000 objects); a worker thread encodes,
seals, writes and fsyncs `snapshot.bin` (hundreds of ms for a large store) while Readies go on;
`finish_snapshot`, back on the loop between two Readies, puts it in the raft storage, compacts the log and cuts
the WAL. One at a time. Members stagger their first snapshot (`_head_start`) so that they do not all write at
the same index."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.raftstore import snapfile
from services.raftstore.atrest import Sealer
from services.raftstore.fsm import FSM
from services.raftstore.membership import Membership
from services.raftstore.raft import ConfState, Entry, Snapshot
from shoal import wire

if TYPE_CHECKING:
    from services.raftstore.driver_config import DriverConfig
    from services.raftstore.raft import MemoryStorage, RawNode
    from services.raftstore.wal import WAL
    from shoal.metrics import Registry

log = logging.getLogger("services.raftstore.driver")


def encode_state(fsm: FSM, membership: Membership) -> bytes:
    """A snapshot's data: the object store and the membership table, as of the same applied index (compact
    JSON; orjson, ~5x the standard library on a store of 100,000 tasks)."""
    return wire.dumps({"store": fsm.mem.snapshot(), "membership": membership.to_json()})


#: objects encoded per orjson call by `encode_captured`: the encoder holds the GIL for a whole call, so a worker
#: thread encoding a large store hands the loop its turn between chunks (~1 ms each) instead of after ~20 ms
ENCODE_CHUNK = 1000


def encode_captured(store: dict[str, Any], membership: dict[str, Any]) -> bytes:
    """`encode_state`'s bytes, from a capture (`MemoryStore.snapshot()` and `Membership.to_json()`), encoded a
    chunk of objects at a time."""
    parts = [b'{"store":{"revision":', wire.dumps(store["revision"]), b',"objects":{']
    for n, (kind, objs) in enumerate(store["objects"].items()):
        parts += [b"," if n else b"", wire.dumps(kind), b":["]
        for i in range(0, len(objs), ENCODE_CHUNK):
            parts += [b"," if i else b"", wire.dumps(objs[i:i + ENCODE_CHUNK])[1:-1]]
        parts.append(b"]")
    parts += [b'}},"membership":', wire.dumps(membership), b"}"]
    return b"".join(parts)


def write_snapshot(data_dir: Path, index: int, term: int, conf: ConfState, store: dict[str, Any],
                   membership: dict[str, Any], sealer: Sealer) -> Snapshot:
    """The worker thread's part: encode a capture, seal it, write and fsync `snapshot.bin` (atomically)."""
    snap = Snapshot(index, term, encode_captured(store, membership), conf)
    snapfile.save(data_dir, snap, sealer)
    return snap


class DriverSnapshots:
    """The snapshot methods of `Driver`; the attributes below are the driver's."""

    id: int
    cfg: DriverConfig
    node: RawNode
    fsm: FSM
    wal: WAL
    storage: MemoryStorage
    membership: Membership
    metrics: Registry
    on_resealed: Callable[[], None] | None
    _reseal: bool
    _wake: asyncio.Event
    #: bytes of the entries applied since the last snapshot, and the size of that snapshot
    _log_bytes: int = 0
    _snapshot_size: int = 0
    #: the snapshot being written on a worker thread (at most one), and `_log_bytes` when it was captured
    _snap_job: asyncio.Future[Snapshot] | None = None
    _snap_job_bytes: int = 0
    #: this member started a snapshot since it started: its head start is spent
    _snapped: bool = False

    def snapshot_due(self, applied: Sequence[Entry]) -> bool:
        """Whether to snapshot (and compact) after applying `applied`: `snapshot_interval` entries since the
        last snapshot, or `snapshot_bytes` of them — or as many bytes as the last snapshot held, whichever is
        more, so that a large store is not re-encoded for every few MiB of writes. A log of batched
        transactions (500 tasks an entry) reached 40 MiB at 10,000 tasks in ~300 entries: the count alone
        never triggered, and the whole log stayed in memory."""
        self._log_bytes += sum(len(e.data) for e in applied)
        if self._snap_job is not None:
            return False  # one at a time: the next is judged after this one is in the storage
        ahead = 1.0 - self._head_start()
        if self.fsm.applied_index - self.storage.snapshot().index >= self.cfg.snapshot_interval * ahead:
            return True
        return self._log_bytes >= max(self.cfg.snapshot_bytes, self._snapshot_size) * ahead

    def _head_start(self) -> float:
        """The fraction of its first snapshot's interval (and bytes) a member counts as done already, from its
        id (the golden ratio's multiples spread ids 1, 2, 3 to 0.62, 0.24, 0.85): members that started
        together then snapshot a third of an interval apart, and keep that phase, instead of all stalling
        their disk at the same index. 0 once the member took a snapshot, and with `snapshot_stagger` off."""
        if self._snapped or not self.cfg.snapshot_stagger:
            return 0.0
        return (self.id * 0.6180339887498949) % 1.0

    def start_snapshot(self) -> None:
        """Capture the state machine at the applied index (on the loop, cheap) and write the snapshot on a
        worker thread; `finish_snapshot` takes it from there. Nothing to do with one already in flight."""
        index = self.fsm.applied_index
        if self._snap_job is not None or index <= self.storage.snapshot().index:
            return
        self._snapped = True
        self._snap_job_bytes = self._log_bytes
        job = asyncio.get_running_loop().run_in_executor(
            None, write_snapshot, self.wal.path.parent, index, self.storage.term(index), self.node.conf_state(),
            self.fsm.mem.snapshot(), self.membership.to_json(), self.wal.sealer)
        job.add_done_callback(lambda _: self._wake.set())
        self._snap_job = job

    def finish_snapshot(self) -> None:
        """Between Readies, once the worker thread is done: the written snapshot into the raft storage, then
        compact the log and cut the WAL behind it. A failed write (disk full) is logged and counted: the older
        snapshot and the longer log stay, and the next one is tried after another interval."""
        job = self._snap_job
        if job is None or not job.done():
            return
        self._snap_job = None
        try:
            new = job.result()
        except OSError as e:
            self.metrics.inc("raft_snapshot_failures_total", 1, "snapshots or compactions that failed to write")
            log.error("raftstore %d: snapshot failed: %s; keeping the longer log", self.id, e)
            return
        if new.index <= self.storage.snapshot().index:
            return  # the leader's snapshot, newer, was installed meanwhile (after this one's file: see _install)
        snap = self._created(new)
        self._log_bytes = max(0, self._log_bytes - self._snap_job_bytes)
        try:
            self._compact(snap, resealing=False)
        except OSError as e:
            self.metrics.inc("raft_snapshot_failures_total", 1, "snapshots or compactions that failed to write")
            log.error("raftstore %d: compaction after the snapshot at %d failed: %s; keeping the longer log",
                      self.id, snap.index, e)

    async def settle_snapshot(self) -> None:
        """Wait for the snapshot in flight, if any, and finish it: before anything else writes `snapshot.bin`
        or rewrites the WAL (the leader's snapshot, a re-seal, a snapshot for a new member)."""
        job = self._snap_job
        if job is not None:
            await asyncio.wait([job])
            self.finish_snapshot()

    def _created(self, new: Snapshot) -> Snapshot:
        """`new`, durable in `snapshot.bin`, recorded in the raft storage."""
        snap = self.storage.create_snapshot(new.index, new.conf, new.data)
        self._snapshot_size = len(new.data)
        self.metrics.inc("raft_snapshots_taken_total", 1, "snapshots of the state machine taken")
        log.info("raftstore %d: snapshot at index %d (%d bytes)", self.id, snap.index, len(snap.data))
        return snap

    def reseal(self, sealer: Sealer) -> None:
        """Seal new records under `sealer` (a rotated data key) and re-encrypt the snapshot file and the WAL
        with a snapshot taken as soon as no Ready is pending; `on_resealed` is called when that is durable. Crash-safe
        at every step: the old key stays in the key set until then, and each file is replaced atomically."""
        self.wal.sealer = sealer
        self._reseal = True
        self._wake.set()

    def take_snapshot(self, *, compact: bool = True) -> Snapshot:
        """Snapshot the state machine as of the last applied entry; with `compact`, drop all but the last
        `snapshot_tail` entries from the log and the WAL. A failure to write (disk full) is logged and leaves
        the previous snapshot and the longer log in place: it is tried again after the next interval.
        After `reseal()` the snapshot file and the whole WAL are rewritten under the new key, even with
        nothing new to snapshot."""
        index = self.fsm.applied_index
        snap = self.storage.snapshot()
        resealing = self._reseal
        try:
            if resealing and index <= snap.index and snap.index > 0:
                snapfile.save(self.wal.path.parent, snap, self.wal.sealer)
            if index > snap.index:
                new = Snapshot(index, self.storage.term(index), encode_state(self.fsm, self.membership),
                               self.node.conf_state())
                # durable first, then the log may rely on it
                snapfile.save(self.wal.path.parent, new, self.wal.sealer)
                snap = self._created(new)
                self._log_bytes = 0
            self._compact(snap, resealing=resealing, compact=compact)
            if resealing:
                self._reseal = False
                if self.on_resealed is not None:
                    self.on_resealed()
        except OSError as e:
            self.metrics.inc("raft_snapshot_failures_total", 1, "snapshots or compactions that failed to write")
            log.error("raftstore %d: snapshot/compaction at index %d failed: %s; keeping the longer log",
                      self.id, index, e)
        return snap

    def _compact(self, snap: Snapshot, *, resealing: bool, compact: bool = True) -> None:
        """Drop the log behind `snap` (durable already) but its tail, in the WAL first (an atomic rewrite),
        then in memory; `resealing`, rewrite the WAL under the current key even with nothing to drop."""
        cut = self._tail_cut(snap.index)
        if compact and cut >= self.storage.first_index():
            kept = self.storage.entries(cut + 1, self.storage.last_index() + 1)
            self.wal.rewrite(cut, self.storage.term(cut), self.storage.initial_state(), kept)
            self.storage.compact(cut)
            self.metrics.inc("raft_compactions_total", 1, "log compactions")
        elif resealing:
            first = self.storage.first_index()
            kept = self.storage.entries(first, self.storage.last_index() + 1)
            self.wal.rewrite(first - 1, self.storage.term(first - 1), self.storage.initial_state(), kept)

    def _tail_cut(self, index: int) -> int:
        """The last entry compaction may drop behind a snapshot at `index`: the tail after it is at most
        `snapshot_tail` entries and `snapshot_tail_bytes` bytes of them (at least one entry kept when any)."""
        cut = index - self.cfg.snapshot_tail
        first = max(cut + 1, self.storage.first_index())
        if first > index:
            return cut
        held = 0
        for e in reversed(self.storage.entries(first, index + 1)):
            held += len(e.data)
            if held > self.cfg.snapshot_tail_bytes and e.index < index:
                return e.index
        return cut

    def disk_full(self) -> str | None:
        """Why new writes should be refused for lack of disk space, or None."""
        try:
            st = os.statvfs(self.wal.path.parent)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        if free >= self.cfg.disk_reserve:
            return None
        return (f"store: raft member {self.id}'s data disk has {free} bytes free, under the reserve of "
                f"{self.cfg.disk_reserve} (SHOAL_DISK_RESERVE); writes are refused until space is freed")
