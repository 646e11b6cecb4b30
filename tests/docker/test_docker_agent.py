"""Agents running container tasks on the real engine, behind a real dispatcher (over the in-memory store): the
node advertises `container`, tasks run/fail/are REJECTED with the engine's reason, a restarted agent adopts its
running containers instead of starting duplicates, tasks shut down or no longer assigned lose their containers
(scale down), a stray container of the node is swept, and SHOAL_STOP_TASKS_ON_EXIT=true leaves nothing."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from agent.agent import Agent
from agent.executors.docker import LABEL_NODE, LABEL_TASK
from agent.executors.docker_engine import DockerEngine
from agent.settings import AgentSettings
from services.dispatcher.app import create_app
from services.dispatcher.core import policy
from services.dispatcher.loop import Dispatcher
from services.dispatcher.settings import DispatcherSettings
from shoal import pki
from shoal.bus import MemoryBus
from shoal.certs import Signer
from shoal.models.objects import task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.transport import server_config
from tests.docker.conftest import ENGINE_HOST, RUN_ID, RUN_LABEL
from tests.service import polling
from tests.service.tls_servers import node_creds

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

MISSING_IMAGE = "127.0.0.1:9/shoal/missing:latest"


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return await polling.until(check, what, timeout, interval=0.05)


class Env:
    """A dispatcher app on a loopback port over a LocalStore, and agents with the docker executor."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = LocalStore()
        self.bus = MemoryBus()
        self.engine = DockerEngine(ENGINE_HOST)
        self.agents: list[tuple[Agent, asyncio.Task[None]]] = []
        self.signer = Signer.new()
        self.server: uvicorn.Server | None = None
        self.serving: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> None:
        settings = DispatcherSettings(heartbeat_period=1.0, poll_interval=0.05, status_batch_interval=0.02,
                                      assignment_batch_delay=0.01, instance="d1")
        app = create_app(settings, store=self.store, bus=self.bus)
        dispatcher: Dispatcher = app.state.dispatcher
        self.store.listeners.append(lambda revision: dispatcher.wake())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        creds = node_creds(self.signer, self.tmp / "dispatcher", role=pki.MANAGER, component="dispatcher")
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", port, creds, policy,
                                                   revoked=dispatcher.revocations))
        self.serving = asyncio.create_task(self.server.serve(sockets=[sock]))
        server = self.server
        await until(lambda: server.started and dispatcher.ready(), "dispatcher ready")
        self.dispatcher = dispatcher

    async def agent(self, hostname: str = "dnode", **overrides: Any) -> Agent:
        settings = AgentSettings(dispatchers=[self.url], state_dir=self.tmp / hostname, hostname=hostname,
                                 executors=["docker"], docker_host=ENGINE_HOST, status_interval=0.02,
                                 assignments_wait=5.0, rpc_timeout=2.0, exit_grace=5.0, **overrides)
        agent = Agent(settings, creds=node_creds(self.signer, self.tmp / hostname / "certificates"))
        self.agents.append((agent, asyncio.create_task(agent.run())))
        await until(agent.session.connected.is_set, "agent session")
        return agent

    async def stop_agent(self, agent: Agent) -> None:
        for i, (a, task) in enumerate(self.agents):
            if a is agent:
                a.stop()
                await task
                await a.shutdown()
                del self.agents[i]
                return

    async def __aenter__(self) -> Env:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for agent, _ in list(self.agents):
            agent.settings.stop_tasks_on_exit = True
            await self.stop_agent(agent)
        self.dispatcher.stop()
        if self.server is not None and self.serving is not None:
            self.server.should_exit = True
            await self.serving
        await self.engine.close()

    async def assign(self, node_id: str, image: str, command: list[str], **container: Any) -> str:
        tid = "t" + uuid.uuid4().hex[:12]
        spec = {"container": {"image": image, "command": command, "labels": {RUN_LABEL: RUN_ID},
                              "stop_grace_period": "1s", **container}}
        task = {"id": tid, "service_id": "svc", "service_name": "dagent", "slot": len(self.agents), "node_id": node_id,
                "desired_state": "running", "spec_version": 1, "runtime": "container", "spec": spec,
                "status": task_status("assigned", time.time(), "scheduled")}
        await self.store.txn([t.create("task", task)])
        return tid

    async def task_in(self, tid: str, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            cur = await self.store.get("task", tid)
            return cur if cur["status"]["state"] in states else None
        return await until(check, f"task {tid} in {states}", timeout)  # type: ignore[no-any-return]

    async def set_desired(self, tid: str, desired: str) -> None:
        cur = await self.store.get("task", tid)
        await self.store.txn([t.update("task", {**cur, "desired_state": desired})])

    async def containers(self, **labels: str) -> list[dict[str, Any]]:
        return await self.engine.containers({RUN_LABEL: RUN_ID, **labels})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with Env(tmp_path) as e:
        yield e


async def test_container_tasks_run_complete_fail_and_are_rejected(env: Env, task_image: str) -> None:
    agent = await env.agent()
    assert agent.node_id is not None
    node = await env.store.get("node", agent.node_id)
    assert node["description"]["executors"] == ["container", "docker"]  # the engine answered
    ok = await env.assign(node["id"], task_image, ["sh", "-c", "sleep 0.5"])
    bad = await env.assign(node["id"], task_image, ["sh", "-c", "exit 7"])
    missing = await env.assign(node["id"], MISSING_IMAGE, ["true"])
    done = await env.task_in(ok, "complete")
    assert done["status"]["exit_code"] == 0
    failed = await env.task_in(bad, "failed")
    assert failed["status"]["exit_code"] == 7 and failed["status"]["err"] == "task: non-zero exit (7)"
    rejected = await env.task_in(missing, "rejected")
    assert "pulling image" in rejected["status"]["err"] and "127.0.0.1:9" in rejected["status"]["err"]


async def test_a_restarted_agent_adopts_its_running_containers(env: Env, task_image: str) -> None:
    agent = await env.agent()
    node_id = agent.node_id
    assert node_id is not None
    tid = await env.assign(node_id, task_image, ["sleep", "300"], init=True)
    running = await env.task_in(tid, "running")
    [before] = await env.containers(**{LABEL_TASK: tid})
    await env.stop_agent(agent)  # SHOAL_STOP_TASKS_ON_EXIT unset: containers outlive the agent
    [still] = await env.containers(**{LABEL_TASK: tid})
    assert still["Id"] == before["Id"] and still["State"] == "running"

    again = await env.agent()
    assert again.node_id == node_id
    await asyncio.sleep(1.0)
    [after] = await env.containers(**{LABEL_TASK: tid})  # adopted: the same container, no duplicate
    assert after["Id"] == before["Id"] and after["State"] == "running"
    assert again.worker.managers[tid].state == "running"
    task = await env.store.get("task", tid)
    assert task["status"]["state"] == "running" and task["status"]["timestamp"] == running["status"]["timestamp"]

    await env.set_desired(tid, "shutdown")  # the new agent controls the adopted container
    await env.task_in(tid, "shutdown")
    await until(lambda: _gone(env, tid), "the container removed")


async def _gone(env: Env, tid: str) -> bool:
    return not await env.containers(**{LABEL_TASK: tid})


async def test_scale_down_and_unassigned_tasks_remove_their_containers(env: Env, task_image: str) -> None:
    agent = await env.agent()
    node_id = agent.node_id
    assert node_id is not None
    tids = [await env.assign(node_id, task_image, ["sleep", "300"], init=True) for _ in range(3)]
    for tid in tids:
        await env.task_in(tid, "running")
    assert len(await env.containers(**{LABEL_NODE: node_id})) == 3
    # Scale down: the orchestrator sets desired SHUTDOWN; the container is stopped and removed.
    await env.set_desired(tids[0], "shutdown")
    await env.task_in(tids[0], "shutdown")
    await until(lambda: _gone(env, tids[0]), "the scaled-down task's container removed")
    # A task deleted from the store (reaped, or moved away) is forgotten and its container removed.
    await env.store.txn([t.delete("task", tids[1])])
    await until(lambda: _gone(env, tids[1]), "the deleted task's container removed")
    # A container of this node no task accounts for (e.g. the agent's state was lost) is swept after the next
    # complete set of assignments.
    stray = await env.engine.create("stray-" + uuid.uuid4().hex[:8], {
        "Image": task_image, "Cmd": ["sleep", "300"],
        "Labels": {RUN_LABEL: RUN_ID, LABEL_NODE: node_id, LABEL_TASK: "not-a-task"}})
    await env.engine.start(stray)
    agent.session.renew()  # registers again: a complete set
    await until(lambda: _gone(env, "not-a-task"), "the stray container swept")
    [left] = await env.containers(**{LABEL_NODE: node_id})
    assert left["Labels"][LABEL_TASK] == tids[2] and left["State"] == "running"


async def test_stop_tasks_on_exit_removes_containers(env: Env, task_image: str) -> None:
    agent = await env.agent(stop_tasks_on_exit=True)
    assert agent.node_id is not None
    tids = [await env.assign(agent.node_id, task_image, ["sleep", "300"]) for _ in range(2)]
    for tid in tids:
        await env.task_in(tid, "running")
    t0 = time.monotonic()
    await env.stop_agent(agent)  # what `shoal down` / `docker compose down` do (the variable set true)
    assert time.monotonic() - t0 < 15
    assert not await env.containers(**{LABEL_NODE: agent.node_id})


async def test_container_tasks_behind_the_routing_mesh_of_two_nodes(env: Env, task_image: str) -> None:
    """Two agents advertising 127.0.0.2 and 127.0.0.3, one container task each behind an ingress published
    port: the mesh of each node answers with both containers (bound where the engine picked, reported as
    port_status); a container that stops leaves the mesh (docs/networking.md)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        published = s.getsockname()[1]
    ports = [{"protocol": "tcp", "target_port": 8080, "published_port": published, "publish_mode": "ingress"}]
    await env.store.txn([t.create("service", {
        "id": "svc", "spec": {"name": "dagent", "endpoint": {"mode": "vip"}, "task": {}},
        "endpoint": {"ports": ports, "virtual_ips": []}})])
    a = await env.agent("mesh-a", addr="127.0.0.2")
    b = await env.agent("mesh-b", addr="127.0.0.3")
    tids = []
    for agent in (a, b):
        assert agent.node_id is not None
        tid = await env.assign(agent.node_id, task_image,
                               ["sh", "-c", 'echo "$SHOAL_TASK_ID" > /www/index.html; exec httpd -f -p 8080 -h /www'],
                               init=True)
        cur = await env.store.get("task", tid)
        await env.store.txn([t.update("task", {**cur, "endpoint": {"ports": ports}})])
        tids.append(tid)
    for tid in tids:
        running = await env.task_in(tid, "running")
        assert running["status"]["port_status"]["ports"][0]["target_port"] == 8080

    async def fetch(addr: str) -> str:
        r, w = await asyncio.open_connection(addr, published)
        w.write(b"GET / HTTP/1.0\r\n\r\n")
        data = await r.read()
        w.close()
        return data.partition(b"\r\n\r\n")[2].decode().strip()

    async def answered_everywhere(want: set[str], n: int) -> bool:
        try:
            for addr in ("127.0.0.2", "127.0.0.3"):
                if {await fetch(addr) for _ in range(n)} != want:
                    return False
        except OSError:
            return False
        return True
    await until(lambda: answered_everywhere(set(tids), 8), "both containers answering through both nodes' mesh")
    await env.set_desired(tids[0], "shutdown")
    await env.task_in(tids[0], "shutdown")

    await until(lambda: answered_everywhere({tids[1]}, 6), "the stopped container gone from the mesh")
