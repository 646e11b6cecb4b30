"""The Driver's snapshots (services/raftstore/driver.py): taking one of the state machine and compacting the
log and the WAL behind it, re-sealing both under a rotated data key, and the disk-space reserve. A part of
`Driver`, which holds the state."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from services.raftstore import snapfile
from services.raftstore.atrest import Sealer
from services.raftstore.fsm import FSM
from services.raftstore.membership import Membership
from services.raftstore.raft import Entry, Snapshot
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

    def snapshot_due(self, applied: Sequence[Entry]) -> bool:
        """Whether to snapshot (and compact) after applying `applied`: `snapshot_interval` entries since the
        last snapshot, or `snapshot_bytes` of them — or as many bytes as the last snapshot held, whichever is
        more, so that a large store is not re-encoded for every few MiB of writes. A log of batched
        transactions (500 tasks an entry) reached 40 MiB at 10,000 tasks in ~300 entries: the count alone
        never triggered, and the whole log stayed in memory."""
        self._log_bytes += sum(len(e.data) for e in applied)
        if self.fsm.applied_index - self.storage.snapshot().index >= self.cfg.snapshot_interval:
            return True
        return self._log_bytes >= max(self.cfg.snapshot_bytes, self._snapshot_size)

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
                snap = self.storage.create_snapshot(index, new.conf, new.data)
                self._log_bytes, self._snapshot_size = 0, len(new.data)
                self.metrics.inc("raft_snapshots_taken_total", 1, "snapshots of the state machine taken")
                log.info("raftstore %d: snapshot at index %d (%d bytes)", self.id, snap.index, len(snap.data))
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
            if resealing:
                self._reseal = False
                if self.on_resealed is not None:
                    self.on_resealed()
        except OSError as e:
            self.metrics.inc("raft_snapshot_failures_total", 1, "snapshots or compactions that failed to write")
            log.error("raftstore %d: snapshot/compaction at index %d failed: %s; keeping the longer log",
                      self.id, index, e)
        return snap

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
