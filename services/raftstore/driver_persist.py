"""The Driver's persist step (services/raftstore/driver.py `_handle_ready`, step 1): one Ready's entries and hard
state to the WAL with one fsync, then into the in-memory storage. A part of `Driver`, which holds the state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from services.raftstore.raft import HardState, Message, Ready

if TYPE_CHECKING:
    from services.raftstore.driver_config import DriverConfig
    from services.raftstore.raft import MemoryStorage
    from services.raftstore.wal import WAL
    from shoal.metrics import Registry


class Sender(Protocol):
    def send(self, msgs: Sequence[Message]) -> None:
        """Hand messages to the network; must never block (drop instead)."""


class DriverPersist:
    """The persist method of `Driver`; the attributes below are the driver's."""

    cfg: DriverConfig
    wal: WAL
    storage: MemoryStorage
    sender: Sender
    metrics: Registry
    #: a hard state that only moved the commit index, not written yet
    _unsaved_hs: HardState | None

    async def _persist(self, rd: Ready, early: Sequence[Message]) -> None:
        """Make `rd`'s entries and hard state durable (one fsync), sending the leader's `early` appends meanwhile
        (they must be sent whatever happens here: the caller already left them out of the later sends)."""
        started = time.perf_counter()
        hs = rd.hard_state
        if not rd.entries and not rd.must_sync:
            # Only the commit index moved: it need not be durable (a member learns it again from the
            # leader), so it is not written on its own — the next write of entries or term/vote carries it.
            self._unsaved_hs = hs
            hs = None
        elif hs is None:
            hs = self._unsaved_hs
        if hs is None and not rd.entries:
            if early:
                self.sender.send(early)
        elif rd.must_sync and (early or self.cfg.fsync_in_thread):
            # The leader's write and fsync start on a worker thread *before* its appends are handed to the
            # peers: a send on loopback wakes the follower, which on a busy machine takes the leader's core
            # for a while (~0.5-1.5 ms per send measured under load) — the disk is busy meanwhile instead of
            # waiting for the leader to get its core back.
            saving = asyncio.get_running_loop().run_in_executor(None, self.wal.save, hs, rd.entries)
            if early:
                self.sender.send(early)
            try:
                await saving
            except asyncio.CancelledError:
                await asyncio.wait([saving])  # the thread still writes: never leave it to a closed file
                raise
            self._unsaved_hs = None
        else:
            if early:
                self.sender.send(early)
            self.wal.save(hs, rd.entries, sync=rd.must_sync)
            self._unsaved_hs = None
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        if rd.must_sync:
            self.metrics.inc("raft_fsyncs_total", 1, "WAL fsyncs (one per Ready with new entries/term/vote)")
            self.metrics.observe("raft_fsync_duration_seconds", time.perf_counter() - started,
                                 "WAL write and fsync of one Ready (entries, term, vote)")
        if rd.entries:
            self.metrics.inc("raft_persisted_entries_total", len(rd.entries), "entries made durable")
