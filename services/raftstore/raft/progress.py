"""Progress: the leader's view of one follower (Figure 2's nextIndex/matchIndex) plus flow control.

A follower is either probed (one AppendEntries at a time until we find where its log matches ours, §5.3),
replicated to (entries streamed optimistically, at most `max_inflight` unacknowledged messages), or sent a
snapshot (§7: it needs entries we compacted; nothing else goes to it until it acknowledges the snapshot)."""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of the AppendEntries messages sent and not yet acknowledged, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        while self._q and self._q[0] <= index:
            self._q.popleft()

    def free_first(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # in PROBE: an append is outstanding, wait for its answer or a heartbeat
        self.recent_active = False  # heard from during this election timeout (CheckQuorum)
        self.pending_snapshot = 0  # in SNAPSHOT: the index of the snapshot sent
        self.snapshot_waits = 0  # in SNAPSHOT: heartbeat answers seen without the snapshot being acknowledged
        self.inflights = Inflights(max_inflight)

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_waits = 0
        self.next = index + 1
        self.probe_sent = False
        self.inflights.reset()

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.SNAPSHOT:
            return True
        return self.inflights.full()

    def maybe_update(self, index: int) -> bool:
        """A successful AppendEntries reply up to `index`; False if it says nothing new (stale/duplicate)."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def sent_entries(self, last_index: int) -> None:
        """Entries up to `last_index` are on their way."""
        if self.state == ProgressState.REPLICATE:
            self.next = last_index + 1  # optimistic: assume they will be accepted
            self.inflights.add(last_index)
        else:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """A rejected AppendEntries whose prevLogIndex was `rejected`; `hint` is the highest index that may
        still match. False if the rejection is stale (answers a message we no longer care about)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.state == ProgressState.SNAPSHOT:
            return False  # answers an append sent before the snapshot
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
                f"paused={self.is_paused()}, inflight={len(self.inflights)})")
