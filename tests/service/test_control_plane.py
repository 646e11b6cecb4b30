"""Orchestrator, allocator and scheduler running together in one event loop over LocalStore + MemoryBus, with a
fake agent/dispatcher that registers two nodes and walks assigned tasks to RUNNING."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.allocator.app import create_app as allocator_app
from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from services.orchestrator.loop import Orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.bus import MemoryBus
from shoal.bus.subjects import STORE_EVENTS
from shoal.clock import SystemClock
from shoal.errors import Conflict, PreconditionFailed
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.sim.cp_fakes import agent_ops, make_node, make_service, report, scaled, set_node_state

pytestmark = pytest.mark.timeout(60)

FAST: dict[str, Any] = {"lease_duration": 0.6, "poll_interval": 0.05, "max_idle": 1.0}


class FakeAgents:
    """The dispatcher + agents of two nodes: registers them, then reports status for their tasks."""

    def __init__(self, store: LocalStore, nodes: tuple[str, ...] = ("n1", "n2")) -> None:
        self.store = store
        self.nodes = nodes
        self.down: set[str] = set()
        self._stop = False

    async def register(self) -> None:
        await self.store.txn([t.create(Kind.NODE, make_node(n)) for n in self.nodes])

    async def run(self) -> None:
        while not self._stop:
            tasks = self.store.mem.list(Kind.TASK)
            for n in self.nodes:
                if n in self.down:
                    continue
                for op in agent_ops(tasks, n, self._now()):
                    with contextlib.suppress(Conflict):
                        await self.store.txn([op])
            await asyncio.sleep(0.02)

    @staticmethod
    def _now() -> float:
        return SystemClock().now()

    async def set_down(self, node_id: str) -> None:
        self.down.add(node_id)
        node = await self.store.get(Kind.NODE, node_id)
        await self.store.txn([t.update(Kind.NODE, set_node_state(node, "down", self._now()))])

    def stop(self) -> None:
        self._stop = True


class ControlPlane:
    def __init__(self) -> None:
        self.store = LocalStore()
        self.bus = MemoryBus()
        self.agents = FakeAgents(self.store)
        self.store.listeners.append(self._hint)
        self.orchestrator = Orchestrator(self.store, self.bus, SystemClock(),
                                         OrchestratorSettings(instance="orchestrator-1", **FAST))
        self.allocator = Allocator(self.store, self.bus, SystemClock(), AllocatorSettings(instance="allocator-1",
                                                                                           **FAST))
        self.scheduler = Scheduler(self.store, self.bus, SystemClock(), SchedulerSettings(instance="scheduler-1",
                                                                                           **FAST))
        self._tasks: list[asyncio.Task[None]] = []

    def _hint(self, revision: int) -> None:
        # LocalStore's stand-in for the raftstore's NATS publication of each commit.
        asyncio.get_running_loop().create_task(self.bus.publish(STORE_EVENTS, {"revision": revision}))

    async def start(self) -> None:
        await self.agents.register()
        for sub in (self.orchestrator, self.allocator, self.scheduler):
            self._tasks.append(asyncio.create_task(sub.run()))
        self._tasks.append(asyncio.create_task(self.agents.run()))

    async def close(self) -> None:
        self.agents.stop()
        for sub in (self.orchestrator, self.allocator, self.scheduler):
            sub.stop()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()

    def tasks(self, service: Obj | None = None) -> list[Obj]:
        items = self.store.mem.list(Kind.TASK)
        return [x for x in items if service is None or x["service_id"] == service["id"]]

    def runnable(self, service: Obj) -> list[Obj]:
        return [x for x in self.tasks(service) if desired_of(x) <= TaskState.RUNNING]

    def running(self, service: Obj) -> list[Obj]:
        return [x for x in self.runnable(service)
                if desired_of(x) == TaskState.RUNNING and state_of(x) == TaskState.RUNNING]

    async def create_service(self, service: Obj) -> Obj:
        res = await self.store.txn([t.create(Kind.SERVICE, service)])
        return res.objects[0]

    async def update_service(self, service: Obj) -> Obj:
        cur = await self.store.get(Kind.SERVICE, service["id"])
        res = await self.store.txn([t.update(Kind.SERVICE, {**service, "meta": cur["meta"]})])
        return res.objects[0]


async def eventually(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlane]:
    plane = ControlPlane()
    await plane.start()
    try:
        yield plane
    finally:
        await plane.close()


def converged(cp: ControlPlane, service: Obj, n: int) -> bool:
    return len(cp.runnable(service)) == n and len(cp.running(service)) == n


async def test_three_replicas_converge_and_spread(cp: ControlPlane) -> None:
    svc = await cp.create_service(make_service("web", 3))
    await eventually(lambda: converged(cp, svc, 3), what="3 running replicas")
    tasks = cp.running(svc)
    assert sorted(x["slot"] for x in tasks) == [1, 2, 3]
    per_node = sorted(sum(1 for x in tasks if x["node_id"] == n) for n in ("n1", "n2"))
    assert per_node == [1, 2]  # spread
    assert all(x["status"]["state"] == "running" for x in tasks)
    assert cp.orchestrator.leader.active and cp.allocator.leader.active and cp.scheduler.leader.active


async def test_scale_3_5_1_exact(cp: ControlPlane) -> None:
    svc = await cp.create_service(make_service("web", 3))
    await eventually(lambda: converged(cp, svc, 3), what="3 replicas")
    svc = await cp.update_service(scaled(svc, 5))
    await eventually(lambda: converged(cp, svc, 5), what="5 replicas")
    assert sorted(x["slot"] for x in cp.running(svc)) == [1, 2, 3, 4, 5]
    svc = await cp.update_service(scaled(svc, 1))
    await eventually(lambda: converged(cp, svc, 1), what="1 replica")
    # Removed tasks are shut down by the agent, then deleted by the reaper: exactly one task is left.
    await eventually(lambda: len(cp.tasks(svc)) == 1, what="reaper deletes removed tasks")
    assert len(cp.running(svc)) == 1


async def test_failed_task_is_replaced_after_the_delay(cp: ControlPlane) -> None:
    svc = await cp.create_service(make_service("web", 2, restart={"delay": 0.5}))
    await eventually(lambda: converged(cp, svc, 2), what="2 replicas")
    victim = cp.running(svc)[0]
    failed_at = SystemClock().now()
    await cp.store.txn([t.update(Kind.TASK, report(victim, TaskState.FAILED, failed_at, "exit 1"))])
    repl = await eventually(lambda: [x for x in cp.tasks(svc) if x["slot"] == victim["slot"]
                                     and x["id"] != victim["id"]], what="a replacement")
    assert desired_of(repl[0]) == TaskState.READY
    old = await cp.store.get(Kind.TASK, victim["id"])
    assert desired_of(old) == TaskState.SHUTDOWN
    await eventually(lambda: converged(cp, svc, 2), what="replacement running")
    new = cp.store.mem.get(Kind.TASK, repl[0]["id"])
    assert desired_of(new) == TaskState.RUNNING
    # Released no earlier than the restart delay after the failure.
    assert new["status"]["timestamp"] >= failed_at + 0.5


async def test_node_down_moves_tasks(cp: ControlPlane) -> None:
    svc = await cp.create_service(make_service("web", 4, restart={"delay": 0.2}))
    await eventually(lambda: converged(cp, svc, 4), what="4 replicas")
    on_n1 = [x for x in cp.running(svc) if x["node_id"] == "n1"]
    assert on_n1
    await cp.agents.set_down("n1")
    await eventually(lambda: converged(cp, svc, 4) and all(x["node_id"] == "n2" for x in cp.running(svc)),
                     what="tasks moved to n2")
    for x in on_n1:
        assert desired_of(cp.store.mem.get(Kind.TASK, x["id"])) == TaskState.SHUTDOWN


async def test_unschedulable_task_explains_and_waits() -> None:
    plane = ControlPlane()
    await plane.start()
    try:
        svc = await plane.create_service(make_service("big", 1, constraints=["node.labels.zone==a"]))
        err = "no suitable node (constraint node.labels.zone==a not satisfied on 2 nodes)"
        await eventually(lambda: [x for x in plane.tasks(svc) if x["status"].get("err") == err], what=err)
        writes = plane.store.mem.revision
        await asyncio.sleep(0.3)
        assert plane.store.mem.revision - writes < 10  # no write loop (agents and leases only)
        node = await plane.store.get(Kind.NODE, "n2")
        node = {**node, "spec": {**node["spec"], "labels": {"zone": "A"}}}
        await plane.store.txn([t.update(Kind.NODE, node)])
        await eventually(lambda: converged(plane, svc, 1), what="scheduled once a node matches")
        assert plane.running(svc)[0]["node_id"] == "n2"
    finally:
        await plane.close()


async def test_second_scheduler_stands_by_and_ex_holder_is_fenced(cp: ControlPlane) -> None:
    standby = Scheduler(cp.store, cp.bus, SystemClock(), SchedulerSettings(instance="scheduler-2", **FAST))
    runner = asyncio.create_task(standby.run())
    try:
        await asyncio.sleep(1.0)
        assert cp.scheduler.leader.active and not standby.leader.active
        assert standby.ready() and standby.status()["active"] is False
        lease = cp.scheduler.leader.lease
        assert lease is not None
        old_fence = lease.fence()
        cp.scheduler.stop()  # the holder goes away (its lease expires; it is not released)
        await eventually(lambda: standby.leader.active, timeout=5, what="standby takes over")
        svc = await cp.create_service(make_service("after", 2))
        await eventually(lambda: converged(cp, svc, 2), what="new leader schedules")
        victim = cp.tasks(svc)[0]
        with pytest.raises(PreconditionFailed):
            await cp.store.txn([old_fence, t.update(Kind.TASK, {**victim, "node_id": "n1"})])
    finally:
        standby.stop()
        await asyncio.wait_for(runner, 5)


def test_apps_serve_ops_routes() -> None:
    store = LocalStore()
    app = allocator_app(AllocatorSettings(instance="allocator-x", **FAST), store=store)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        status = client.get("/v1/status").json()
        assert status["name"] == "allocator" and status["holder"] == "allocator-x"
        assert "shoal_passes" in client.get("/metrics").text or client.get("/metrics").status_code == 200
