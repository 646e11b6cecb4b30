"""The store's memory per task (issue 13, memory at scale): shared task specs and strings
(shoal/store/shared.py), a history that keeps older events packed (shoal/store/history.py), and answers
unchanged by either."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import pytest

from services.raftstore.fsm import FSM
from services.raftstore.raft import Entry
from shoal.errors import Compacted
from shoal.models.objects import new_task, task_status
from shoal.models.specs import ServiceSpec
from shoal.models.states import TaskState
from shoal.store import txn as t
from shoal.store import wire
from shoal.store.history import History
from shoal.store.memory import MemoryStore
from shoal.store.txn import Change, Event

SPEC = ServiceSpec.model_validate({"name": "web", "mode": {"replicated": {"replicas": 1}},
                                   "task": {"process": {"command": ["sleep", "infinity"]}}}).wire()
SERVICE = {"id": "s" * 25, "spec": SPEC, "spec_version": 1}
#: the versions a task goes through in a real run (orchestrator, allocator, scheduler, dispatcher x2)
LIFE = [(TaskState.NEW, "created", None), (TaskState.PENDING, "allocated", None),
        (TaskState.ASSIGNED, "scheduler assigned", "n" * 25), (TaskState.PREPARING, "preparing", "n" * 25),
        (TaskState.RUNNING, "started", "n" * 25)]


def _task(i: int, stage: int, version: int | None) -> dict[str, Any]:
    """A task as the control plane writes it: the service's task spec copied in (the orchestrator's new_task;
    the FSM decodes it from the entry's JSON, so nothing is shared with other tasks on the way in)."""
    state, message, node = LIFE[stage]
    o = new_task(SERVICE, i + 1, 1000.0 + stage, node_id=node, ids=lambda: f"t{i:024d}")
    o["status"] = task_status(state, 1000.0 + stage + i * 1e-6, message)
    o["endpoint_spec"] = {"mode": "vip", "ports": []}
    if version is not None:
        o["meta"] = {"version": version}
    return o


def _replay(fsm: FSM, n: int, batch: int = 500) -> int:
    """Apply `n` tasks' five versions through the FSM as a follower does (each entry's JSON decoded)."""
    index = fsm.applied_index
    for stage in range(len(LIFE)):
        for lo in range(0, n, batch):
            ops = []
            for i in range(lo, min(n, lo + batch)):
                version = fsm.mem.get("task", f"t{i:024d}")["meta"]["version"] if stage else None
                ops.append(t.create("task", _task(i, stage, None)) if not stage
                           else t.update("task", _task(i, stage, version)))
            index += 1
            data = json.dumps({"ops": ops, "time": 2000.0 + index, "actor": "orchestrator@n1"}).encode()
            result = fsm.apply(Entry(1, index, data))
            assert not isinstance(result, Exception), result
    return index


def test_memory_per_thousand_tasks_is_bounded() -> None:
    """2,000 tasks through five versions each (10,000 writes, every one kept in the watch history): the store
    grew ~21 MB per 1,000 tasks before (each version its own full copy of the spec, the history holding every
    version decoded); ~1.5 MB now. The bound is generous for allocator noise, and still far below the old cost."""
    fsm = FSM()
    fsm.apply(Entry(1, 1, json.dumps({"ops": [t.create("service", SERVICE)], "time": 1.0}).encode()))
    n = 2000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        last = _replay(fsm, n)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert fsm.mem.count("task") == n
    assert len(fsm.mem.events_since(1)) == last - 1  # the whole run is still in the history
    per_1k = grown / (n / 1000)
    assert per_1k < 4e6, f"the store grew {per_1k / 1e6:.1f} MB per 1,000 tasks (bound: 4 MB)"


def test_tasks_share_their_spec_and_strings_but_answer_as_written() -> None:
    s = MemoryStore()
    a, b = _task(1, 2, None), _task(2, 2, None)
    s.apply({"ops": [t.create("task", a), t.create("task", b)], "time": 5.0}, 1)
    ta, tb = s.get("task", a["id"]), s.get("task", b["id"])
    assert ta["spec"] is tb["spec"] and ta["endpoint_spec"] is tb["endpoint_spec"]
    assert ta["node_id"] is tb["node_id"] and ta["status"]["state"] is tb["status"]["state"]
    for written, stored in ((a, ta), (b, tb)):  # the same JSON, key order included, plus the store's meta
        assert wire.dumps({**written, "meta": stored["meta"]}) == wire.dumps(stored)
    # equal content in another key order is another value: sharing it would change the bytes of an answer
    c = _task(3, 2, None)
    c["spec"] = dict(reversed(list(c["spec"].items())))
    s.apply({"ops": [t.create("task", c)], "time": 6.0}, 2)
    tc = s.get("task", c["id"])
    assert tc["spec"] is not ta["spec"] and list(tc["spec"]) == list(c["spec"])
    # a restored store shares the same way
    r = MemoryStore()
    r.restore(s.snapshot())
    assert r.get("task", a["id"])["spec"] is r.get("task", b["id"])["spec"]
    assert r.state_hash() == s.state_hash()


def test_shared_values_nobody_holds_are_swept() -> None:
    s = MemoryStore(history=1, history_bytes=0)
    for i in range(300):  # 300 distinct specs, then every task deleted
        o = _task(i, 0, None)
        o["spec"] = {**o["spec"], "force_update": i}
        s.apply({"ops": [t.create("task", o)]}, 2 * i + 1)
        s.apply({"ops": [t.delete("task", o["id"])]}, 2 * i + 2)
    assert len(s._sharer) < 300
    s._sharer.sweep()
    assert len(s._sharer) <= 2  # at most what the last events still hold


def _events(n: int, per: int = 3) -> list[Event]:
    return [Event(r, tuple(Change("create" if r % 2 else "update", "task", f"t{r}-{k}",
                                  {"id": f"t{r}-{k}", "meta": {"version": r}, "x": [k, None, 1.5]})
                           for k in range(per)), time=float(r), actor="a@n" if r % 3 else None)
            for r in range(1, n + 1)]


def test_packed_events_read_back_as_they_were_written() -> None:
    h = History(100, max_bytes=1 << 20, hot_changes=4)  # all but the newest event or two packed
    events = _events(20)
    for e in events:
        h.append(e)
    assert len(h._hot) <= 2 and len(h._packed) >= 18
    for after in (0, 5, 18, 19, 20):
        got = h.since(after)
        assert [e.to_json() for e in got] == [e.to_json() for e in events[after:]]
    assert [e.to_json() for e in h] == [e.to_json() for e in events]


def test_history_is_bounded_by_packed_bytes_and_by_events() -> None:
    h = History(1000, max_bytes=600, hot_changes=3)
    for e in _events(50):
        h.append(e)
    assert h.packed_bytes <= 600 and h.compact_revision > 0
    kept = h.since(h.compact_revision)
    assert [e.revision for e in kept] == list(range(h.compact_revision + 1, 51))
    s = MemoryStore(history=5)
    for i in range(1, 9):
        s.apply({"ops": [t.create("task", {"id": f"t{i}"})]}, i)
    assert [e.revision for e in s.events_since(3)] == [4, 5, 6, 7, 8]
    with pytest.raises(Compacted):
        s.events_since(2)
