"""The watch's compact form (shoal/store/txn.py `factor_shared`): a value several changes of an event hold in a
shared field (a task's spec) is written once; a reader gets every change back exactly as the plain form gives it
(the same JSON, key order included), reads the plain form as before, and refuses a broken reference with
Unavailable (a follower retries). services/raftstore/watchbytes.py caches each form on its own. The Sharer
answers the same decoded object again without encoding it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shoal.store.shared as shared_mod
from services.raftstore.watchbytes import WatchBytes
from shoal.errors import Unavailable
from shoal.store import wire
from shoal.store.history import History
from shoal.store.shared import Sharer
from shoal.store.txn import Change, Event, TxnResult, WatchBatch

SPECS = [{"process": {"command": ["sleep", "infinity"]}, "resources": {"limits": {"cpu": 1}}},
         {"container": {"image": "web:1"}}, []]


def _task(i: int, spec: Any, endpoint: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": f"t{i}", "service_id": "s1", "spec": spec, "slot": i,
                           "status": {"state": "running", "message": "started"}, "meta": {"version": 7}}
    if endpoint is not None:
        obj["endpoint"] = endpoint
    return obj


def _read(data: bytes) -> Event:
    return Event.from_json(wire.loads(data))


# Each change: (kind, which spec object of SPECS or a fresh copy of one, with an endpoint)
change_st = st.tuples(st.sampled_from(["task", "service", "node"]), st.integers(0, 2), st.booleans(),
                      st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(change_st, max_size=12), st.sampled_from(["create", "update", "delete"]))
def test_the_compact_form_reads_back_as_the_plain_form(changes: list[tuple[str, int, bool, bool]],
                                                       action: Any) -> None:
    endpoint = {"ports": [{"published": 8080}]}
    event = Event(9, tuple(
        Change(action, kind, f"t{i}", _task(i, json.loads(json.dumps(SPECS[s])) if fresh else SPECS[s],
                                            endpoint if ep else None))
        for i, (kind, s, fresh, ep) in enumerate(changes)), time=2.5, actor="scheduler@n1")
    plain = wire.dumps(event.to_json())
    compact = wire.dumps(event.to_json(shared=True))
    got, want = _read(compact), _read(plain)
    assert got == want
    # byte for byte as the plain form encodes it: the shared field kept its place in each object
    assert [wire.dumps(c.object) for c in got.changes] == [wire.dumps(c.object) for c in event.changes]


def test_a_spec_held_by_many_changes_is_written_once_and_decoded_once() -> None:
    spec = SPECS[0]
    event = Event(3, tuple(Change("update", "task", f"t{i}", _task(i, spec, {"ports": []})) for i in range(100)))
    plain, compact = wire.dumps(event.to_json()), wire.dumps(event.to_json(shared=True))
    needle = wire.dumps(spec)
    assert plain.count(needle) == 100 and compact.count(needle) == 1
    got = _read(compact)
    assert all(c.object["spec"] is got.changes[0].object["spec"] for c in got.changes)
    assert list(got.changes[5].object) == list(event.changes[5].object)  # the key order kept
    once = Event(4, (Change("create", "task", "t1", _task(1, spec)),))  # held by one change: left in place
    assert b'"refs"' not in wire.dumps(once.to_json(shared=True))


def test_an_event_the_history_packed_and_decoded_again_is_compact_too() -> None:
    history = History(hot_changes=1)  # every event but the newest is packed
    for r in (1, 2):
        history.append(Event(r, tuple(Change("update", "task", f"t{i}", _task(i, SPECS[0])) for i in range(20))))
    old = history.since(0)[0]
    assert old.changes[0].object["spec"] is not old.changes[1].object["spec"]  # a copy per task
    compact = wire.dumps(old.to_json(shared=True))
    assert compact.count(wire.dumps(SPECS[0])) == 1 and _read(compact) == old


def test_a_watch_answer_of_either_form_reads_alike() -> None:
    events = [Event(r, tuple(Change("update", "task", f"t{i}", _task(i, SPECS[1])) for i in range(4)))
              for r in (5, 6)]
    plain, compact = WatchBytes(), WatchBytes(shared=True)
    a = WatchBatch.from_json(wire.loads(plain.answer("scheduler", 6, events)))
    b = WatchBatch.from_json(wire.loads(compact.answer("scheduler", 6, events)))
    assert a == b and a.events == events
    assert b'"shared"' in compact.answer("allocator", 6, events) and plain.encodes == compact.encodes == 2


def test_a_transaction_answer_of_either_form_reads_alike() -> None:
    result = TxnResult(8, [Change("create", "task", f"t{i}", _task(i, SPECS[0])) for i in range(10)]
                       + [Change("update", "service", "s1", {"id": "s1", "spec": SPECS[0]})])
    plain, compact = wire.dumps(result.to_json()), wire.dumps(result.to_json(shared=True))
    needle = wire.dumps(SPECS[0])
    assert plain.count(needle) == 11 and compact.count(needle) == 2  # the service's own spec is left in place
    got = TxnResult.from_json(wire.loads(compact))
    assert got == TxnResult.from_json(wire.loads(plain)) == result
    assert [wire.dumps(c.object) for c in got.changes] == [wire.dumps(c.object) for c in result.changes]
    with pytest.raises(Unavailable):
        TxnResult.from_json({"revision": 8, "changes": [{"action": "create", "kind": "task", "id": "t",
                                                         "object": {}, "refs": {"spec": 0}}], "shared": []})


@pytest.mark.parametrize("event", [
    {"revision": 1, "changes": [{"action": "update", "kind": "task", "id": "t", "object": {"spec": None},
                                 "refs": {"spec": 1}}], "shared": [{}]},
    {"revision": 1, "changes": [{"action": "update", "kind": "task", "id": "t", "object": {"spec": None},
                                 "refs": {"spec": "0"}}], "shared": [{}]},
    {"revision": 1, "changes": [{"action": "update", "kind": "task", "id": "t", "object": {"spec": None},
                                 "refs": {"spec": -1}}], "shared": [{}]},
    {"revision": 1, "changes": [{"action": "update", "kind": "task", "id": "t", "object": {"spec": None},
                                 "refs": [0]}], "shared": [{}]},
    {"revision": 1, "changes": [{"action": "update", "kind": "task", "id": "t", "object": None,
                                 "refs": {"spec": 0}}], "shared": [{}]},
    {"revision": 1, "changes": [], "shared": {"0": {}}},
])
def test_a_broken_reference_is_unavailable_not_a_crash(event: dict[str, Any]) -> None:
    with pytest.raises(Unavailable):
        Event.from_json(event)


def test_the_sharer_answers_the_same_decoded_object_without_encoding_it_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[int] = []

    def counting(v: Any) -> bytes:
        encoded.append(1)
        return wire.dumps(v)

    monkeypatch.setattr(shared_mod, "dumps", counting)
    s = Sharer()
    first = s.object("task", _task(1, SPECS[0]))["spec"]
    decoded = _read(wire.dumps(Event(2, tuple(Change("update", "task", f"t{i}", _task(i, SPECS[0]))
                                              for i in range(50))).to_json(shared=True)))
    specs = [s.object("task", c.object)["spec"] for c in decoded.changes]
    assert all(x is first for x in specs) and len(encoded) == 2 and s.hits == 50
    # the memory of recent values keeps nothing alive that the table's sweep would let go
    fresh = Sharer()
    fresh.value({"only": "here"})
    assert fresh.sweep() == 1 and len(fresh) == 0


def test_bench_watchform_small_run() -> None:
    from bench import watchform

    r = watchform.main(["--tasks", "200", "--rounds", "1"])
    assert r["versions"] == 800
    # the tasks' one spec is written once an event: about half of each task version's bytes
    assert r["compact"]["bytes_per_version"] < 0.7 * r["plain"]["bytes_per_version"]
