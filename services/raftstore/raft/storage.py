"""The Storage seam: the durable part of the log as the core sees it, plus an in-memory implementation.

The driver keeps a MemoryStorage in step with the WAL and the snapshot file (entries go into it only after they
are fsynced), so the core never reads a byte that is not durable. After compaction (§7) `first_index()` is past
1 and `snapshot()` holds the state machine up to the compacted point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.raftstore.raft.errors import LogCompacted, LogUnavailable
from services.raftstore.raft.messages import ConfState, Entry, HardState, Snapshot


class Storage(Protocol):
    def initial_state(self) -> HardState:
        """The hard state saved last (the empty one on first start)."""

    def first_index(self) -> int:
        """Index of the first entry still held (1 without a snapshot)."""

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """Term of entry `index`; also defined for first_index()-1 (the snapshot's last entry).
        Raises LogCompacted below that and LogUnavailable past last_index()."""

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), trimmed to about `max_bytes` of data (never to fewer than one entry)."""

    def snapshot(self) -> Snapshot: ...


def limit_size(ents: Sequence[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of `ents` whose data fits in `max_bytes` (at least one entry)."""
    if max_bytes is None or not ents:
        return list(ents)
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data)
        if total > max_bytes and i > 0:
            return list(ents[:i])
    return list(ents)


class MemoryStorage:
    """Storage held in memory. `_ents[0]` is a sentinel for the snapshot's last entry (index 0, term 0 at
    start), which keeps `term(first_index() - 1)` answerable for the log-matching check (§5.3)."""

    def __init__(self) -> None:
        self._hard = HardState()
        self._snap = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    def initial_state(self) -> HardState:
        return self._hard

    def set_hard_state(self, hs: HardState) -> None:
        self._hard = hs

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise LogCompacted(f"raft: index {index} is compacted (first index {offset + 1})")
        if index > self.last_index():
            raise LogUnavailable(f"raft: index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise LogCompacted(f"raft: entries from {lo} are compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"raft: entries up to {hi - 1} asked, last index is {self.last_index()}")
        return limit_size(self._ents[lo - offset:hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snap

    def append(self, ents: Sequence[Entry]) -> None:
        """Add entries, first dropping any suffix they replace (a new leader overwrote it, §5.3)."""
        if not ents:
            return
        first = self.first_index()
        if ents[-1].index < first:
            return  # entirely below the snapshot: already covered
        if ents[0].index < first:
            ents = ents[first - ents[0].index:]
        at = ents[0].index - self._ents[0].index
        if at > len(self._ents):
            raise LogUnavailable(
                f"raft: appending at {ents[0].index} would leave a gap after {self.last_index()}"
            )
        del self._ents[at:]
        self._ents.extend(ents)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader (or loaded at start)."""
        if snap.index < self._snap.index:
            raise LogCompacted(f"raft: snapshot {snap.index} is older than the one held ({self._snap.index})")
        self._snap = snap
        self._ents = [Entry(term=snap.term, index=snap.index)]

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record the state machine as of applied entry `index` (the log is kept; see compact())."""
        if index <= self._snap.index:
            return self._snap
        if index > self.last_index():
            raise LogUnavailable(f"raft: snapshot at {index} is past the last index {self.last_index()}")
        self._snap = Snapshot(index, self.term(index), data, conf)
        return self._snap

    def compact(self, index: int) -> None:
        """Drop entries up to `index` (it becomes the sentinel); they must be covered by the snapshot."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self._snap.index:
            raise AssertionError(f"raft: compacting to {index} past the snapshot at {self._snap.index}")
        del self._ents[:index - offset]
        self._ents[0] = Entry(term=self._ents[0].term, index=self._ents[0].index)  # the sentinel keeps no data

    def all_entries(self) -> list[Entry]:
        """Every held entry (tests and the WAL compare logs with it)."""
        return self._ents[1:]
