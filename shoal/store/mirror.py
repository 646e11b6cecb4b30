"""StoreMirror: a subsystem's local, eventually-consistent copy of some kinds (SwarmKit's ViewAndWatch).

List on start, then follow the store's watch from the listed revision. A NATS hint with a newer revision wakes
it at once (`HintRelay`: one subscription per process, handed to whichever mirror is current); without hints it
still polls every `poll_interval`, so a lost or duplicated hint delays work by at most one interval and never
corrupts it. A bus reconnect or a Compacted answer forces a full re-list. This is the one store follower: the
leader-only subsystems (shoal/leader_loop.py) and the dispatcher run `StoreMirror.run`; the dispatcher passes
`on_sync` to index each batch of changes as it lands.

Writers call `apply_written(result)` so their next decision already sees their own write (otherwise a
reconciler could act twice on a stale view); later watch events for the same objects are applied only if
newer (by meta.version), and tombstones stop older updates from resurrecting a deleted object.

A mirror made with `track_changes=True` also remembers which ids of each kind changed (watch events and
`apply_written` alike) until `take_changes()` hands them over: a planning pass then looks at what changed, not at
the whole view. After a (re-)list it answers None: everything may have changed."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from shoal import heap
from shoal.bus.base import Bus
from shoal.bus.subjects import STORE_EVENTS
from shoal.errors import Compacted
from shoal.store.client import STORE_FAILURES
from shoal.store.protocol import Store
from shoal.store.shared import Sharer
from shoal.store.txn import Change, Event, Obj, TxnResult

log = logging.getLogger(__name__)


#: how long after a hint the mirror keeps watching (each watch waiting on its member) until it has the revision
#: the hint announced: the leader publishes a hint as it applies a commit, and a follower member applies it only
#: when it hears of the commit (its next append or heartbeat, ~0.1 s later) — a watch that did not wait found
#: nothing there (or only the commits before it) and the mirror slept a whole poll. Those watches name the hinted
#: revision (`upto`), so a follower that has not heard of the commit asks the leader (ReadIndex) at once.
HINT_WAIT = 0.5
#: called after every successful sync with its changes (None after a full re-list: everything may have changed)
OnSync = Callable[[Sequence[Change] | None], None]
#: kind -> ids created, updated or deleted since the last `take_changes` (None: everything may have changed)
Changed = dict[str, set[str]]


class StoreMirror:
    def __init__(self, store: Store, kinds: Sequence[str], *, poll_interval: float = 1.0,
                 on_sync: OnSync | None = None, name: str = "mirror", track_changes: bool = False) -> None:
        self.store = store
        self.kinds = list(kinds)
        self.poll_interval = poll_interval
        self.on_sync = on_sync
        self.name = name
        self.objects: dict[str, dict[str, Obj]] = {k: {} for k in self.kinds}
        self.revision = 0
        self.generation = 0
        self.ready = asyncio.Event()
        self._tombstones: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._relist = True
        self._stopped = False
        self._stop = asyncio.Event()
        self.resyncs = 0
        #: perf_counter() of the oldest change from the store not yet taken by a planning pass (plan loop lag)
        self.pending_since: float | None = None
        #: called with every committed transaction the watch returns, all kinds (the dashboard's event feed)
        self.on_event: Callable[[Event], None] | None = None
        self.track_changes = track_changes
        self._changed_ids: Changed | None = None  # None: the next `take_changes` answers "everything"
        self._hinted = 0  # the newest revision a hint announced, until the mirror reaches it or gives up on it
        self._hint_until = 0.0  # loop time until which the mirror keeps waiting on its member for `_hinted`
        #: what the mirrored objects repeat (a task's copy of its service's spec, ids, states) held once, as the
        #: store holds it: a task costs each follower ~1.3 KB of Python objects instead of ~4.2 KB
        self._sharer = Sharer()
        #: held while the view changes (a watch batch applied, a listing taken), and by a planning pass that reads
        #: the view from a worker thread (shoal/leader_loop.py): the event loop goes on meanwhile, the view does not
        self.view_lock = asyncio.Lock()

    # ---- view --------------------------------------------------------------------------------------------
    def get(self, kind: str, obj_id: str) -> Obj | None:
        return self.objects[kind].get(obj_id)

    def list(self, kind: str, **filters: Any) -> list[Obj]:
        items = self.objects[kind].values()
        if not filters:
            return list(items)
        return [o for o in items if all(o.get(k) == v for k, v in filters.items())]

    # ---- feeding -----------------------------------------------------------------------------------------
    def apply_written(self, result: TxnResult) -> None:
        """Fold a transaction this process just committed into the view."""
        self._apply(result.changes, result.revision)
        self._bump()

    def take_changes(self) -> Changed | None:
        """The ids of each followed kind changed since the last call (None after a list, or when the mirror
        does not track changes: everything may have changed). A deleted id is in it too: `get` answers None."""
        out = self._changed_ids
        self._changed_ids = {k: set() for k in self.kinds} if self.track_changes else None
        return out

    def _apply(self, changes: Sequence[Change], revision: int) -> builtins.list[Change]:
        applied = []
        dirty = self._changed_ids
        for c in changes:
            if c.kind not in self.objects:
                continue
            key = (c.kind, c.id)
            table = self.objects[c.kind]
            cur = table.get(c.id)
            version = int(c.object.get("meta", {}).get("version", revision))
            if c.action == "delete":
                if cur is not None and cur["meta"]["version"] <= revision:
                    del table[c.id]
                    applied.append(c)
                    if dirty is not None:
                        dirty[c.kind].add(c.id)
                self._tombstones[key] = max(self._tombstones.get(key, 0), revision)
                continue
            if self._tombstones.get(key, 0) >= version:
                continue
            if cur is None or cur["meta"]["version"] < version:
                c = Change(c.action, c.kind, c.id, self._sharer.object(c.kind, c.object))
                table[c.id] = c.object
                applied.append(c)
                if dirty is not None:
                    dirty[c.kind].add(c.id)
        return applied

    def take_pending_since(self) -> float | None:
        """When the oldest change not yet seen by a pass arrived (None: no news); a pass calls it as it starts."""
        since, self.pending_since = self.pending_since, None
        return since

    def _bump(self, *, external: bool = False) -> None:
        if external and self.pending_since is None:
            self.pending_since = time.perf_counter()
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def hint(self, revision: int) -> None:
        """The store announced `revision` (a NATS hint): sync now, and until the view reaches it (for at most
        `HINT_WAIT`) sync again at once, each watch waiting on its member for what comes next. A hint of a
        revision that never commits costs `HINT_WAIT` of waited watches, then the poll goes on as before."""
        if revision > self._hinted:
            self._hinted = revision
            self._hint_until = asyncio.get_running_loop().time() + HINT_WAIT
        self._wake.set()

    def _behind_hint(self) -> float:
        """How long the next watch may wait for the hinted revision (0: not behind a live hint)."""
        if self._hinted <= self.revision:
            self._hinted = 0
            return 0.0
        left = self._hint_until - asyncio.get_running_loop().time()
        if left <= 0:
            self._hinted = 0
            return 0.0
        return left

    def resync(self) -> None:
        self._relist = True
        self._wake.set()

    async def wait_changed(self, generation: int, timeout: float | None) -> int:
        """Wait until the view is newer than `generation` (or `timeout`); returns the current generation."""
        if self.generation == generation:
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except TimeoutError:
                pass
        return self.generation

    async def sync_once(self) -> builtins.list[Change] | None:
        """One step: re-list if needed (returns None: everything may have changed) or fetch new events."""
        if self._relist:
            self._relist = False
            await self._list_all()
            return None
        wait = self._behind_hint()
        batch = await self.store.watch(self.revision, wait, upto=self._hinted if wait else 0)
        changes: list[Change] = []
        async with self.view_lock:
            for ev in batch.events:
                changes += self._apply(ev.changes, ev.revision)
                if self.on_event is not None:
                    self.on_event(ev)
            self.revision = max(self.revision, batch.revision)
            if self._tombstones:
                self._tombstones = {k: r for k, r in self._tombstones.items() if r > self.revision}
            if changes:
                self._bump(external=True)
        return changes

    async def _list_all(self) -> None:
        fresh: dict[str, dict[str, Obj]] = {}
        revs = []
        for kind in self.kinds:
            rev, items = await self.store.list(kind)
            revs.append(rev)
            share = self._sharer.object
            fresh[kind] = {o["id"]: share(kind, o) for o in items}
        async with self.view_lock:
            self._take_listing(fresh, revs)

    def _take_listing(self, fresh: dict[str, dict[str, Obj]], revs: builtins.list[int]) -> None:
        self.objects = fresh
        self.revision = min(revs) if revs else 0
        self._tombstones.clear()
        self._changed_ids = None
        self.resyncs += 1
        self._bump(external=True)

    async def run(self) -> None:
        """Follow the store until `stop()`: sync, tell `on_sync`, mark ready, sleep until woken or the poll
        interval; a store error backs off (0.1 s doubling to 2 s), a Compacted answer re-lists. A process
        whose main opted in (the planners, the dispatcher) keeps its large decoded answers frozen
        (`shoal.heap.DecodedFreezer`); this loop collects them again in full once a minute while it freezes."""
        backoff = 0.1
        while not self._stopped:
            heap.decoded.reclaim_if_due()
            try:
                changes = await self.sync_once()
            except Compacted:
                log.info("%s: watch revision %d compacted; re-listing", self.name, self.revision)
                self._relist = True
                continue
            except STORE_FAILURES as e:
                log.warning("%s: store unavailable (%s); retrying in %.1fs", self.name, e, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if self.on_sync is not None:
                self.on_sync(changes)
            self.ready.set()
            if self._behind_hint():
                continue  # the member has applied part of what a hint announced: the next watch waits for more
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    def stop(self) -> None:
        self._stopped = True
        self._stop.set()
        self._wake.set()


class HintRelay:
    """Subscribes once per process to the raftstore's commit hints and forwards them to whichever mirror is
    current, so a re-activation does not pile up subscriptions; a bus reconnect (hints were lost meanwhile)
    makes the current mirror re-list. A hint whose changes are all of kinds the mirror does not follow does not
    wake it (a hint without its list of changes always does)."""

    def __init__(self, mirror: StoreMirror | None = None) -> None:
        self.mirror = mirror
        self.attached = False

    async def attach(self, bus: Bus) -> None:
        await bus.subscribe(STORE_EVENTS, self._on_hint)
        bus.on_reconnect(self._on_reconnect)
        self.attached = True
        if self.mirror is not None:  # hints may have been missed while detached
            self.mirror.wake()

    async def _on_hint(self, data: dict[str, Any]) -> None:
        m = self.mirror
        try:
            revision = int(data.get("revision", 0))
        except (TypeError, ValueError):
            return
        if m is None or revision <= m.revision:
            return
        changes = data.get("changes")
        if isinstance(changes, list) and not any(
                isinstance(c, dict) and c.get("kind") in m.kinds for c in changes):
            # Nothing this mirror follows (the leader subsystems' lease renewals, several a second, are most
            # of an idle cluster's commits): its next useful hint or poll catches up past this revision.
            return
        m.hint(revision)

    def _on_reconnect(self) -> None:
        if self.mirror is not None:
            self.mirror.resync()
