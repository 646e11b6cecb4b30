"""The Driver's persist step (services/raftstore/driver.py `_handle_ready`, step 1): one Ready's entries and hard
state to the WAL with one fsync, then into the in-memory storage. A part of `Driver`, which holds the state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from services.raftstore.raft import Message, Ready

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

    async def _persist(self, rd: Ready, early: Sequence[Message], meanwhile: Callable[[], None] | None = None
                       ) -> bool:
        """Make `rd`'s entries and hard state durable (one fsync), sending the leader's `early` appends meanwhile
        (they must be sent whatever happens here: the caller already left them out of the later sends). When the
        write and fsync run on a worker thread, `meanwhile` is called on the loop while they do (the driver
        applies what was committed and durable before this Ready); returns whether it was called."""
        started = time.perf_counter()
        # A hard state that only moved the commit index is written without an fsync (as etcd's MustSync says):
        # it need not be durable for Raft, but it is what a restarted member — and `SHOAL_FORCE_NEW_CLUSTER`,
        # which keeps only committed entries — knows of the commit. Not writing it at all lost a write the
        # survivor had applied in tests/integration/test_raft_membership.py's force-new-cluster test.
        hs = rd.hard_state
        if rd.must_sync and (early or self.cfg.fsync_in_thread):
            # The leader's write and fsync start on a worker thread *before* its appends are handed to the
            # peers: a send on loopback wakes the follower, which on a busy machine takes the leader's core
            # for a while (~0.5-1.5 ms per send measured under load) — the disk is busy meanwhile instead of
            # waiting for the leader to get its core back.
            saving = asyncio.get_running_loop().run_in_executor(None, self.wal.save, hs, rd.entries)
            if early:
                self.sender.send(early)
            called = meanwhile is not None
            if meanwhile is not None:
                try:
                    meanwhile()
                except BaseException:
                    await asyncio.wait([saving])  # the thread still writes: never leave it to a closed file
                    raise
            try:
                await saving
            except asyncio.CancelledError:
                await asyncio.wait([saving])  # the thread still writes: never leave it to a closed file
                raise
        else:
            called = False
            if early:
                self.sender.send(early)
            self.wal.save(hs, rd.entries, sync=rd.must_sync)
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        if rd.must_sync:
            self.metrics.inc("raft_fsyncs_total", 1, "WAL fsyncs (one per Ready with new entries/term/vote)")
            self.metrics.observe("raft_fsync_duration_seconds", time.perf_counter() - started,
                                 "WAL write and fsync of one Ready (entries, term, vote)")
        if rd.entries:
            self.metrics.inc("raft_persisted_entries_total", len(rd.entries), "entries made durable")
        return called
