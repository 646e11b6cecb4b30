"""The Dispatcher shell without HTTP, over LocalStore and a fake clock: batched status writes that survive
version conflicts and exceed one transaction, the startup grace, and the rule that a dispatcher cut off from
the bus judges only the nodes it serves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from services.dispatcher.core import desired_role_name
from services.dispatcher.loop import Dispatcher
from services.dispatcher.settings import DispatcherSettings
from shoal import endpoints
from shoal.bus import MemoryBus
from shoal.bus.subjects import NODE_HEARTBEAT
from shoal.clock import FakeClock
from shoal.cluster import with_removed_node
from shoal.errors import NotFound
from shoal.models.objects import task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.txn import TxnResult

pytestmark = pytest.mark.timeout(30)

P = 1.0
DESCRIPTION = {"hostname": "h", "platform": {"os": "linux", "arch": "amd64"},
               "resources": {"nano_cpus": 1, "memory_bytes": 1}, "executors": ["process"]}


class DisconnectedBus(MemoryBus):
    connected = False


class RacingStore(LocalStore):
    """Runs `race()` just before the next transaction that updates tasks: another writer gets in first."""

    race: Callable[[], Awaitable[None]] | None = None

    async def txn(self, ops: list[dict[str, Any]]) -> TxnResult:
        if self.race is not None and any(op["kind"] == "task" and op["op"] == "update" for op in ops):
            race, self.race = self.race, None
            await race()
        return await super().txn(ops)


async def started(store: LocalStore, clock: FakeClock, bus: MemoryBus | None = None) -> Dispatcher:
    settings = DispatcherSettings(heartbeat_period=P, poll_interval=0.02, status_batch_interval=0.01)
    d = Dispatcher(settings, store=store, bus=bus or MemoryBus(), clock=clock)
    d._runner = asyncio.create_task(d.run())  # type: ignore[attr-defined]
    for _ in range(200):
        if d.ready():
            return d
        await asyncio.sleep(0.01)
    raise AssertionError("dispatcher not ready")


@pytest.fixture
async def store() -> AsyncIterator[LocalStore]:
    yield LocalStore()


async def stop(d: Dispatcher) -> None:
    d.stop()
    await d._runner  # type: ignore[attr-defined]


def task(tid: str, node_id: str, state: str = "assigned") -> dict[str, Any]:
    return {"id": tid, "service_id": "s", "node_id": node_id, "desired_state": "running", "slot": 1,
            "runtime": "process", "spec": {"process": {"command": ["sleep", "30"]}},
            "status": task_status(state, 1.0, "")}


async def settle(store: LocalStore, check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_status_writes_survive_conflicts_and_span_transactions() -> None:
    store = RacingStore()
    clock = FakeClock(time.time())
    d = await started(store, clock)
    reg = await d.register(None, DESCRIPTION, None)
    node_id, sid = reg["node_id"], reg["session_id"]
    ids = [f"t{i:04d}" for i in range(450)]
    await store.txn([t.create("task", task(tid, node_id)) for tid in ids])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, len(d.node_tasks(node_id)) == 450))
    before = store.mem.revision

    # The orchestrator raises one desired state just before the batch is written: the batch's version
    # precondition fails, and the dispatcher re-reads and writes again.
    async def orchestrator() -> None:
        cur = await store.get("task", "t0000")
        await LocalStore.txn(store, [t.update("task", {**cur, "desired_state": "shutdown"})])

    store.race = orchestrator
    accepted = d.report_status(sid, [(tid, task_status("running", 2.0, "started", pid=7)) for tid in ids])
    assert accepted == 450

    async def all_running() -> bool:
        _, items = await store.list("task")
        return all(x["status"]["state"] == "running" for x in items)
    await settle(store, all_running)
    final = await store.get("task", "t0000")
    assert final["desired_state"] == "shutdown" and final["status"]["pid"] == 7
    assert store.mem.revision - before >= 3  # 450 updates do not fit one 200-op transaction
    assert d.metrics.value("dispatcher_status_conflicts_total") >= 1
    # duplicates and regressions are dropped at once
    assert d.report_status(sid, [("t0001", task_status("running", 3.0, "again")),
                                 ("t0002", task_status("starting", 3.0))]) == 0
    await stop(d)


async def test_nodes_ready_at_start_get_six_periods(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    node = {"id": "n1", "spec": {}, "role": "worker", "description": DESCRIPTION,
            "status": {"state": "ready", "message": "", "addr": None, "timestamp": clock.now() - 100}}
    await store.txn([t.create("node", node)])
    d = await started(store, clock)
    clock.advance(3 * P + 0.1)
    assert await d.expire_nodes() == []
    clock.advance(3 * P)
    assert await d.expire_nodes() == ["n1"]
    down = await store.get("node", "n1")
    assert down["status"]["state"] == "down" and down["status"]["message"] == "heartbeat failure"
    await stop(d)


async def test_impossible_heartbeat_messages_do_not_keep_a_node_ready(store: LocalStore) -> None:
    """Issue 16: a NODE_HEARTBEAT with `at: Infinity` (or NaN, next year, a string, an unknown node) from NATS
    is dropped and counted; the silent node still goes DOWN on time."""
    clock = FakeClock(time.time())
    bus = MemoryBus()
    node = {"id": "n1", "spec": {}, "role": "worker", "description": DESCRIPTION,
            "status": {"state": "ready", "message": "", "addr": None, "timestamp": clock.now()}}
    await store.txn([t.create("node", node)])
    d = await started(store, clock, bus)
    for at in (float("inf"), float("nan"), clock.now() + 3600 * 24 * 365, "now", None, True, 10**400 // 10**399):
        await d._on_heartbeat_message({"node_id": "n1", "at": at})
    await d._on_heartbeat_message({"node_id": "ghost-" + "x" * 200, "at": clock.now()})
    for i in range(1000):  # unknown nodes: liveness keyed by remote input does not grow
        await d._on_heartbeat_message({"node_id": f"nobody{i}", "at": clock.now()})
    await d._on_heartbeat_message(["not", "an", "object"])  # type: ignore[arg-type]
    assert set(d.liveness.last_seen) <= {"n1"} and d.liveness.last_seen.get("n1", 0) <= clock.now()
    assert "shoal_dispatcher_heartbeat_messages_dropped_total 1009.0" in d.metrics.render()
    clock.advance(6 * P + 0.1)
    assert await d.expire_nodes() == ["n1"]
    await stop(d)


async def test_without_the_bus_only_nodes_served_here_go_down(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    d = await started(store, clock, DisconnectedBus())
    here = (await d.register(None, DESCRIPTION, None))["node_id"]
    elsewhere = {"id": "far", "spec": {}, "role": "worker", "description": DESCRIPTION,
                 "status": {"state": "ready", "message": "", "addr": None, "timestamp": clock.now()}}
    res = await store.txn([t.create("node", elsewhere)])
    d.mirror.apply_written(res)
    clock.advance(3 * P + 0.1)
    assert await d.expire_nodes() == [here]
    assert (await store.get("node", "far"))["status"]["state"] == "ready"
    await stop(d)


async def test_a_heartbeat_for_a_node_marked_down_elsewhere_brings_it_back(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    d = await started(store, clock)
    reg = await d.register(None, DESCRIPTION, None)
    cur = await store.get("node", reg["node_id"])
    res = await store.txn([t.update("node", {**cur, "status": {**cur["status"], "state": "down"}})])
    d.mirror.apply_written(res)
    assert 0.9 * P <= (await d.heartbeat(reg["session_id"]))["period"] <= 1.1 * P

    async def ready() -> bool:
        return bool((await store.get("node", reg["node_id"]))["status"]["state"] == "ready")
    await settle(store, ready)
    await stop(d)


async def test_an_agent_of_a_removed_node_joins_again_as_a_new_node(store: LocalStore) -> None:
    """`shoal node rm --force` on a live node: the dispatcher ends its session and the agent registers again
    with the id it persisted. That id is in the cluster's `removed_nodes` (written with the node's deletion),
    so the agent gets a new id instead of the removed node coming back (on real processes it did, half a
    second after the removal, with its tasks free to be scheduled onto it again)."""
    clock = FakeClock(time.time())
    d = await started(store, clock)
    first = await d.register(None, DESCRIPTION, None)
    old_id = first["node_id"]
    assert (await d.register(old_id, DESCRIPTION, None))["node_id"] == old_id  # a known node keeps its id
    never_seen = "z" * 25  # an id this cluster never had (e.g. an agent's state from an older cluster)
    assert (await d.register(never_seen, DESCRIPTION, None))["node_id"] == never_seen

    node = await store.get("node", old_id)
    cluster = await store.get("cluster", "default")
    res = await store.txn([t.delete("node", old_id, expect_version=node["meta"]["version"]),
                           t.update("cluster", with_removed_node(cluster, old_id, clock.now()))])
    d.mirror.apply_written(res)
    d._absorb(res.changes)  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        d.session(first["session_id"])  # its session ended with the removal

    again = await d.register(old_id, DESCRIPTION, None)
    assert again["node_id"] != old_id
    assert (await store.get("node", again["node_id"]))["status"]["state"] == "ready"
    with pytest.raises(NotFound):
        await store.get("node", old_id)
    await stop(d)


class RemovingStore(LocalStore):
    """Removes node `victim` (with its tombstone) just before the next transaction that creates a node."""

    victim: str | None = None

    async def txn(self, ops: list[dict[str, Any]]) -> TxnResult:
        if self.victim is not None and any(op["kind"] == "node" and op["op"] == "create" for op in ops):
            victim, self.victim = self.victim, None
            node = self.mem.find("node", victim)
            cluster = self.mem.get("cluster", "default")
            removal = [t.update("cluster", with_removed_node(cluster, victim, 1.0))]
            if node is not None:
                removal.insert(0, t.delete("node", victim))
            await super().txn(removal)
        return await super().txn(ops)


async def test_a_removal_racing_a_registration_is_not_undone() -> None:
    """The registration read the cluster before the node's id was removed: its create carries a check of the
    cluster's version, fails, and the retry sees the tombstone."""
    store = RemovingStore()
    clock = FakeClock(time.time())
    d = await started(store, clock)
    store.victim = "y" * 25
    reg = await d.register("y" * 25, DESCRIPTION, None)
    assert reg["node_id"] != "y" * 25
    assert store.mem.find("node", "y" * 25) is None
    await stop(d)


async def test_the_heartbeat_answer_carries_the_nodes_desired_role(store: LocalStore) -> None:
    """`shoal node promote|demote` sets the node's `spec.role`; the agent learns it from its next heartbeat
    answer and renews its certificate at once when its role differs (shoal.enroll.Renewer.desire)."""
    d = await started(store, FakeClock(time.time()))
    reg = await d.register(None, DESCRIPTION, None)
    assert (await d.heartbeat(reg["session_id"]))["role"] == "worker"
    cur = await store.get("node", reg["node_id"])
    res = await store.txn([t.update("node", {**cur, "spec": {**cur["spec"], "role": "manager"}})])
    d.mirror.apply_written(res)
    assert (await d.heartbeat(reg["session_id"]))["role"] == "manager"
    assert desired_role_name({"spec": {"role": "bogus"}}) is None and desired_role_name(None) is None


async def test_task_changes_no_node_sees_do_not_recompute_the_endpoint_table(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    d = await started(store, clock)
    reg = await d.register(None, DESCRIPTION, None)
    d.node_endpoints(reg["node_id"])  # a session polled the table: it is kept current from now on
    plain = {"id": "s", "spec": {"name": "batch", "task": {}}, "endpoint": {"ports": []}}
    web = {"id": "w", "spec": {"name": "web", "task": {}}, "endpoint": {"ports": [
        {"protocol": "tcp", "target_port": 80, "published_port": 30080, "publish_mode": "ingress"}]}}
    await store.txn([t.create("service", plain), t.create("service", web)])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, d.mirror.get("service", "w") is not None))
    await asyncio.sleep(0.3)
    before = d.metrics.value("dispatcher_endpoint_computations_total")
    await store.txn([t.create("task", task(f"p{i}", reg["node_id"])) for i in range(50)])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, len(d.node_tasks(reg["node_id"])) == 50))
    await asyncio.sleep(0.3)
    assert d.metrics.value("dispatcher_endpoint_computations_total") == before  # service "batch": nobody's
    await store.txn([t.create("task", {**task("w1", reg["node_id"]), "service_id": "w"})])
    d.wake()

    async def recomputed() -> bool:
        return d.metrics.value("dispatcher_endpoint_computations_total") > before
    await settle(store, recomputed)
    await stop(d)


async def test_the_tables_node_networks_come_from_the_networked_tasks_alone(store: LocalStore) -> None:
    """Issue 13: the per-node networks the endpoint table is sent by were computed over every task at each
    node change. The dispatcher keeps the ids of the tasks attached to a network from each batch; the result
    must equal the computation over all tasks through creates, updates that drop the networks, and deletes."""
    d = await started(store, FakeClock(time.time()))
    reg = await d.register(None, DESCRIPTION, None)
    nid = reg["node_id"]
    d.node_endpoints(nid)  # a session polled the table: it is kept current

    def on(tid: str, net: str) -> dict[str, Any]:
        return {**task(tid, nid), "networks": [{"network_id": net, "addresses": []}]}

    await store.txn([t.create("task", on("n1", "net-a")), t.create("task", on("n2", "net-b"))]
                    + [t.create("task", task(f"p{i}", nid)) for i in range(20)])
    plain = await store.get("task", "n2")
    await store.txn([t.update("task", {**plain, "networks": []}), t.delete("task", "p0")])
    await store.txn([t.delete("task", "n1"), t.create("task", on("n3", "net-c"))])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, d.mirror.get("task", "n3") is not None))
    assert d._networked == {"n3"}
    d._refresh_endpoints()
    assert d._endpoint_nets == endpoints.networks_by_node(d.mirror.list("task")) == {nid: {"net-c"}}
    await stop(d)


async def test_a_stalled_loop_moves_heartbeat_deadlines(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    d = await started(store, clock)
    reg = await d.register(None, DESCRIPTION, None)
    await asyncio.sleep(0.3)  # the expiry loop is waiting on its timer
    time.sleep(1.2)  # the event loop cannot run (a starved process, a huge batch): heartbeats would wait unread
    await asyncio.sleep(0.5)
    allowance = d.stalls.allowance(asyncio.get_running_loop().time(), 3 * P)
    assert allowance >= 0.5
    # silent for exactly the grace: not DOWN yet, the stall is excused; DOWN once the allowance has passed too
    clock.advance(3 * P)
    assert await d.expire_nodes() == []
    clock.advance(allowance + 0.1)
    assert await d.expire_nodes() == [reg["node_id"]]
    await stop(d)


async def test_another_dispatcher_hears_the_heartbeats_in_batches(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    bus = MemoryBus()
    d1 = await started(store, clock, bus)
    d2 = await started(store, clock, bus)
    regs = [await d1.register(None, DESCRIPTION, None) for _ in range(5)]
    await settle(store, lambda: asyncio.sleep(0, all(d2.mirror.get("node", r["node_id"]) for r in regs)))
    bus.published.clear()
    for _ in range(4):
        clock.advance(P)
        for r in regs:
            await d1.heartbeat(r["session_id"])
        await asyncio.sleep(0.6)  # a flush interval
    beats = [m for s, m in bus.published if s == NODE_HEARTBEAT]
    assert 1 <= len(beats) <= 4 and all("beats" in m for m in beats)  # 20 heartbeats, a message per interval
    assert all(d2.liveness.last_seen.get(r["node_id"]) == clock.now() for r in regs)
    clock.advance(3 * P - 0.5)  # d1's nodes heard at d2 through the bus: not DOWN there
    assert await d2.expire_nodes() == []
    await stop(d1)
    await stop(d2)


async def test_the_dispatcher_serving_a_node_judges_it_first_and_the_others_later(store: LocalStore) -> None:
    """Issue 13: the beats of d1's nodes reach d2 late (batched, and never while d1 is stalled). Judged at the
    same grace, d2 marked d1's live nodes DOWN, d1 marked them READY again on their next heartbeat, and every
    flap replaced the node's tasks. d2 now waits REMOTE_GRACE; d1, which hears the node itself, judges it."""
    clock = FakeClock(time.time())
    bus = MemoryBus()
    d1 = await started(store, clock, bus)
    d2 = await started(store, clock, bus)
    reg = await d1.register(None, DESCRIPTION, None)
    nid = reg["node_id"]
    await settle(store, lambda: asyncio.sleep(0, d2.mirror.get("node", nid) is not None))
    clock.advance(P)
    await d1.heartbeat(reg["session_id"])
    await settle(store, lambda: asyncio.sleep(0, d2.liveness.last_seen.get(nid) == clock.now()))
    clock.advance(3 * P + 0.6)  # silent for the grace and a bit (a late batch, a stall of d1's)
    assert await d2.expire_nodes() == []
    assert (await store.get("node", nid))["status"]["state"] == "ready"
    # d1 hears the node itself: the usual grace there
    assert [n["id"] for n in d1.liveness.expired(d1.mirror.list("node"), clock.now(), P)] == [nid]
    clock.advance(2.5 * P)  # d1 died with the node and never marked it: d2 is the backstop
    assert await d2.expire_nodes() == [nid]
    await stop(d1)
    await stop(d2)


async def test_most_nodes_silent_at_once_are_marked_down_slowly_and_keep_their_sessions(store: LocalStore) -> None:
    """Issue 13: a hundred hollow agents in one starved process all go silent at once. Their silence is more
    likely this side's than theirs (core.Disruption): one a period goes DOWN, the others keep their sessions,
    and a heartbeat arriving late saves its node without a new registration."""
    clock = FakeClock(time.time())
    d = await started(store, clock)
    regs = [await d.register(None, DESCRIPTION, None) for _ in range(20)]
    await settle(store, lambda: asyncio.sleep(0, all(d.mirror.get("node", r["node_id"]) for r in regs)))
    clock.advance(3 * P + 0.1)  # silent since they registered here
    for r in regs[15:]:
        await d.heartbeat(r["session_id"])  # 5 of 20 heartbeat on time; 15 are silent
    marked = await d.expire_nodes()
    assert len(marked) == 1  # 2 % of the 20 nodes (at least one), not 15
    assert d.metrics.value("dispatcher_disruptions_total") == 1
    spared = [r for r in regs[:15] if r["node_id"] not in marked]
    # the spared nodes' sessions are still here: their late heartbeats are answered, no registration needed
    for r in spared:
        await d.heartbeat(r["session_id"])
    assert await d.expire_nodes() == []
    states = {r["node_id"]: (await store.get("node", r["node_id"]))["status"]["state"] for r in regs}
    assert sorted(n for n, s in states.items() if s == "down") == sorted(marked)
    await stop(d)


async def test_one_silent_node_among_many_goes_down_at_once(store: LocalStore) -> None:
    clock = FakeClock(time.time())
    d = await started(store, clock)
    regs = [await d.register(None, DESCRIPTION, None) for _ in range(12)]
    await settle(store, lambda: asyncio.sleep(0, all(d.mirror.get("node", r["node_id"]) for r in regs)))
    clock.advance(3 * P + 0.1)
    for r in regs[1:]:
        await d.heartbeat(r["session_id"])
    assert await d.expire_nodes() == [regs[0]["node_id"]]
    assert d.metrics.value("dispatcher_disruptions_total") == 0
    with pytest.raises(NotFound):  # its session ended with the DOWN mark
        await d.heartbeat(regs[0]["session_id"])
    await stop(d)


async def test_an_assignment_message_after_a_change_looks_only_at_the_changed_tasks(store: LocalStore) -> None:
    """Issue 13: the message that follows a change is the diff of the tasks that changed, not of the node's
    whole set — the node's set is not read again (only a COMPLETE set reads it), and it still carries exactly
    the changes; a re-list makes the next message diff the whole set again."""
    clock = FakeClock(time.time())
    d = await started(store, clock)
    reg = await d.register(None, DESCRIPTION, None)
    node_id, sid = reg["node_id"], reg["session_id"]
    await store.txn([t.create("task", task(f"t{i:03d}", node_id)) for i in range(300)])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, len(d.node_tasks(node_id)) == 300))
    first = await d.assignments(sid, 0, 0.0)
    assert first["type"] == "complete" and len(first["tasks"]) == 300
    whole_reads = 0
    real_tasks = d.index.tasks

    def counted(nid: str) -> dict[str, Any]:
        nonlocal whole_reads
        whole_reads += 1
        return real_tasks(nid)

    d.index.tasks = counted  # type: ignore[method-assign]
    cur = await store.get("task", "t007")
    await store.txn([t.update("task", {**cur, "desired_state": "shutdown"}), t.create("task", task("u1", node_id))])
    d.wake()
    msg = await d.assignments(sid, first["seq"], 5.0)
    assert msg["type"] == "incremental" and msg["applies_to"] == first["seq"]
    assert [(c["action"], c["task"]["id"], c["task"]["desired_state"]) for c in msg["changes"]] == [
        ("update", "t007", "shutdown"), ("update", "u1", "running")]
    assert whole_reads == 0
    # the agent's own status: not echoed, and the stream now holds that version (no old copy kept)
    running = task_status("running", 2.0, "started")
    assert d.report_status(sid, [("t001", running)]) == 1
    await settle(store, lambda: asyncio.sleep(0, d.mirror.get("task", "t001")["status"]["state"] == "running"))
    assert (await d.assignments(sid, msg["seq"], 0.0))["changes"] == []
    assert d.sessions[sid].stream.sent["t001"] is d.mirror.get("task", "t001")
    assert whole_reads == 0
    d.mirror.resync()  # a re-list: everything may have changed, the next message diffs the whole set
    await settle(store, lambda: asyncio.sleep(0, d.index.relists >= 2))
    assert (await d.assignments(sid, msg["seq"], 0.0))["changes"] == []
    assert whole_reads == 1
    await stop(d)


async def test_a_nodes_endpoint_table_is_computed_again_only_when_its_inputs_moved(store: LocalStore) -> None:
    """Issue 13: a node's endpoint table is kept until one of its tasks, its address, the table's rows or the
    key ring changes — an endpoint poll does not read all the node's tasks again."""
    clock = FakeClock(time.time())
    d = await started(store, clock)
    reg = await d.register(None, DESCRIPTION, None)
    node_id = reg["node_id"]
    await store.txn([t.create("task", {**task(f"p{i}", node_id), "networks": [{"network_id": "n1"}]})
                     for i in range(40)] + [t.create("task", task(f"plain{i}", node_id)) for i in range(30)])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, len(d.node_tasks(node_id)) == 70))
    first = d.node_endpoints(node_id)
    reads = 0
    real_get = d.mirror.get
    real_refresh = d._refresh_endpoints
    refreshing = False

    def counted(kind: str, oid: str) -> Any:
        nonlocal reads
        reads += kind == "task" and not refreshing  # the node's answer's reads, not the whole table's
        return real_get(kind, oid)

    def refresh() -> None:
        nonlocal refreshing
        refreshing = True
        try:
            real_refresh()
        finally:
            refreshing = False

    d.mirror.get = counted  # type: ignore[method-assign]
    d._refresh_endpoints = refresh  # type: ignore[method-assign]
    assert d.node_endpoints(node_id) is first and reads == 0
    cur = await store.get("task", "p3")
    await store.txn([t.update("task", {**cur, "desired_state": "shutdown"})])
    d.wake()
    await settle(store, lambda: asyncio.sleep(0, real_get("task", "p3")["desired_state"] == "shutdown"))
    again = d.node_endpoints(node_id)
    # read again (one of its tasks moved), the same networks; its 30 tasks on no network are never read
    assert reads == 40 and again == first
    assert d.node_endpoints(node_id) is again and reads == 40
    d.mirror.resync()  # a re-list: computed again
    await settle(store, lambda: asyncio.sleep(0, d.index.relists >= 2))
    d.node_endpoints(node_id)
    assert reads == 80
    await stop(d)
