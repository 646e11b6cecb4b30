"""The Driver's settings (services/raftstore/driver.py): tick length, batch bounds, snapshot cadence, disk
reserve."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DriverConfig:
    tick: float = 0.1  # seconds per Raft tick
    election_ticks: int = 6  # randomized up to 2x by the core
    heartbeat_ticks: int = 1
    max_batch_entries: int = 1000  # proposals per Ready
    max_batch_bytes: int = 8 << 20
    read_timeout: float = 5.0  # a linearizable read that cannot be confirmed by then is refused (retryable)
    read_resend_ticks: int = 3  # re-send a read-index request unanswered for this many ticks
    #: fsync on a worker thread (the loop keeps serving requests meanwhile) instead of inline; inline is
    #: faster when fsync is sub-millisecond, the thread hand-off then costing more than it overlaps
    fsync_in_thread: bool = False
    snapshot_interval: int = 10_000  # applied entries between snapshots (then the log is compacted)
    snapshot_tail: int = 500  # entries kept after compaction, so a briefly lagging follower needs no snapshot
    #: a snapshot is also taken once the entries applied since the last one hold this many bytes, or as many
    #: as the last snapshot if that is more (the log's memory bounded, snapshots amortized over the writes)
    snapshot_bytes: int = 8 << 20
    #: members take their first snapshot a member-dependent part of the way through the interval (and bytes),
    #: so they never all write one at the same index (driver_snapshots.py `_head_start`)
    snapshot_stagger: bool = True
    snapshot_tail_bytes: int = 2 << 20  # the tail kept after compaction holds at most this many bytes of entries
    #: the leader refuses new writes while the data directory's file system has less free space than this
    disk_reserve: int = 16 << 20
