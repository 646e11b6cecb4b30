"""The dispatcher's batched node writes (services/dispatcher/nodewrites.py): the pure plan, and the NodeWriter over
LocalStore — many registrations in one transaction, back-pressure instead of an unbounded queue, conflicts
re-read and re-planned, DOWN marks only at the version judged."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from services.dispatcher.nodewrites import Busy, MarkDown, MarkReady, NodeWriter, Register, plan_batch
from shoal.cluster import ensure_cluster, with_removed_node
from shoal.errors import PermissionDenied
from shoal.models.kinds import DEFAULT_CLUSTER_ID
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.txn import TxnResult

pytestmark = pytest.mark.timeout(30)

DESC = {"hostname": "h", "platform": {"os": "linux", "arch": "amd64"},
        "resources": {"nano_cpus": 1, "memory_bytes": 1}, "executors": ["hollow"]}


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"new{next(counter)}"


def node(nid: str, state: str = "ready", version: int = 5) -> dict[str, Any]:
    return {"id": nid, "spec": {"role": "worker"}, "role": "worker", "description": DESC,
            "status": {"state": state, "message": "", "addr": None, "timestamp": 1.0},
            "meta": {"version": version}}


def test_plan_one_op_per_node_and_a_second_intent_waits() -> None:
    view = {"a": node("a"), "b": node("b", "down")}
    cluster = {"id": DEFAULT_CLUSTER_ID, "meta": {"version": 3}}
    intents = [Register("a", DESC, None, 10.0), Register("c", DESC, None, 10.0), MarkReady("b", 10.0),
               MarkDown("a", 5, 10.0), Register(None, DESC, None, 10.0)]
    p = plan_batch(intents, view.get, cluster, ids())
    assert p.deferred == [3]  # a's DOWN mark waits for the next batch
    kinds = [(op["op"], op.get("object", {}).get("id", op.get("id"))) for op in p.ops]
    assert kinds == [("update", "a"), ("check", DEFAULT_CLUSTER_ID), ("create", "c"), ("update", "b"),
                     ("create", "new1")]
    assert p.ops[0]["expect_version"] == 5 and p.ops[1]["expect_version"] == 3
    assert p.ops[3]["object"]["status"]["state"] == "ready"
    assert {i: o.node_id for i, o in p.outcomes.items()} == {0: "a", 1: "c", 2: "b", 4: "new1"}


def test_plan_skips_stale_down_marks_and_refuses_a_removed_certified_node() -> None:
    view = {"a": node("a", version=7), "b": node("b", "down")}
    cluster = with_removed_node({"id": DEFAULT_CLUSTER_ID, "meta": {"version": 3}}, "gone", 1.0)
    p = plan_batch([MarkDown("a", 5, 1.0), MarkDown("b", 5, 1.0), MarkDown("x", 1, 1.0), MarkReady("a", 1.0),
                    Register("gone", DESC, None, 1.0, certified=True), Register("gone", DESC, None, 1.0)],
                   view.get, cluster, ids())
    assert len(p.ops) == 2 and p.ops[0]["op"] == "check"
    assert p.ops[1]["op"] == "create" and p.ops[1]["object"]["id"] == "new1"  # uncertified: a new id
    assert [p.outcomes[i].skipped for i in range(4)] == ["changed since judged", "not ready", "removed",
                                                          "already ready"]
    assert isinstance(p.outcomes[4].error, PermissionDenied)


class CountingStore(LocalStore):
    def __init__(self) -> None:
        super().__init__()
        self.txns: list[list[dict[str, Any]]] = []
        self.gets = 0

    async def txn(self, ops: list[dict[str, Any]]) -> TxnResult:
        self.txns.append(ops)
        return await super().txn(ops)

    async def get(self, kind: str, obj_id: str) -> dict[str, Any]:
        self.gets += 1
        return await super().get(kind, obj_id)


class View:
    """A dict standing in for the dispatcher's mirror (folds committed changes like StoreMirror.apply_written)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def apply(self, result: TxnResult) -> None:
        for c in result.changes:
            if c.action == "delete":
                self.objects.pop((c.kind, c.id), None)
            else:
                self.objects[(c.kind, c.id)] = c.object


def writer(store: LocalStore, view: View, **kw: Any) -> NodeWriter:
    return NodeWriter(store, view=lambda nid: view.objects.get(("node", nid)),
                      cluster=lambda: view.objects.get(("cluster", DEFAULT_CLUSTER_ID)), apply=view.apply,
                      new_id=ids(), **kw)


async def test_many_registrations_are_one_transaction_each_chunk() -> None:
    store, view = CountingStore(), View()
    cluster = await ensure_cluster(store, 5.0)
    view.objects[("cluster", DEFAULT_CLUSTER_ID)] = cluster
    w = writer(store, view, chunk_ops=100, interval=0.02)
    runner = asyncio.create_task(w.run())
    store.txns.clear()
    results = await asyncio.gather(*(w.write(Register(f"n{i:03d}", DESC, None, 1.0)) for i in range(250)))
    assert all(o.written for o, _ in results)
    assert len(store.txns) == 3  # 250 registrations (and one cluster check each): 100 + 100 + 50
    assert store.gets == 0  # the view answered every read
    _, nodes = await store.list("node")
    assert len(nodes) == 250 and all(n["status"]["state"] == "ready" for n in nodes)
    # the registration's revision is the one that committed it (the session's min revision)
    assert {r.revision for _, r in results if r is not None} == {int(n["meta"]["version"]) for n in nodes}
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_a_full_queue_refuses_instead_of_growing() -> None:
    store, view = CountingStore(), View()
    w = writer(store, view, max_pending=3)
    for i in range(3):
        w.submit(Register(f"n{i}", DESC, None, 1.0))
    with pytest.raises(Busy) as e:
        w.submit(Register("n9", DESC, None, 1.0))
    assert e.value.status == 503 and w.stats["refused_busy"] == 1 and w.pending() == 3
    await w.flush()
    assert w.pending() == 0 and len(store.txns) == 1
    w.submit(Register("n9", DESC, None, 1.0))  # room again


async def test_a_conflicting_batch_rereads_its_nodes_and_commits() -> None:
    store, view = CountingStore(), View()
    # the view is behind: node a exists in the store at a newer version, b was updated by a user
    await store.txn([t.create("node", {k: v for k, v in node("a").items() if k != "meta"})])
    await store.txn([t.create("node", {k: v for k, v in node("b", "down").items() if k != "meta"})])
    stale_b = await store.get("node", "b")
    view.objects[("node", "b")] = stale_b
    cur = await store.get("node", "b")
    await store.txn([t.update("node", {**cur, "spec": {**cur["spec"], "labels": {"zone": "x"}}})])
    store.txns.clear()
    store.gets = 0
    w = writer(store, view)
    futures = [w.submit(Register("a", DESC, "10.0.0.1", 2.0)), w.submit(MarkReady("b", 2.0))]
    await w.flush()
    results = await asyncio.gather(*futures)
    assert all(o.written for o, _ in results)
    assert len(store.txns) == 2 and store.gets == 2  # one conflict, a and b re-read, then one commit
    b = await store.get("node", "b")
    assert b["status"]["state"] == "ready" and b["spec"]["labels"] == {"zone": "x"}  # the user's label kept
    a = await store.get("node", "a")
    assert a["status"]["addr"] == "10.0.0.1"


async def test_down_mark_of_a_node_changed_since_judged_is_skipped() -> None:
    store, view = CountingStore(), View()
    await store.txn([t.create("node", {k: v for k, v in node("a").items() if k != "meta"})])
    judged = await store.get("node", "a")
    view.objects[("node", "a")] = judged
    # it re-registered at another dispatcher meanwhile
    await store.txn([t.update("node", {**judged, "status": {**judged["status"], "timestamp": 9.0}})])
    w = writer(store, view)
    outcome, result = await w.write(MarkDown("a", judged["meta"]["version"], 10.0))
    assert not outcome.written and outcome.skipped == "changed since judged" and result is None
    assert (await store.get("node", "a"))["status"]["state"] == "ready"


async def test_a_removed_certified_node_is_refused_and_nothing_is_written() -> None:
    store, view = CountingStore(), View()
    cluster = await ensure_cluster(store, 5.0)
    cur = await store.get("cluster", DEFAULT_CLUSTER_ID)
    await store.txn([t.update("cluster", with_removed_node(cur, "gone", 1.0))])
    view.objects[("cluster", DEFAULT_CLUSTER_ID)] = await store.get("cluster", DEFAULT_CLUSTER_ID)
    assert cluster is not None
    store.txns.clear()
    w = writer(store, view)
    with pytest.raises(PermissionDenied):
        await w.write(Register("gone", DESC, None, 1.0, certified=True))
    assert store.txns == []
