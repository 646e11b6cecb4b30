"""FSM: committed entries applied to MemoryStore at revision = entry index; no-ops skip; a failing
transaction is that entry's deterministic result and still consumes its index."""

from __future__ import annotations

import pytest

from services.raftstore.fsm import FSM, encode_txn
from services.raftstore.raft import Entry
from shoal.errors import AlreadyExists, InvalidArgument, VersionConflict
from shoal.store import txn as t
from shoal.store.txn import TxnResult


def create(oid: str, name: str) -> bytes:
    return encode_txn({"ops": [t.create("service", {"id": oid, "spec": {"name": name}})], "time": 5.0})


def test_revision_is_the_entry_index_and_noops_skip() -> None:
    fsm = FSM()
    assert fsm.apply(Entry(1, 1)) is None
    res = fsm.apply(Entry(1, 2, create("a", "web")))
    assert isinstance(res, TxnResult) and res.revision == 2
    assert fsm.mem.get("service", "a")["meta"] == {"version": 2, "created_at": 5.0, "updated_at": 5.0}
    assert fsm.apply(Entry(2, 3)) is None and fsm.applied_index == 3


def test_a_failed_transaction_is_the_entrys_result_and_consumes_its_index() -> None:
    fsm = FSM()
    fsm.apply(Entry(1, 1, create("a", "web")))
    assert isinstance(fsm.apply(Entry(1, 2, create("b", "WEB"))), AlreadyExists)
    stale = encode_txn({"ops": [t.update("service", {"id": "a", "spec": {"name": "x"}}, expect_version=7)]})
    assert isinstance(fsm.apply(Entry(1, 3, stale)), VersionConflict)
    assert fsm.applied_index == 3 and fsm.mem.get("service", "a")["spec"]["name"] == "web"


def test_replicas_applying_the_same_entries_agree() -> None:
    entries = [Entry(1, 1), Entry(1, 2, create("a", "web")), Entry(1, 3, create("b", "web")),
               Entry(2, 4, create("c", "db"))]
    a, b = FSM(), FSM()
    for e in entries:
        ra, rb = a.apply(e), b.apply(e)
        assert type(ra) is type(rb)
    assert a.mem.state_hash() == b.mem.state_hash()


def test_garbage_entries_are_skipped_identically() -> None:
    fsm = FSM()
    assert isinstance(fsm.apply(Entry(1, 1, b"{not json")), InvalidArgument)
    assert fsm.applied_index == 1


def test_applying_an_index_twice_is_a_bug() -> None:
    fsm = FSM()
    fsm.apply(Entry(1, 1))
    with pytest.raises(AssertionError):
        fsm.apply(Entry(1, 1))
