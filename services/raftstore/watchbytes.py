"""Each watch event's JSON, encoded once for every follower (issue 13, the whole path's CPU per task).

Every store follower (orchestrator, allocator, scheduler, dispatcher, gateway, CA) long-polls `GET /v1/watch`
and receives the same events: each member encoded each event again for each of them — the `Change.to_json`
dicts and an orjson `dumps` of the whole answer, per follower. `WatchBytes` keeps each recent event's bytes
once, keyed by its revision (a committed entry's content never changes: a revision names one event for good),
and an answer is the cached bytes joined.

Redaction (services/raftstore/access.py) is per caller: an event with a change some component may not see in
full (kind `ca`, `netkeys`, a secret's or config's payload) is encoded per request exactly as before and never
cached; an event without one — nearly all of them, tasks — reads the same for every caller. The answer is byte
for byte what encoding `{"revision", "events"}` whole gave (tests/unit/test_watch_bytes.py).

A follower that asks for the compact form (`shared`: StoreClient does; shoal.store.txn.factor_shared) gets each
cacheable event in it — a task's spec written once per event, not once per change; the reads route keeps one
`WatchBytes` per form. Redacted events are always in the plain form.

Memory is bounded by `budget` bytes (oldest revisions dropped first; an event too large for it is encoded per
request). Pure: no I/O; the caller passes the events and the caller's component."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from services.raftstore.access import redact_events, sees_all
from shoal.store import wire
from shoal.store.txn import Event

DEFAULT_BUDGET = 8 * 1024 * 1024  # ~10,000 recent task changes' JSON: far more than the followers' usual lag


class WatchBytes:
    def __init__(self, budget: int = DEFAULT_BUDGET, *, shared: bool = False) -> None:
        self.budget = budget
        self.shared = shared  # the compact form
        self.held = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()  # revision -> the event's JSON, oldest first
        self.encodes = 0  # events encoded (cached or not): what a test counts

    def answer(self, component: str, revision: int, events: Iterable[Event]) -> bytes:
        """The watch answer `{"revision", "events"}` for `component`, as `wire.dumps` would write it."""
        parts = b",".join(self._event(component, e) for e in events)
        return b'{"revision":%d,"events":[%b]}' % (revision, parts)

    def _event(self, component: str, event: Event) -> bytes:
        hit = self._cache.get(event.revision)
        if hit is not None:
            return hit
        self.encodes += 1
        if not sees_all(event.changes):
            return wire.dumps(redact_events(component, [event.to_json()])[0])
        # an exact-size copy: orjson's result keeps its whole working buffer (4 KB and more) allocated
        data = memoryview(wire.dumps(event.to_json(self.shared))).tobytes()
        if len(data) <= self.budget:
            self._cache[event.revision] = data
            self.held += len(data)
            while self.held > self.budget:
                _, gone = self._cache.popitem(last=False)
                self.held -= len(gone)
        return data
