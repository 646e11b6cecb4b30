"""The cyclic collector on the store's wire (docs/performance.md, "The collector on the store's wire"): a large
JSON document (a watch batch, a transaction answer, a raft entry) is decoded with the collector paused, since
decoded JSON holds no cycles; the collector's state is what it was afterwards; and the raft entry's encoding
(orjson only when it read the body itself) decodes on every member to exactly what the leader applies."""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.raftstore.fsm import decode_txn, encode_txn
from shoal import wire
from shoal.plan import op_size
from shoal.store import txn as t


def _batch(n: int) -> bytes:
    task = {"id": "x", "spec": {"process": {"command": ["sleep", "1"], "env": []}, "resources": {}},
            "status": {"state": "running", "timestamp": 1.5}, "meta": {"version": 3}, "labels": {}}
    return wire.dumps({"revision": 9, "events": [{"revision": 9, "changes": [
        {"kind": "task", "id": str(i), "action": "update", "object": {**task, "id": str(i)}} for i in range(n)]}]})


class Collections:
    """Counts the collections that start while `during(fn)` runs."""

    def __init__(self) -> None:
        self.inside = False
        self.count = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and self.inside:
            self.count += 1

    def during(self, fn: Callable[[], Any]) -> int:
        gc.collect()
        self.count, self.inside = 0, True
        try:
            fn()
        finally:
            self.inside = False
        return self.count


@pytest.fixture
def collections() -> Iterator[Collections]:
    c = Collections()
    gc.enable()
    gc.callbacks.append(c)
    try:
        yield c
    finally:
        gc.callbacks.remove(c)


def test_a_large_document_is_decoded_without_walking_it_again_and_again(collections: Collections) -> None:
    body = _batch(500)  # ~75 KB, ~6,000 containers: the collector would run about 8 times
    assert len(body) >= wire.GC_PAUSE_BYTES
    # at most the one collection the re-enabled collector owes on the way out (the containers walked once)
    assert collections.during(lambda: wire.loads(body)) <= 1 and gc.isenabled()
    assert len(wire.loads(body)["events"][0]["changes"]) == 500
    # the same document read with the collector running is collected several times
    assert collections.during(lambda: json.loads(body)) >= 3


def test_the_entry_decoder_pauses_the_collector_too(collections: Collections) -> None:
    data = encode_txn({"ops": [t.update("task", {"id": str(i), "spec": {"a": [1, 2]}, "status": {"s": 1}})
                               for i in range(500)], "time": 1.0}, exact=True)
    assert collections.during(lambda: decode_txn(data)) <= 1 and gc.isenabled()
    assert len(decode_txn(data)["ops"]) == 500


def test_a_paused_collector_stays_paused() -> None:
    gc.disable()
    try:
        wire.loads(_batch(500))
        decode_txn(b'{"ops":[]}')
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_loads_read_says_which_decoder_read_it() -> None:
    assert wire.loads_read(b'{"a":1}') == ({"a": 1}, True)
    value, exact = wire.loads_read(b'{"a": NaN}')
    assert math.isnan(value["a"]) and not exact
    assert wire.loads_read(_batch(200))[1]


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, an int not equal to a float (a follower must not read 2**70 as 1.18e21)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_values, max_size=4), junk=_values)
def test_every_member_decodes_the_entry_the_leader_applies(ops: list[Any], junk: Any) -> None:
    """What services/raftstore/routes/writes.py does with a body: read it (orjson, or json for what orjson
    refuses), stamp it, encode the entry (orjson only if orjson read the body), apply the stamped dict on the
    leader — and every member decodes the entry's bytes. Bodies with NaN, Infinity, integers beyond 64 bits
    and values outside `ops` (dropped by the stamp) included."""
    raw = json.dumps({"ops": ops, "junk": junk}).encode()  # NaN/Infinity as literals, as a hostile client sends
    body, exact = wire.loads_read(raw)
    stamped = {"ops": body["ops"], "time": 1765000000.25, "actor": "orchestrator@n1"}
    assert _same(decode_txn(encode_txn(stamped, exact=exact)), stamped)


def test_op_size_is_the_compact_json_the_client_sends() -> None:
    op = t.create("task", {"id": "a", "name": "é", "spec": {"x": [1, 2.5, None]}})
    assert op_size(op) == len(wire.dumps(op))
    assert op_size(t.create("task", {"id": "a", "n": 2**70})) == len(json.dumps(
        t.create("task", {"id": "a", "n": 2**70}), separators=(",", ":")))


def test_an_entry_holds_only_its_own_bytes() -> None:
    """The raft log keeps entries until a snapshot: an orjson-encoded entry is an exact-size copy, not orjson's
    result with its whole working buffer (~1.6x the entry)."""
    import tracemalloc

    txn = {"ops": [t.update("task", {"id": str(i), "spec": {"x": "y" * 600}}) for i in range(500)], "time": 1.0}
    tracemalloc.start()
    try:
        entries = [encode_txn(txn, exact=True) for _ in range(10)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held <= 1.15 * sum(len(e) for e in entries)
    assert decode_txn(entries[0]) == txn
