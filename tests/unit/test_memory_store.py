"""MemoryStore: the deterministic state machine behind the raftstore."""

from __future__ import annotations

import pytest

from shoal.errors import AlreadyExists, Compacted, NotFound, PreconditionFailed, TxnTooLarge, VersionConflict
from shoal.store import txn as t
from shoal.store.memory import MemoryStore, validate_txn


def svc(oid: str, name: str) -> dict:
    return {"id": oid, "spec": {"name": name}}


def task(oid: str, service: str, node: str | None = None) -> dict:
    return {"id": oid, "service_id": service, "node_id": node, "desired_state": "running"}


def test_create_sets_version_and_timestamps() -> None:
    s = MemoryStore()
    r = s.apply({"ops": [t.create("service", svc("a", "web"))], "time": 10.0}, 1)
    assert r.revision == 1
    obj = s.get("service", "a")
    assert obj["meta"] == {"version": 1, "created_at": 10.0, "updated_at": 10.0}


def test_names_are_unique_case_insensitively() -> None:
    s = MemoryStore()
    s.apply({"ops": [t.create("service", svc("a", "web"))]}, 1)
    with pytest.raises(AlreadyExists):
        s.apply({"ops": [t.create("service", svc("b", "WEB"))]}, 2)
    assert s.count("service") == 1


def test_transaction_is_all_or_nothing() -> None:
    s = MemoryStore()
    s.apply({"ops": [t.create("service", svc("a", "web"))]}, 1)
    with pytest.raises(AlreadyExists):
        s.apply({"ops": [t.create("task", task("t1", "a")), t.create("service", svc("a", "x"))]}, 2)
    assert s.count("task") == 0
    assert s.revision == 2  # the entry was applied (as a failure) on every replica alike


def test_version_precondition() -> None:
    s = MemoryStore()
    s.apply({"ops": [t.create("service", svc("a", "web"))]}, 1)
    obj = s.copy_of("service", "a")
    s.apply({"ops": [t.update("service", obj)]}, 2)
    with pytest.raises(VersionConflict):
        s.apply({"ops": [t.update("service", obj)]}, 3)  # still says version 1
    assert s.get("service", "a")["meta"]["version"] == 2


def test_check_op_fences_on_fields() -> None:
    s = MemoryStore()
    s.apply({"ops": [t.create("lease", {"id": "scheduler", "term": 3})]}, 1)
    s.apply({"ops": [t.check("lease", "scheduler", term=3), t.create("task", task("t", "a"))]}, 2)
    with pytest.raises(PreconditionFailed):
        s.apply({"ops": [t.check("lease", "scheduler", term=2), t.create("task", task("u", "a"))]}, 3)
    assert s.find("task", "u") is None


def test_indexes_follow_updates_and_deletes() -> None:
    s = MemoryStore()
    s.apply({"ops": [t.create("task", task("t1", "a", "n1")), t.create("task", task("t2", "a", "n2"))]}, 1)
    assert [o["id"] for o in s.list("task", service_id="a")] == ["t1", "t2"]
    moved = s.copy_of("task", "t1")
    moved["node_id"] = "n2"
    s.apply({"ops": [t.update("task", moved)]}, 2)
    assert [o["id"] for o in s.list("task", node_id="n2")] == ["t1", "t2"]
    assert s.list("task", node_id="n1") == []
    s.apply({"ops": [t.delete("task", "t2")]}, 3)
    assert [o["id"] for o in s.list("task", service_id="a")] == ["t1"]
    with pytest.raises(NotFound):
        s.apply({"ops": [t.delete("task", "t2")]}, 4)


def test_rename_frees_the_old_name() -> None:
    s = MemoryStore()
    s.apply({"ops": [t.create("service", svc("a", "web"))]}, 1)
    obj = s.copy_of("service", "a")
    obj["spec"]["name"] = "api"
    s.apply({"ops": [t.update("service", obj)]}, 2)
    s.apply({"ops": [t.create("service", svc("b", "web"))]}, 3)
    assert s.by_name("service", "API")["id"] == "a"


def test_watch_history_and_compaction() -> None:
    s = MemoryStore(history=3)
    for i in range(1, 6):
        s.apply({"ops": [t.create("task", task(f"t{i}", "a"))]}, i)
    assert [e.revision for e in s.events_since(3)] == [4, 5]
    with pytest.raises(Compacted):
        s.events_since(1)
    assert s.events_since(5) == []


def test_snapshot_restore_roundtrip() -> None:
    a = MemoryStore()
    a.apply({"ops": [t.create("service", svc("a", "web")), t.create("task", task("t", "a", "n"))]}, 1)
    b = MemoryStore()
    b.restore(a.snapshot())
    assert b.state_hash() == a.state_hash() and b.revision == 1
    assert b.list("task", node_id="n")[0]["id"] == "t"
    with pytest.raises(AlreadyExists):
        b.apply({"ops": [t.create("service", svc("z", "Web"))]}, 2)


def test_bounds_are_enforced_before_proposing() -> None:
    with pytest.raises(TxnTooLarge):
        validate_txn({"ops": [t.create("task", task(str(i), "a")) for i in range(1001)]})
    with pytest.raises(TxnTooLarge):
        validate_txn({"ops": [t.create("task", {"id": "x", "blob": "x" * 2_000_000})]})
