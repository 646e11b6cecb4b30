"""services/raftstore/watchbytes.py: a watch answer built from each event's cached JSON is byte for byte what
encoding the redacted answer whole gave, for every component (redacted kinds included); an event every
component sees alike is encoded once for all followers; redacted events are never cached; memory stays within
the budget."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from services.raftstore.access import redact_events
from services.raftstore.watchbytes import WatchBytes
from shoal.store import wire
from shoal.store.txn import Change, Event

COMPONENTS = ("orchestrator", "allocator", "scheduler", "dispatcher", "gateway", "ca", "")
KINDS = ("task", "service", "node", "secret", "config", "ca", "netkeys", "lease")


def _old(component: str, revision: int, events: list[Event]) -> bytes:
    """What the watch route answered before (every event encoded per request)."""
    return wire.dumps({"revision": revision, "events": redact_events(component, (e.to_json() for e in events))})


def _event(revision: int, kinds: list[str], actor: str | None = "orchestrator@n1") -> Event:
    changes = tuple(Change("update", k, f"{k}{i}", {"id": f"{k}{i}", "spec": {"data": "c2VjcmV0", "name": "é"},
                                                    "meta": {"version": revision}})
                    for i, k in enumerate(kinds))
    return Event(revision, changes, time=1.5, actor=actor)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(KINDS), max_size=4), max_size=6), st.lists(st.sampled_from(COMPONENTS),
                                                                                      min_size=1, max_size=8))
def test_the_answer_is_byte_for_byte_the_old_one_for_every_component(kinds: list[list[str]],
                                                                     callers: list[str]) -> None:
    events = [_event(10 + i, k, actor=None if i % 2 else "gateway@n2") for i, k in enumerate(kinds)]
    cache = WatchBytes()
    for component in callers:  # the same events asked by several followers, cached after the first
        for start in (0, len(events) // 2):
            got = cache.answer(component, 99, events[start:])
            assert got == _old(component, 99, events[start:])
            json.loads(got)


def test_an_event_everyone_sees_alike_is_encoded_once_for_every_follower() -> None:
    events = [_event(r, ["task"] * 50) for r in range(1, 6)]
    cache = WatchBytes()
    for component in ("orchestrator", "allocator", "scheduler", "dispatcher", "gateway"):
        cache.answer(component, 5, events)
    assert cache.encodes == 5


def test_a_redacted_event_is_encoded_per_request_and_never_cached() -> None:
    secret = _event(7, ["task", "secret"])
    cache = WatchBytes()
    scheduler = cache.answer("scheduler", 7, [secret])
    gateway = cache.answer("gateway", 7, [secret])
    assert b"c2VjcmV0" in gateway and b"c2VjcmV0" not in scheduler.split(b'"kind":"secret"')[1]
    assert cache.encodes == 2 and cache.held == 0
    ca = _event(8, ["ca"])
    assert b"c2VjcmV0" in cache.answer("ca", 8, [ca]) and b"c2VjcmV0" not in cache.answer("dispatcher", 8, [ca])


def test_memory_stays_within_the_budget_oldest_dropped_first() -> None:
    events = [_event(r, ["task"] * 20) for r in range(1, 41)]
    size = len(wire.dumps(events[0].to_json()))
    cache = WatchBytes(budget=10 * size + size // 2)
    cache.answer("orchestrator", 40, events)
    assert cache.held <= cache.budget
    before = cache.encodes
    cache.answer("allocator", 40, events[-10:])  # the newest ten are still held
    assert cache.encodes == before
    cache.answer("allocator", 40, events[:1])  # the oldest was dropped
    assert cache.encodes == before + 1
    big = WatchBytes(budget=10)  # an event larger than the budget: encoded per request, nothing held
    assert big.answer("scheduler", 1, events[:1]) == _old("scheduler", 1, events[:1]) and big.held == 0
