"""The raftstore HTTP API in-process (one real member: WAL in a temp dir, Raft over a loopback peer port) through
StoreClient, so the contract of shoal/store/client.py is checked end to end without extra processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.raftstore.app import create_app
from services.raftstore.member import Member
from services.raftstore.settings import RaftstoreSettings, parse_members
from shoal.bus.memory import MemoryBus
from shoal.bus.subjects import STORE_EVENTS
from shoal.clock import FakeClock
from shoal.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    TxnTooLarge,
    VersionConflict,
)
from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import ClusterCerts, free_ports
from tests.specs import service_spec as spec

pytestmark = pytest.mark.timeout(60)


def settings_for(tmp: Path, members: int = 1, me: int = 1) -> RaftstoreSettings:
    ports = free_ports(2 * members)
    spec = ";".join(f"{i}=https://127.0.0.1:{ports[i - 1]},127.0.0.1:{ports[members + i - 1]},node-{i}"
                    for i in range(1, members + 1))
    return RaftstoreSettings(raft_id=me, raft_members=spec, data_dir=tmp / str(me), raft_tick=0.02, nats_url="")


@contextlib.asynccontextmanager
async def one_member_app(tmp_path: Path) -> AsyncIterator[Any]:
    """The raftstore app of one in-process member (in-memory bus, fake clock at 1000 s), with its lifespan
    running, once the member leads (the actor and gateway-event tests)."""
    member = Member(settings_for(tmp_path), ClusterCerts(tmp_path).member(1), rng=random.Random(1))
    app = create_app(member.settings, member, MemoryBus(), clock=FakeClock(1000.0))
    async with app.router.lifespan_context(app):
        for _ in range(300):
            if member.driver.is_leader:
                break
            await asyncio.sleep(0.01)
        yield app


class Harness:
    def __init__(self, member: Member, bus: MemoryBus, client: StoreClient, http: httpx.AsyncClient) -> None:
        self.member, self.bus, self.client, self.http = member, bus, client, http


@pytest.fixture
async def solo(tmp_path: Path) -> AsyncIterator[Harness]:
    member = Member(settings_for(tmp_path), ClusterCerts(tmp_path).member(1), rng=random.Random(1))
    bus = MemoryBus()
    app = create_app(member.settings, member, bus, clock=FakeClock(1000.0))
    async with app.router.lifespan_context(app):  # starts the member and the hint publisher
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://store")
        client = StoreClient(["http://store"], client=http, retry_for=2.0)
        for _ in range(200):
            if member.driver.is_leader:
                break
            await asyncio.sleep(0.01)
        try:
            yield Harness(member, bus, client, http)
        finally:
            await http.aclose()


async def test_writes_are_stamped_by_the_leader_and_read_back(solo: Harness) -> None:
    res = await solo.client.txn([t.create("service", {"id": "a", "spec": spec("web")})])
    obj = res.changes[0].object
    assert obj["meta"] == {"version": res.revision, "created_at": 1000.0, "updated_at": 1000.0}
    assert (await solo.client.get("service", "a"))["meta"]["version"] == res.revision
    rev, items = await solo.client.list("service")
    assert rev >= res.revision and [o["id"] for o in items] == ["a"]


async def test_errors_come_back_typed_and_change_nothing(solo: Harness) -> None:
    res = await solo.client.txn([t.create("service", {"id": "a", "spec": spec("web")})])
    with pytest.raises(AlreadyExists):
        await solo.client.txn([t.create("service", {"id": "b", "spec": spec("WEB")})])
    with pytest.raises(VersionConflict):
        await solo.client.txn([t.update("service", {"id": "a", "spec": spec("x")}, expect_version=999)])
    with pytest.raises(NotFound):
        await solo.client.get("service", "nope")
    with pytest.raises(InvalidArgument):
        await solo.client.list("bogus")
    with pytest.raises(InvalidArgument):
        await solo.client.txn([])
    with pytest.raises(TxnTooLarge):
        await solo.client.txn([t.create("network", {"id": "big", "data": "x" * 2_000_000})])
    r = await solo.http.post("/v1/txn", content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    _, items = await solo.client.list("service")
    assert [o["meta"]["version"] for o in items] == [res.revision]


@pytest.mark.parametrize(("kind", "obj", "needle"), [
    ("service", {"id": "s", "spec": {"name": "web"}}, "ops[1] (service): spec.task: Field required"),
    ("service", {"id": "s", "spec": spec("web", mode={"replicated": {"replicas": 2**63 - 1}})},
     "spec.mode.replicated.replicas: Input should be less than or equal to 100000"),
    ("service", {"id": "s", "spec": spec("web", labels={"a": "b\nc"})}, "spec.labels.a"),
    ("network", {"id": "n", "spec": {"name": "n", "ipam": {"subnet": "0.0.0.0/0"}}}, "too large"),
    ("cluster", {"id": "default", "spec": {"dispatcher": {"heartbeat_period": 0.001}}}, "heartbeat_period"),
    ("node", {"id": "n", "spec": {"availability": "gone"}}, "spec.availability"),
    ("task", {"id": "t", "desired_state": "dancing"}, "desired_state must be one of the task states"),
    ("task", {"id": "t", "slot": "1"}, "slot must be an integer"),
])
async def test_the_store_refuses_objects_its_consumers_cannot_read(solo: Harness, kind: str, obj: dict[str, Any],
                                                                   needle: str) -> None:
    """Issue 16: whoever writes (any subsystem may call /v1/txn), the leader checks written objects against the
    gateway's models; nothing of the transaction is applied."""
    before, _ = await solo.client.list("service")
    with pytest.raises(InvalidArgument) as e:
        await solo.client.txn([t.create("service", {"id": "ok", "spec": spec("ok")}), t.create(kind, obj)])
    assert needle in e.value.message
    rev, items = await solo.client.list("service")
    assert rev == before and items == []
    assert "raftstore_txn_refused_objects_total 1" in (await solo.http.get("/metrics")).text


async def test_list_filters_and_stale_reads(solo: Harness) -> None:
    await solo.client.txn([t.create("task", {"id": "t1", "service_id": "s1", "node_id": "n1"}),
                           t.create("task", {"id": "t2", "service_id": "s2", "node_id": "n1"})])
    _, items = await solo.client.list("task", service_id="s1")
    assert [o["id"] for o in items] == ["t1"]
    r = await solo.http.get("/v1/objects/task", params={"node_id": "n1", "stale": "true"})
    assert [o["id"] for o in r.json()["items"]] == ["t1", "t2"]


async def test_watch_long_polls_until_a_commit(solo: Harness) -> None:
    rev, _ = await solo.client.list("service")
    waiter = asyncio.create_task(solo.client.watch(rev, wait=5.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    res = await solo.client.txn([t.create("service", {"id": "w", "spec": spec("w")})])
    batch = await asyncio.wait_for(waiter, 3.0)
    assert [e.revision for e in batch.events] == [res.revision] and batch.revision >= res.revision
    empty = await solo.client.watch(batch.revision, wait=0.1)
    assert empty.events == []


async def test_a_watcher_far_behind_is_answered_in_slices(solo: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: a watcher far behind got every retained event in one answer (28 s of decoding on a member's
    loop at 100k tasks). An answer now stops at about `WATCH_MAX_CHANGES` changes and names its last event's
    revision; the watcher, asking again from there, gets every event exactly once."""
    from services.raftstore.routes import reads
    monkeypatch.setattr(reads, "WATCH_MAX_CHANGES", 5)
    rev, _ = await solo.client.list("service")
    written = []
    for i in range(6):
        res = await solo.client.txn([t.create("service", {"id": f"w{i}-{j}", "spec": spec(f"w{i}-{j}")})
                                     for j in range(2)])
        written.append(res.revision)
    first = await solo.client.watch(rev)
    assert [e.revision for e in first.events] == written[:3]  # 2 + 2 + 2 changes: the third reaches 5
    assert first.revision == written[2]
    seen = [e.revision for e in first.events]
    after = first.revision
    while after < written[-1]:
        batch = await solo.client.watch(after)
        assert batch.events, "no progress"
        seen += [e.revision for e in batch.events]
        after = batch.revision
    assert seen == written
    assert after == written[-1]


async def test_the_watch_writes_a_shared_spec_once_and_the_client_reads_it_as_before(solo: Harness) -> None:
    task_spec = {"process": {"command": ["sleep", "infinity"]}, "restart_policy": {"condition": "any"}}
    rev, _ = await solo.client.list("task")
    res = await solo.client.txn([t.create("task", {"id": f"t{i}", "service_id": "s1", "spec": task_spec})
                                 for i in range(5)])
    plain = (await solo.http.get("/v1/watch", params={"after": rev})).content
    compact = (await solo.http.get("/v1/watch", params={"after": rev, "shared": "true"})).content
    needle = json.dumps(task_spec, separators=(",", ":"))
    assert plain.count(needle.encode()) == 5 and compact.count(needle.encode()) == 1
    batch = await solo.client.watch(rev)  # StoreClient asks for the compact form
    assert batch.events == t.WatchBatch.from_json(json.loads(plain)).events
    assert [c.object for c in batch.events[0].changes] == [c.object for c in res.changes]
    bad = await solo.http.get("/v1/watch", params={"after": rev, "shared": "banana"})
    assert 400 <= bad.status_code < 500
    # a transaction's answer likewise, when its body asks (StoreClient does); the entry is the same either way
    ops = [t.update("task", c.object) for c in res.changes]
    answer = (await solo.http.post("/v1/txn", content=json.dumps({"ops": ops, "shared": True}))).content
    assert answer.count(needle.encode()) == 1
    read = t.TxnResult.from_json(json.loads(answer))
    again = await solo.client.txn([t.update("task", c.object) for c in read.changes])
    assert [c.object["spec"] for c in again.changes] == [task_spec] * 5
    plain = (await solo.http.post("/v1/txn", content=json.dumps({"ops": [t.update("task", c.object)
                                                                        for c in again.changes]}))).content
    assert plain.count(needle.encode()) == 5


async def test_the_leader_publishes_a_hint_per_committed_change(solo: Harness) -> None:
    res = await solo.client.txn([t.create("service", {"id": "h", "spec": spec("h")})])
    await solo.client.txn([t.check("service", "h", expect_version=res.revision)])  # changes nothing: no hint
    for _ in range(100):
        if solo.bus.published:
            break
        await asyncio.sleep(0.01)
    assert solo.bus.published == [(STORE_EVENTS, {"revision": res.revision, "changes": [
        {"kind": "service", "action": "create", "id": "h", "version": res.revision}]})]


async def test_status_readyz_and_metrics(solo: Harness) -> None:
    st = (await solo.http.get("/v1/status")).json()
    assert st["role"] == "leader" and st["leader"] == 1 and st["applied_index"] == st["commit_index"]
    assert st["members"][0]["id"] == 1 and st["state_hash"] is None  # O(objects): only when asked
    hashed = (await solo.http.get("/v1/status", params={"hash": "true"})).json()
    assert hashed["state_hash"] == solo.member.driver.fsm.mem.state_hash() and len(hashed["state_hash"]) == 64
    assert (await solo.http.get("/readyz")).status_code == 200
    assert "shoal_raft_fsyncs_total" in (await solo.http.get("/metrics")).text


async def test_a_member_without_a_leader_refuses_writes_and_linearizable_reads(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, members=3, me=1)  # the other two never start
    member = Member(settings, ClusterCerts(tmp_path).member(1), rng=random.Random(2))
    app = create_app(settings, member, None)
    await member.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://store")
    client = StoreClient(["http://store"], client=http, retry_for=0.5)
    try:
        with pytest.raises(NotLeader, match="no raft leader"):
            await client.txn([t.create("service", {"id": "a", "spec": spec("web")})])
        r = await http.get("/v1/objects/service")
        assert r.status_code == 503
        r = await http.get("/v1/objects/service", params={"stale": "true"})
        assert r.status_code == 200 and r.json()["items"] == []
        assert (await http.get("/readyz")).status_code == 503
    finally:
        await http.aclose()
        await member.stop()


def test_members_spec_is_parsed_and_checked() -> None:
    ms = parse_members("1=http://127.0.0.1:4301,127.0.0.1:4311; 2=http://h:4302/,h:4312")
    assert [(m.id, m.api_url, m.peer_addr) for m in ms] == [
        (1, "http://127.0.0.1:4301", "127.0.0.1:4311"), (2, "http://h:4302", "h:4312")]
    for bad in ("1=http://a:1", "x=http://a:1,a:2", "1=ftp://a:1,a:2", "1=http://a:1,a:2;1=http://b:1,b:2"):
        with pytest.raises(ValueError):
            parse_members(bad)
    with pytest.raises(ValueError, match="not in SHOAL_RAFT_MEMBERS"):
        RaftstoreSettings(raft_id=3, raft_members="1=http://a:1,a:2").members()


async def started_members(tmp_path: Path) -> list[Member]:
    """Three in-process members on loopback ports (20 ms ticks, no NATS), started; the caller stops them."""
    ports = free_ports(6)
    spec = ";".join(f"{i}=https://127.0.0.1:{ports[i - 1]},127.0.0.1:{ports[3 + i - 1]},node-{i}" for i in (1, 2, 3))
    certs = ClusterCerts(tmp_path)
    members = [Member(RaftstoreSettings(raft_id=i, raft_members=spec, data_dir=tmp_path / str(i), raft_tick=0.02,
                                        nats_url=""), certs.member(i), rng=random.Random(i)) for i in (1, 2, 3)]
    for m in members:
        await m.start()
    return members


async def test_a_leader_losing_its_quorum_fails_pending_writes_as_outcome_unknown(tmp_path: Path) -> None:
    members = await started_members(tmp_path)
    try:
        for _ in range(300):
            if any(m.driver.is_leader for m in members):
                break
            await asyncio.sleep(0.01)
        lead = next(m for m in members if m.driver.is_leader)
        data = b'{"ops":[{"op":"create","kind":"service","object":{"id":"x","spec":{}}}],"time":1}'
        assert (await lead.driver.propose(data)).revision > 0
        for m in members:
            if m is not lead:
                await m.stop()
        pending = asyncio.create_task(lead.driver.propose(data.replace(b'"x"', b'"y"')))
        with pytest.raises(OutcomeUnknown, match="may still commit"):
            await asyncio.wait_for(pending, 10)  # CheckQuorum steps the leader down within ~2 election timeouts
        with pytest.raises(NotLeader):
            await lead.driver.propose(data)
    finally:
        for m in members:
            await m.stop()  # idempotent


async def test_a_followers_lost_read_index_request_is_resent(tmp_path: Path) -> None:
    """A follower's ReadIndex request that the network drops must not leave the read waiting for its timeout:
    the driver re-sends it after a few ticks (this once failed CI under load)."""
    from services.raftstore.raft.messages import MsgType

    members = await started_members(tmp_path)
    try:
        for _ in range(500):
            if any(m.driver.is_leader for m in members):
                break
            await asyncio.sleep(0.01)
        follower = next(m for m in members if not m.driver.is_leader)
        for _ in range(200):  # the follower knows its leader, and the leader has committed in its term
            if follower.driver.lead and follower.driver.applied_index >= 1:
                break
            await asyncio.sleep(0.01)
        sender = follower.driver.sender
        real_send = sender.send
        dropped = []

        def lossy(msgs):  # type: ignore[no-untyped-def]
            keep = []
            for msg in msgs:
                if msg.type == MsgType.READ_INDEX and not dropped:
                    dropped.append(msg)
                else:
                    keep.append(msg)
            real_send(keep)

        sender.send = lossy  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        started = loop.time()
        index = await follower.driver.read_barrier(timeout=5.0)
        assert dropped, "the first read-index request was dropped"
        assert index >= 1 and loop.time() - started < 2.0
    finally:
        for m in members:
            await m.stop()


async def test_a_leader_short_of_disk_refuses_writes_clearly_and_keeps_serving_reads(solo: Harness) -> None:
    await solo.client.txn([t.create("service", {"id": "s1", "spec": spec("web")})])
    driver = solo.member.driver
    driver.cfg = dataclasses.replace(driver.cfg, disk_reserve=1 << 62)  # more than any disk has
    r = await solo.http.post("/v1/txn", json={"ops": [t.create("service", {"id": "s2", "spec": spec("x")})]})
    msg = r.json()["message"]
    assert r.status_code == 503 and "data disk has" in msg and "SHOAL_DISK_RESERVE" in msg
    assert [o["id"] for o in (await solo.client.list("service"))[1]] == ["s1"]
    driver.cfg = dataclasses.replace(driver.cfg, disk_reserve=0)
    await solo.client.txn([t.create("service", {"id": "s2", "spec": spec("x")})])


async def test_pages_counts_names_and_prefixes_are_served_by_the_member(solo: Harness) -> None:
    tasks = [{"id": f"t{i:03d}", "service_id": "s1" if i % 3 else "s2", "desired_state": "running",
              "status": {"state": "running" if i % 2 else "pending"}} for i in range(50)]
    await solo.client.txn([t.create("task", x) for x in tasks])
    await solo.client.txn([t.create("service", {"id": "svc1", "spec": spec("Web")})])
    ids: list[str] = []
    token = None
    while True:
        page = await solo.client.page("task", limit=7, cont=token, service_id="s1")
        ids += [o["id"] for o in page.items]
        token = page.next
        if token is None:
            break
    assert ids == sorted(x["id"] for x in tasks if x["service_id"] == "s1")
    running = await solo.client.page("task", **{"status.state": "running", "service_id": "s2"})
    assert [o["id"] for o in running.items] == [x["id"] for x in tasks
                                                if x["service_id"] == "s2" and x["status"]["state"] == "running"]
    assert [o["id"] for o in (await solo.client.page("service", name="WEB")).items] == ["svc1"]
    assert [o["id"] for o in (await solo.client.page("task", id_prefix="t04")).items] == [f"t04{i}" for i in range(10)]
    rev, groups = await solo.client.counts("task", service_id="s2")
    assert rev >= page.revision
    assert sum(g["count"] for g in groups) == 17
    assert {g["values"]["status.state"] for g in groups} == {"running", "pending"}
    with pytest.raises(InvalidArgument, match="continue token"):
        await solo.client.page("task", limit=5, cont="not a token!")
    with pytest.raises(InvalidArgument, match="limit"):
        await solo.client.page("task", limit=0)
    with pytest.raises(InvalidArgument, match="cannot filter counts"):
        await solo.client.counts("task", node_id="n1")


async def test_counts_of_kind_ca_are_refused_like_its_lists(solo: Harness) -> None:
    r = await solo.http.get("http://store/v1/counts/ca")
    assert r.status_code == 403 and "only the CA" in r.json()["message"]


async def test_list_answers_are_the_objects_encoded_afresh_across_writes(solo: Harness) -> None:
    """The member answers lists from its encoded-object cache (services/raftstore/encoded.py): every answer —
    JSON and NDJSON, whole and projected, before and after writes and deletes — is byte for byte what encoding
    the stored objects now gives."""
    from shoal.store import wire

    mem = solo.member.driver.fsm.mem

    async def check() -> None:
        for params in ({}, {"fields": "id,slot"}, {"service_id": "s1"}, {"limit": "3"}):
            objs, _ = mem.page("task", limit=int(params["limit"]) if "limit" in params else None,
                                  **{k: v for k, v in params.items() if k == "service_id"})
            fields = wire.parse_fields(params.get("fields"))
            items = list(wire.project(objs, fields))
            r = await solo.http.get("/v1/objects/task", params=params)
            token = r.json()["continue"]
            assert r.content == wire.dumps({"revision": mem.revision, "items": items, "continue": token})
            r = await solo.http.get("/v1/objects/task", params=params, headers={"accept": wire.NDJSON})
            assert r.content == b"".join(wire.dumps(o) + b"\n" for o in items)

    await solo.client.txn([t.create("task", {"id": f"t{i}", "service_id": f"s{i % 2}", "slot": i})
                           for i in range(10)])
    await check()
    await check()
    await solo.client.txn([t.update("task", {"id": "t3", "service_id": "s1", "slot": 33}),
                           t.delete("task", "t4")])
    await check()
