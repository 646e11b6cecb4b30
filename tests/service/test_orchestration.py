"""Rolling updates, automatic rollback, global services, jobs, the constraint enforcer and an orchestrator
failover, with the orchestrator, allocator and scheduler running together over LocalStore + MemoryBus and fake
agents (tasks whose env says V=bad fail once running; job tasks complete once running)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from services.orchestrator.loop import Orchestrator
from services.orchestrator.settings import OrchestratorSettings
from shoal.clock import SystemClock
from shoal.errors import Conflict
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.test_control_plane import FAST, ControlPlane, FakeAgents, eventually
from tests.sim.cp_fakes import agent_ops, make_node, report, respec, service_of, set_env

pytestmark = pytest.mark.timeout(60)

QUICK = {"monitor": 0.5}


class Agents(FakeAgents):
    """Fake agents that also end tasks: a task running with env V=bad fails, a running job task completes."""

    def __init__(self, store: LocalStore) -> None:
        super().__init__(store)
        self.nodes = ("n1", "n2")

    async def run(self) -> None:
        while not self._stop:
            now = self._now()
            for n in self.nodes:
                if n in self.down:
                    continue
                for op in agent_ops(self.store.mem.list(Kind.TASK), n, now) + self._endings(n, now):
                    with contextlib.suppress(Conflict):
                        await self.store.txn([op])
            await asyncio.sleep(0.02)

    def _endings(self, node: str, now: float) -> list[t.Op]:
        ops = []
        for task in self.store.mem.list(Kind.TASK):
            if task.get("node_id") != node or state_of(task) != TaskState.RUNNING:
                continue
            if (task["spec"].get("process") or {}).get("env", {}).get("V") == "bad":
                ops.append(t.update(Kind.TASK, report(task, TaskState.FAILED, now, "exit 1")))
            elif task.get("job_iteration") is not None and now - task["status"]["timestamp"] > 0.1:
                ops.append(t.update(Kind.TASK, report(task, TaskState.COMPLETE, now, "exit 0")))
        return ops

    async def join(self, node_id: str) -> None:
        await self.store.txn([t.create(Kind.NODE, make_node(node_id))])
        self.nodes = (*self.nodes, node_id)


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlane]:
    plane = ControlPlane()
    plane.agents = Agents(plane.store)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.close()


async def user_update(cp: ControlPlane, sid: str, value: str) -> Obj:
    for _ in range(50):  # the orchestrator may write update_status in between: re-read and retry
        svc = await cp.store.get(Kind.SERVICE, sid)
        with contextlib.suppress(Conflict):
            res = await cp.store.txn([t.update(Kind.SERVICE, respec(svc, set_env(value)),
                                               expect_version=svc["meta"]["version"])])
            return res.objects[0]
        await asyncio.sleep(0.02)
    raise AssertionError("could not update the service")


def service(cp: ControlPlane, sid: str) -> Obj:
    return cp.store.mem.get(Kind.SERVICE, sid)


def update_state(cp: ControlPlane, sid: str) -> str | None:
    status = service(cp, sid).get("update_status")
    return None if status is None else str(status["state"])


def live(cp: ControlPlane, sid: str) -> list[Obj]:
    return [x for x in cp.tasks(service(cp, sid)) if desired_of(x) <= TaskState.RUNNING]


def running_at(cp: ControlPlane, sid: str, version: int) -> list[Obj]:
    return [x for x in live(cp, sid) if state_of(x) == TaskState.RUNNING and x["spec_version"] == version
            and desired_of(x) == TaskState.RUNNING]


async def test_rolling_update_of_four_replicas_two_at_a_time(cp: ControlPlane) -> None:
    svc = await cp.create_service(service_of("web", 4, update={**QUICK, "parallelism": 2}, restart={"delay": 0.2}))
    sid = svc["id"]
    await eventually(lambda: len(running_at(cp, sid, 1)) == 4, what="4 replicas")
    await user_update(cp, sid, "2")
    most = 0

    def done() -> bool:
        nonlocal most
        starting = [x for x in live(cp, sid) if x["spec_version"] == 2 and state_of(x) < TaskState.RUNNING]
        most = max(most, len(starting))
        return update_state(cp, sid) == "completed"
    await eventually(done, timeout=20, what="update completed")
    assert len(running_at(cp, sid, 2)) == 4 and len(live(cp, sid)) == 4
    assert most <= 2  # parallelism
    status = service(cp, sid)["update_status"]
    assert status["message"] == "update completed" and status["completed_at"] >= status["started_at"]


async def test_failing_update_rolls_back_to_the_previous_spec(cp: ControlPlane) -> None:
    spec = service_of("api", 3, update={**QUICK, "failure_action": "rollback"}, rollback=QUICK,
                      restart={"delay": 0.2})
    sid = (await cp.create_service(spec))["id"]
    await eventually(lambda: len(running_at(cp, sid, 1)) == 3, what="3 replicas")
    original = service(cp, sid)["spec"]
    await user_update(cp, sid, "bad")
    await eventually(lambda: update_state(cp, sid) == "rollback_completed", timeout=20, what="rollback completed")
    svc = service(cp, sid)
    assert svc["spec"] == original and svc["previous_spec"] is None and svc["spec_version"] == 3
    assert svc["update_status"]["message"] == "rollback completed"
    await eventually(lambda: len(running_at(cp, sid, 3)) + len(running_at(cp, sid, 1)) == 3, what="3 good tasks")
    assert all(x["spec"] == original["task"] for x in live(cp, sid))


async def test_global_service_follows_node_join_and_drain(cp: ControlPlane) -> None:
    sid = (await cp.create_service(service_of("agentd", mode={"global": {}}, restart={"delay": 0.2})))["id"]

    def nodes_running() -> list[str]:
        return sorted(x["node_id"] for x in running_at(cp, sid, 1))
    await eventually(lambda: nodes_running() == ["n1", "n2"], what="a task on each node")
    assert isinstance(cp.agents, Agents)
    await cp.agents.join("n3")
    await eventually(lambda: nodes_running() == ["n1", "n2", "n3"], what="a task on the new node")
    node = await cp.store.get(Kind.NODE, "n1")
    await cp.store.txn([t.update(Kind.NODE, {**node, "spec": {**node["spec"], "availability": "drain"}})])
    await eventually(lambda: nodes_running() == ["n2", "n3"] and len(live(cp, sid)) == 2, what="n1 drained")

    def on_n1() -> list[Obj]:
        return [x for x in cp.tasks(service(cp, sid)) if x["node_id"] == "n1"]
    # the task's desired state is SHUTDOWN at once; its observed state follows when n1's agent reports the stop
    await eventually(lambda: all(state_of(x) == TaskState.SHUTDOWN for x in on_n1()), what="n1's task stopped")
    assert on_n1() and len(live(cp, sid)) == 2


async def test_replicated_job_completes_exactly_total_completions(cp: ControlPlane) -> None:
    job = service_of("crunch", mode={"replicated_job": {"max_concurrent": 2, "total_completions": 5}},
                     restart={"delay": 0.2})
    svc = await cp.create_service(job)
    most = 0

    def complete() -> bool:
        nonlocal most
        tasks = cp.tasks(svc)
        most = max(most, sum(1 for x in tasks if state_of(x) <= TaskState.RUNNING))
        return sum(1 for x in tasks if state_of(x) == TaskState.COMPLETE) == 5
    await eventually(complete, timeout=20, what="5 completions")
    await asyncio.sleep(0.5)
    tasks = cp.tasks(svc)
    assert len(tasks) == 5 and sorted(x["slot"] for x in tasks) == [0, 1, 2, 3, 4]
    assert all(state_of(x) == TaskState.COMPLETE and x["job_iteration"] == 0 for x in tasks)
    assert most <= 2  # max_concurrent


async def test_constraint_enforcer_moves_tasks_off_a_node_that_stops_matching(cp: ControlPlane) -> None:
    for n in ("n1", "n2"):
        node = await cp.store.get(Kind.NODE, n)
        await cp.store.txn([t.update(Kind.NODE, {**node, "spec": {**node["spec"], "labels": {"zone": "a"}}})])
    spec = service_of("zoned", 2, constraints=["node.labels.zone==a"], restart={"delay": 0.2})
    sid = (await cp.create_service(spec))["id"]
    await eventually(lambda: len(running_at(cp, sid, 1)) == 2, what="2 replicas")
    node = await cp.store.get(Kind.NODE, "n1")
    await cp.store.txn([t.update(Kind.NODE, {**node, "spec": {**node["spec"], "labels": {"zone": "b"}}})])
    await eventually(lambda: [x["node_id"] for x in running_at(cp, sid, 1)] == ["n2", "n2"], what="moved to n2")
    rejected = [x for x in cp.tasks(service(cp, sid)) if state_of(x) == TaskState.REJECTED]
    assert rejected and rejected[0]["status"]["err"] == "assigned node no longer meets constraints"


async def test_an_orchestrator_failover_resumes_the_update(cp: ControlPlane) -> None:
    svc = await cp.create_service(service_of("web", 4, update={"parallelism": 1, "monitor": 1.0},
                                             restart={"delay": 0.2}))
    sid = svc["id"]
    await eventually(lambda: len(running_at(cp, sid, 1)) == 4, what="4 replicas")
    await user_update(cp, sid, "2")
    await eventually(lambda: len(running_at(cp, sid, 2)) >= 1, what="first slot updated")
    cp.orchestrator.stop()  # the leader goes away mid-update; a standby takes over from the store
    standby = Orchestrator(cp.store, cp.bus, SystemClock(), OrchestratorSettings(instance="orchestrator-2", **FAST))
    runner = asyncio.create_task(standby.run())
    try:
        await eventually(lambda: update_state(cp, sid) == "completed", timeout=30, what="update completed")
        assert standby.leader.active
        assert len(running_at(cp, sid, 2)) == 4
        updated = [x for x in cp.tasks(service(cp, sid)) if x.get("created_by") == "update"]
        assert len(updated) == 4  # no slot updated twice
    finally:
        standby.stop()
        await asyncio.wait_for(runner, 5)
