"""RaftLog: the log as the core sees it — durable entries in Storage, followed by `unstable` entries appended
since the last Ready (not yet fsynced), plus the commit and apply cursors.

Invariant: applied <= committed <= last_index(). Entries below `unstable_offset` are read from Storage, the
rest from `unstable` (which may replace a suffix of Storage after a conflict, §5.3). A snapshot received from
the leader (§7) waits in `pending_snapshot` until the driver has made it durable: meanwhile the log starts
right after it and nothing below it can be read."""

from __future__ import annotations

from collections.abc import Sequence

from services.raftstore.raft.errors import LogCompacted, LogUnavailable, MessageRefused
from services.raftstore.raft.messages import Entry, Snapshot
from services.raftstore.raft.storage import Storage, limit_size


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.pending_snapshot: Snapshot | None = None
        self.unstable_offset = storage.last_index() + 1
        # The state machine starts from the snapshot, which may be newer than the first entry kept (the log
        # keeps a tail before it for slow followers).
        self.committed = max(storage.first_index() - 1, storage.snapshot().index)
        self.applied = self.committed

    # ---- positions -----------------------------------------------------------------------------------------
    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """Term of the entry at `index`; raises LogCompacted / LogUnavailable outside the held range."""
        ps = self.pending_snapshot
        if ps is not None and index <= ps.index:
            if index == ps.index:
                return ps.term
            raise LogCompacted(f"raft: index {index} is inside the snapshot at {ps.index}")
        if index >= self.unstable_offset:
            k = index - self.unstable_offset
            if k < len(self.unstable):
                return self.unstable[k].term
            raise LogUnavailable(f"raft: index {index} is past the last index {self.last_index()}")
        return self.storage.term(index)

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (LogCompacted, LogUnavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours if its last term is higher, or equal
        with a last index at least as long."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    # ---- reading entries ----------------------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) from Storage and/or unstable, limited to about `max_bytes` of data."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise LogCompacted(f"raft: entries from {lo} are compacted (first index {self.first_index()})")
        out: list[Entry] = []
        if lo < self.unstable_offset:
            out = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            if len(out) < min(hi, self.unstable_offset) - lo:
                return out  # trimmed by size: do not continue into unstable
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            out.extend(self.unstable[start:hi - self.unstable_offset])
        return limit_size(out, max_bytes)

    def entries_from(self, index: int, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(index, self.last_index() + 1, max_bytes)

    def has_next_committed(self) -> bool:
        return self.pending_snapshot is None and self.committed > self.applied

    def next_committed(self, max_bytes: int | None = None) -> list[Entry]:
        """Committed entries not yet applied. They may still be unstable: the driver persists a Ready's entries
        before it applies that Ready's committed entries. None while a snapshot waits to be applied."""
        if self.pending_snapshot is not None:
            return []
        return self.slice(self.applied + 1, self.committed + 1, max_bytes)

    # ---- changing the log ---------------------------------------------------------------------------------
    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry of `ents` that is new or disagrees in term with ours (0: all present)."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term`: where a rejected AppendEntries can resume
        (the §5.3 optimisation of backing up a whole term at a time)."""
        index = min(index, self.last_index())
        while index > 0:
            try:
                if self.term(index) <= term:
                    return index
            except LogCompacted:
                return index
            index -= 1
        return 0

    def maybe_append(self, index: int, log_term: int, committed: int, ents: Sequence[Entry]) -> int | None:
        """AppendEntries receiver (Figure 2, steps 2-5). Returns the last index now known to match the leader,
        or None if our log has no entry at `index` with `log_term` (the leader must back up)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                # Only a lying leader sends this (§5.4 Leader Completeness): refuse it before changing anything.
                raise MessageRefused(
                    f"raft: entry {conflict} conflicts with a committed entry (committed {self.committed})"
                )
            self.append(ents[conflict - index - 1:])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: Sequence[Entry]) -> int:
        """Append entries (truncating whatever they replace); returns the new last index."""
        if not ents:
            return self.last_index()
        after = ents[0].index
        if after <= self.committed:
            raise AssertionError(f"raft: appending at {after} would overwrite committed {self.committed}")
        end = self.unstable_offset + len(self.unstable)
        if after == end:
            self.unstable.extend(ents)
        elif after <= self.unstable_offset:
            # The new entries replace durable ones too; Storage drops them when these are persisted.
            self.unstable = list(ents)
            self.unstable_offset = after
        else:
            del self.unstable[after - self.unstable_offset:]
            self.unstable.extend(ents)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"raft: commit {index} is past the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Advance the commit index to `index` only if that entry is from `term` (§5.4.2: a leader never
        commits entries of earlier terms by counting replicas)."""
        if index > self.committed and self.match_term(index, term):
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index <= 0:
            return
        if index > self.committed or index < self.applied:
            raise AssertionError(
                f"raft: applied {index} out of range [{self.applied}, {self.committed}]"
            )
        self.applied = index

    def restore(self, snap: Snapshot) -> None:
        """Replace the log with a snapshot from the leader: everything we held is superseded by it."""
        self.committed = snap.index
        self.unstable = []
        self.unstable_offset = snap.index + 1
        self.pending_snapshot = snap

    def snapshot_applied(self, snap: Snapshot) -> None:
        """The driver made `snap` durable and loaded it into the state machine."""
        if self.pending_snapshot is not None and self.pending_snapshot.index == snap.index:
            self.pending_snapshot = None
        self.applied = max(self.applied, snap.index)

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` are now durable; forget them from `unstable` if they are still the same."""
        if index < self.unstable_offset:
            return
        k = index - self.unstable_offset
        if k < len(self.unstable) and self.unstable[k].term == term:
            del self.unstable[:k + 1]
            self.unstable_offset = index + 1
