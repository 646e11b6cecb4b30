"""The raftstore's encoded-object cache (services/raftstore/encoded.py) and the store's page filter fast paths:
a list is a concatenation of cached bytes, yet every answer equals what encoding the objects afresh gives —
after writes, per reader (payload redaction), per projection, with unreadable objects, over its byte budget
and after deletions."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from services.raftstore.access import redact_objects
from services.raftstore.encoded import Encoded
from shoal.models.stored import Readable
from shoal.store import txn as t
from shoal.store import wire
from shoal.store.memory import MemoryStore, _field


def _task(i: int, version: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"t{i:04d}", "service_id": "s", "slot": i, "desired_state": "running",
            "status": {"state": "running", "timestamp": 1.0 + i}, "meta": {"version": version}, **extra}


def fresh(component: str, kind: str, objs: list[dict[str, Any]], fields: tuple[str, ...] | None) -> list[bytes]:
    """What the member answered before the cache: redacted, projected, encoded now."""
    return [wire.dumps(o) for o in wire.project(redact_objects(component, kind, objs), fields)]


def test_a_second_list_is_served_from_the_cache_and_a_new_version_is_reencoded() -> None:
    enc = Encoded(Readable())
    objs = [_task(i, 10) for i in range(50)]
    assert list(enc.lines("gateway", "task", objs, None)) == fresh("gateway", "task", objs, None)
    assert enc.misses == 50
    assert list(enc.lines("gateway", "task", objs, None)) == fresh("gateway", "task", objs, None)
    assert enc.misses == 50  # nothing encoded again
    objs[7] = _task(7, 11, node_id="n1")  # a write: a new object at a new version
    assert list(enc.lines("gateway", "task", objs, None)) == fresh("gateway", "task", objs, None)
    assert enc.misses == 51
    fields = ("id", "slot", "status")
    assert list(enc.lines("gateway", "task", objs, fields)) == fresh("gateway", "task", objs, fields)
    assert list(enc.lines("gateway", "task", objs, fields)) == fresh("gateway", "task", objs, fields)
    assert enc.misses == 101  # a projection is a view of its own, encoded once
    assert enc.size == sum(map(len, fresh("gateway", "task", objs, None) + fresh("gateway", "task", objs, fields)))


def test_payloads_stay_with_their_readers() -> None:
    enc = Encoded(Readable())
    secrets = [{"id": "sec1", "spec": {"name": "s", "data": "c2VjcmV0"}, "meta": {"version": 3}}]
    for _ in range(2):
        for component in ("gateway", "scheduler", "dispatcher", "orchestrator", "gateway"):
            got = list(enc.lines(component, "secret", secrets, None))
            assert got == fresh(component, "secret", secrets, None)
            assert (b"c2VjcmV0" in got[0]) == (component in ("gateway", "dispatcher"))


def test_unreadable_objects_are_left_out_of_ndjson_kept_in_json_and_never_cached() -> None:
    readable = Readable()
    enc = Encoded(readable)
    bad = {"id": "t9999", "slot": "1", "meta": {"version": 5}}  # a slot that is not an integer
    objs = [_task(1, 5), bad, _task(2, 5), {"meta": {"version": 5}}]  # the last one has no id
    assert list(enc.lines("gateway", "task", objs, None)) == fresh("gateway", "task", [objs[0], objs[2]], None)
    assert readable.skipped == 2
    assert list(enc.lines("gateway", "task", objs, None, unreadable=True)) == fresh("gateway", "task", objs, None)
    assert readable.skipped == 2  # the JSON answer keeps them (StoreClient skips and counts them)
    before = enc.misses
    list(enc.lines("gateway", "task", objs, None, unreadable=True))
    assert enc.misses == before + 2  # the readable ones came from the cache, the others were encoded again


def test_the_byte_budget_bounds_the_cache_not_the_answers() -> None:
    objs = [_task(i, 1) for i in range(100)]
    one = len(fresh("gateway", "task", objs[:1], None)[0])
    enc = Encoded(Readable(), budget=10 * one)
    for _ in range(3):
        assert list(enc.lines("gateway", "task", objs, None)) == fresh("gateway", "task", objs, None)
    assert enc.size <= 10 * one


def test_views_per_kind_are_bounded_and_deleted_objects_pruned() -> None:
    enc = Encoded(Readable(), max_views=2)
    objs = [_task(i, 1) for i in range(3000)]
    list(enc.lines("gateway", "task", objs, None))
    for fields in (("id", "slot"), ("id", "status"), ("id", "node_id")):
        list(enc.lines("gateway", "task", objs, fields))
    assert len([k for k in enc._views if k[0] == "task"]) == 3  # the full view and the two latest projections
    assert enc.size == sum(len(b) for v in enc._views.values() for _, b in v.values())
    live = {o["id"] for o in objs[:10]}
    assert enc.prune("task", len(live), live.__contains__) == 3 * (3000 - 10)
    assert all(set(v) <= live for v in enc._views.values())
    assert enc.size == sum(len(b) for v in enc._views.values() for _, b in v.values())
    assert enc.prune("task", len(live), live.__contains__) == 0


@pytest.mark.parametrize("seed", range(5))
def test_pages_equal_a_plain_filter(seed: int) -> None:
    """The page's fast paths (a bucket that answers its filter exactly, no filter left, a slice) return what
    filtering every object by `_field(obj, f) == v` returns, numbers, structured values and all."""
    rng = random.Random(seed)
    mem = MemoryStore()
    values: list[Any] = ["s1", "s2", "1", 1, None, {"a": 1}, '{"a":1}', "[1]", [1]]
    ops = [t.create("task", {"id": f"t{i:03d}", "service_id": rng.choice(values), "node_id": rng.choice(values),
                             "desired_state": rng.choice(["running", "shutdown"])}) for i in range(120)]
    mem.apply({"ops": ops}, 1)
    everything = mem.list("task")
    for _ in range(200):
        filters = {f: rng.choice(["s1", "s2", "1", '{"a":1}', "[1]", "running", "nope"])
                   for f in rng.sample(["service_id", "node_id", "desired_state"], rng.randrange(0, 3))}
        limit = rng.choice([None, 1, 7, 50, 500])
        want = [o for o in everything if all(_field(o, f) == v for f, v in filters.items())]
        got, after = [], None
        while True:
            page, last = mem.page("task", limit=limit, after=after, **filters)
            got += page
            if last is None:
                break
            after = last
        assert [o["id"] for o in got] == [o["id"] for o in want], filters


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from /proc")
def test_cached_bytes_cost_about_their_size() -> None:
    """orjson's bytes keep its whole working buffer allocated (~4 KB each, 12x a 330-byte task): the cache keeps
    exact-size copies. 20,000 projected tasks (~3 MB of JSON) held: well under the ~80 MB the buffers took."""
    objs = [_task(i, 1, service_name="web", node_id=f"node{i:05d}", meta={"version": 1, "created_at": 1.5})
            for i in range(20_000)]
    enc = Encoded(Readable())
    before = _rss_bytes()
    list(enc.lines("gateway", "task", objs, ("id", "meta", "slot", "status", "node_id", "service_name")))
    grown = _rss_bytes() - before
    assert enc.size > 3_000_000
    assert grown < 4 * enc.size, (grown, enc.size)


def test_a_stream_whose_view_was_dropped_meanwhile_leaves_the_accounting_exact() -> None:
    """A streamed list is encoded as the client reads; other lists may drop its view (LRU) in between."""
    enc = Encoded(Readable(), max_views=1)
    objs = [_task(i, 1) for i in range(2000)]
    slow = enc.batches("gateway", "task", objs, ("id", "slot"), size=100)
    first = next(slow)
    list(enc.lines("gateway", "task", objs, ("id", "status")))  # drops the ("id", "slot") view
    rest = [line for batch in slow for line in batch]
    assert first + rest == fresh("gateway", "task", objs, ("id", "slot"))
    assert enc.size == sum(len(b) for v in enc._views.values() for _, b in v.values())
