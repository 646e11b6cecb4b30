"""MemoryStore's sorted ids, index buckets and live counts (issue 13): pages and counts always equal what a
full scan of the objects says, across creates, updates that move index and count keys, deletes, renames and a
snapshot restore."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from shoal.errors import InvalidArgument
from shoal.store.memory import MemoryStore
from shoal.store.txn import Obj, continue_after, continue_token

STATES = ["new", "assigned", "running", "complete", "failed"]


def _field(obj: Obj, dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


class World:
    """A MemoryStore driven by random task writes next to a plain dict of what it should hold."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mem = MemoryStore()
        self.rev = 0
        self.truth: dict[str, Obj] = {}

    def _apply(self, ops: list[dict[str, Any]]) -> None:
        self.rev += 1
        self.mem.apply({"ops": ops, "time": 1.0}, self.rev)

    def task(self, tid: str) -> Obj:
        r = self.rng
        return {"id": tid, "service_id": r.choice(["s1", "s2", "s3"]), "node_id": r.choice(["n1", "n2", None]),
                "desired_state": r.choice(["running", "shutdown"]), "job_iteration": r.choice([None, 0, 1]),
                "status": {"state": r.choice(STATES)}}

    def step(self) -> None:
        r = self.rng
        roll = r.random()
        if roll < 0.5 or not self.truth:
            tid = f"t{r.randrange(10_000):05d}"
            if tid in self.truth:
                return
            obj = self.task(tid)
            self._apply([{"op": "create", "kind": "task", "object": obj}])
            self.truth[tid] = obj
        elif roll < 0.8:
            tid = r.choice(sorted(self.truth))
            obj = {**self.task(tid), "service_id": self.truth[tid]["service_id"]}
            if r.random() < 0.3:
                obj["service_id"] = r.choice(["s1", "s2", "s3"])
            self._apply([{"op": "update", "kind": "task", "object": obj}])
            self.truth[tid] = obj
        else:
            tid = r.choice(sorted(self.truth))
            self._apply([{"op": "delete", "kind": "task", "id": tid}])
            del self.truth[tid]

    def expected(self, **filters: Any) -> list[str]:
        return sorted(t for t, o in self.truth.items() if all(_field(o, f) == v for f, v in filters.items()))

    def walk(self, limit: int, **filters: Any) -> list[str]:
        out: list[str] = []
        after = None
        while True:
            items, last = self.mem.page("task", limit=limit, after=after, **filters)
            assert len(items) <= limit
            out += [o["id"] for o in items]
            if last is None:
                return out
            assert last == items[-1]["id"] and len(items) == limit
            after = last

    def check(self) -> None:
        for filters in ({}, {"service_id": "s1"}, {"node_id": "n2", "desired_state": "running"},
                        {"service_id": "s2", "status.state": "running"}, {"service_id": "nope"}):
            want = self.expected(**filters)
            assert [o["id"] for o in self.mem.list("task", **filters)] == want
            for limit in (1, 7, 1000):
                assert self.walk(limit, **filters) == want
        prefix = "t01"
        assert [o["id"] for o in self.mem.page("task", id_prefix=prefix)[0]] == \
            [t for t in sorted(self.truth) if t.startswith(prefix)]
        want_counts = Counter((o["service_id"], o["desired_state"], o["status"]["state"], o["job_iteration"])
                              for o in self.truth.values())
        got = {tuple(g["values"].values()): g["count"] for g in self.mem.counts("task")}
        assert got == dict(want_counts)
        s1 = {tuple(g["values"].values()): g["count"] for g in self.mem.counts("task", service_id="s1")}
        assert s1 == {k: n for k, n in want_counts.items() if k[0] == "s1"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pages_and_counts_match_a_full_scan_across_writes_deletes_and_restore(seed: int) -> None:
    w = World(seed)
    for i in range(600):
        w.step()
        if i % 150 == 0:
            w.check()
    w.check()
    restored = MemoryStore()
    restored.restore(w.mem.snapshot())
    assert restored.state_hash() == w.mem.state_hash()
    w.mem = restored
    w.check()
    for _ in range(200):  # the rebuilt indexes keep up with later writes
        w.step()
    w.check()


def test_a_walk_sees_every_object_that_stays_exactly_once_while_others_come_and_go() -> None:
    w = World(7)
    for _ in range(300):
        w.step()
    stay = set(w.truth)
    seen: list[str] = []
    after = None
    while True:
        items, after = w.mem.page("task", limit=10, after=after)
        seen += [o["id"] for o in items]
        for _ in range(5):  # creates, updates and deletes between pages
            w.step()
        stay &= set(w.truth)
        if after is None:
            break
    assert len(seen) == len(set(seen))
    assert stay <= set(seen)


def test_names_are_found_case_insensitively_and_follow_renames_and_deletes() -> None:
    mem = MemoryStore()
    mem.apply({"ops": [{"op": "create", "kind": "service", "object": {"id": "a", "spec": {"name": "Web"}}}]}, 1)
    assert [o["id"] for o in mem.page("service", name="web")[0]] == ["a"]
    mem.apply({"ops": [{"op": "update", "kind": "service", "object": {"id": "a", "spec": {"name": "api"}}}]}, 2)
    assert mem.page("service", name="web")[0] == []
    assert [o["id"] for o in mem.page("service", name="API")[0]] == ["a"]
    mem.apply({"ops": [{"op": "delete", "kind": "service", "id": "a"}]}, 3)
    assert mem.page("service", name="api")[0] == []
    with pytest.raises(InvalidArgument, match="no names"):
        mem.page("task", name="x")


def test_bad_page_and_count_arguments_are_refused() -> None:
    mem = MemoryStore()
    with pytest.raises(InvalidArgument, match="limit"):
        mem.page("task", limit=0)
    with pytest.raises(InvalidArgument, match="unknown kind"):
        mem.page("nope")
    with pytest.raises(InvalidArgument, match="cannot filter counts"):
        mem.counts("task", node_id="n1")
    assert mem.counts("node") == []


def test_continue_tokens_round_trip_and_garbage_is_refused() -> None:
    assert continue_after(continue_token("abc")) == "abc"
    assert continue_after(continue_token("ünïcode/+")) == "ünïcode/+"
    # a token is only a position: any well-formed one continues after the id it spells (so the OpenAPI
    # pattern says exactly what is accepted); what is not unpadded base64url is refused
    assert continue_after("bm90IGpzb24") == "not json"
    for junk in ("", "%%%", "abcde", "ab==", "x" * 2000, continue_token("x")[:-3]):
        with pytest.raises(InvalidArgument, match="continue token"):
            continue_after(junk)
