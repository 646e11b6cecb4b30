"""The store's history of committed events, for watchers catching up (issue 13, memory at scale).

A watcher asks for the events after the revision it has seen; almost always the last few, sometimes (a slow
consumer, a restart) more. Held as decoded `Event`s, every superseded version of every object stayed in memory
as Python dicts (~1.3 KB per task version even with shared specs): the history was most of a raftstore member's
memory at scale, bounded only by a count of transactions (10,000, each up to 1,000 changes).

So only the newest events, up to `hot_changes` changes, are kept decoded (they mostly reference the objects the
store holds anyway); older ones are packed — their watch JSON, zlib-compressed at the fastest level, ~35-50
bytes per task change against ~870 of JSON — and decoded again only for a watcher that asks that far back.
The history keeps at most `max_events` events and `max_bytes` of packed events; what falls out moves
`compact_revision` (asking from before it is Compacted: the watcher re-lists). Pure: no I/O, no clock."""

from __future__ import annotations

import sys
import zlib
from collections import deque
from collections.abc import Iterator

from shoal.store.txn import Event
from shoal.wire import dumps, loads

DEFAULT_EVENTS = 10_000
DEFAULT_BYTES = 16 << 20  # packed (compressed) bytes: several hundred thousand task changes
DEFAULT_HOT_CHANGES = 4096  # changes kept decoded (the newest events)


class _Packed:
    __slots__ = ("changes", "data", "revision")

    def __init__(self, event: Event) -> None:
        self.revision = event.revision
        self.changes = len(event.changes)
        self.data = zlib.compress(dumps(event.to_json()), 1)

    def event(self) -> Event:
        return Event.from_json(loads(zlib.decompress(self.data)))


class History:
    def __init__(self, max_events: int = DEFAULT_EVENTS, *, max_bytes: int = DEFAULT_BYTES,
                 hot_changes: int = DEFAULT_HOT_CHANGES) -> None:
        if max_events < 1:
            raise ValueError("history: max_events must be at least 1")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.hot_changes = hot_changes
        self.compact_revision = 0
        self._packed: deque[_Packed] = deque()  # older events, oldest first
        self._hot: deque[Event] = deque()  # the newest events, decoded, oldest first
        self._hot_count = 0  # changes in `_hot`
        self.packed_bytes = 0

    def __len__(self) -> int:
        return len(self._packed) + len(self._hot)

    def append(self, event: Event) -> None:
        self._hot.append(event)
        self._hot_count += len(event.changes)
        while self._hot_count > self.hot_changes and len(self._hot) > 1:
            old = self._hot.popleft()
            self._hot_count -= len(old.changes)
            packed = _Packed(old)
            self._packed.append(packed)
            self.packed_bytes += len(packed.data)
        while self._packed and (self.packed_bytes > self.max_bytes or len(self) > self.max_events):
            gone = self._packed.popleft()
            self.packed_bytes -= len(gone.data)
            self.compact_revision = gone.revision
        while len(self) > self.max_events:  # only hot events left (max_events below their count)
            gone_event = self._hot.popleft()
            self._hot_count -= len(gone_event.changes)
            self.compact_revision = gone_event.revision

    def since_bounded(self, revision: int, max_changes: int) -> tuple[list[Event], bool]:
        """The retained events with revision > `revision`, oldest first, cut after the event that brings the
        changes to `max_changes` or more (at least one event), and whether it was cut: a watcher far behind
        reads the packed history in slices, each decoded in bounded time, instead of in one answer that held a
        member's event loop 28 s (issue 13)."""
        items: list[Event | _Packed] = []
        for e in reversed(self._hot):
            if e.revision <= revision:
                break
            items.append(e)
        else:
            for p in reversed(self._packed):
                if p.revision <= revision:
                    break
                items.append(p)
        items.reverse()
        out: list[Event] = []
        count = 0
        for item in items:
            if out and count >= max_changes:
                return out, True
            ev = item.event() if isinstance(item, _Packed) else item
            out.append(ev)
            count += len(ev.changes)
        return out, False

    def since(self, revision: int) -> list[Event]:
        """The retained events with revision > `revision`, oldest first (the caller checks compaction)."""
        return self.since_bounded(revision, sys.maxsize)[0]

    def __iter__(self) -> Iterator[Event]:
        for p in self._packed:
            yield p.event()
        yield from self._hot
