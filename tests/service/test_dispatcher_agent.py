"""The dispatcher app (uvicorn on a loopback port over mutual TLS, as `python -m services.dispatcher` serves it,
over LocalStore + MemoryBus) with real agents holding worker certificates and running real processes through
the process executor: registration, running and stopping tasks, failures, the own-tasks and own-session rules,
the node id taken from the certificate, heartbeat expiry, dispatcher restarts and failover."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from agent.agent import Agent
from agent.executors.process import proc_start_time
from agent.session import DispatcherClient, StatusRejected
from agent.settings import AgentSettings
from services.dispatcher.app import create_app
from services.dispatcher.core import policy
from services.dispatcher.loop import Dispatcher
from services.dispatcher.settings import DispatcherSettings
from shoal import pki, transport
from shoal.bus import MemoryBus
from shoal.certs import Signer
from shoal.cluster import with_removed_node
from shoal.errors import NotFound, PermissionDenied
from shoal.models.objects import task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.transport import Credentials, server_config
from tests.service.polling import until
from tests.service.tls_servers import node_creds

pytestmark = pytest.mark.timeout(60)

PERIOD = 0.2  # the heartbeat period of the tests about heartbeats
CALM = 1.0  # everywhere else, so a loaded machine's scheduling delays never look like a dead node


class DispatcherServer:
    """One dispatcher process stand-in: the app under uvicorn on a fixed loopback port, restartable."""

    def __init__(self, store: LocalStore, bus: MemoryBus, creds: Credentials, port: int = 0, name: str = "d1",
                 period: float = CALM, wrap: Callable[[Any], Any] | None = None) -> None:
        self.store, self.bus, self.port, self.name, self.period = store, bus, port, name, period
        self.wrap = wrap  # an ASGI middleware around the dispatcher's app (a test's slow route)
        self.creds = creds
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.dispatcher: Dispatcher | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> DispatcherServer:
        settings = DispatcherSettings(heartbeat_period=self.period, poll_interval=0.05, status_batch_interval=0.02,
                                      assignment_batch_delay=0.01, instance=self.name)
        app = create_app(settings, store=self.store, bus=self.bus)
        dispatcher: Dispatcher = app.state.dispatcher
        self.dispatcher = dispatcher
        self.store.listeners.append(self._hint)  # stands in for the raftstore's NATS commit hints
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        served = self.wrap(app) if self.wrap is not None else app
        self.server = uvicorn.Server(server_config(served, "127.0.0.1", self.port, self.creds, policy,
                                                   revoked=dispatcher.revocations))
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        server = self.server
        await until(lambda: server.started and dispatcher.ready(), "dispatcher ready")
        return self

    def _hint(self, revision: int) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None and self.dispatcher is not None
        self.store.listeners.remove(self._hint)
        self.dispatcher.stop()  # ends the agents' long polls so uvicorn can shut down at once
        self.server.should_exit = True
        await self.task


class RunningAgent:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.task = asyncio.create_task(agent.run())

    @property
    def node_id(self) -> str:
        assert self.agent.node_id is not None
        return self.agent.node_id

    async def stop(self, *, stop_tasks: bool = True) -> None:
        self.agent.settings.stop_tasks_on_exit = stop_tasks
        self.agent.stop()
        await self.task
        await self.agent.shutdown()


def agent_settings(urls: list[str], state_dir: Path, hostname: str = "node-a") -> AgentSettings:
    return AgentSettings(dispatchers=urls, state_dir=state_dir, hostname=hostname, status_interval=0.02,
                         assignments_wait=5.0, rpc_timeout=2.0, exit_grace=2.0)


@pytest.fixture
def period() -> float:
    """The cluster's heartbeat period; tests about heartbeats parametrize it down to PERIOD."""
    return CALM


@pytest.fixture
async def env(tmp_path: Path, period: float) -> AsyncIterator[dict[str, Any]]:
    store, bus = LocalStore(), MemoryBus()
    signer = Signer.new()
    dispatcher_creds = node_creds(signer, tmp_path / "dispatcher", role=pki.MANAGER, component="dispatcher")
    d1 = await DispatcherServer(store, bus, dispatcher_creds, period=period).start()
    agents: list[RunningAgent] = []

    async def start_agent(hostname: str = "node-a", urls: list[str] | None = None) -> RunningAgent:
        creds = node_creds(signer, tmp_path / hostname / "certificates")
        a = RunningAgent(Agent(agent_settings(urls or [d1.url], tmp_path / hostname, hostname), creds=creds))
        agents.append(a)
        await until(a.agent.session.connected.is_set, "agent session")
        return a

    yield {"store": store, "bus": bus, "d1": d1, "start_agent": start_agent, "agents": agents, "signer": signer,
           "tmp": tmp_path}
    for a in agents:
        if not a.task.done():
            await a.stop()
    if d1.task is not None and not d1.task.done():
        await d1.stop()


async def assign(store: LocalStore, node_id: str, tid: str, command: list[str] | None = None,
                 grace: float = 2.0) -> None:
    task = {"id": tid, "service_id": "svc", "service_name": "web", "slot": 1, "node_id": node_id,
            "desired_state": "running", "spec_version": 1, "runtime": "process",
            "spec": {"process": {"command": command or ["sleep", "30"], "stop_grace_period": grace}},
            "status": task_status("assigned", time.time(), "scheduled")}
    await store.txn([t.create("task", task)])


async def task_in(store: LocalStore, tid: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        cur = await store.get("task", tid)
        return cur if cur["status"]["state"] == state else None
    return await until(check, f"task {tid} {state}", timeout)


async def set_desired(store: LocalStore, tid: str, desired: str) -> None:
    cur = await store.get("task", tid)
    await store.txn([t.update("task", {**cur, "desired_state": desired})])


def alive(pid: int) -> bool:
    return proc_start_time(pid) is not None


# ---- tests ------------------------------------------------------------------------------------------------

async def test_register_run_stop_and_fail(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    node = await store.get("node", a.node_id)
    assert node["status"]["state"] == "ready"
    assert node["description"]["hostname"] == "node-a" and node["description"]["executors"] == ["process"]
    assert node["description"]["resources"]["nano_cpus"] >= 1_000_000_000

    await assign(store, node["id"], "t1")
    running = await task_in(store, "t1", "running")
    pid = running["status"]["pid"]
    assert pid and alive(pid)
    local = {x["id"]: x for x in a.agent.worker.snapshot()}
    assert local["t1"]["pid"] == pid and local["t1"]["state"] == "running"

    await set_desired(store, "t1", "shutdown")
    stopped = await task_in(store, "t1", "shutdown")
    assert not alive(pid) and stopped["status"]["exit_code"] == 143

    await assign(store, node["id"], "t2")
    pid2 = (await task_in(store, "t2", "running"))["status"]["pid"]
    os.kill(pid2, signal.SIGKILL)
    failed = await task_in(store, "t2", "failed")
    assert failed["status"]["exit_code"] == 137
    assert "SIGKILL" in failed["status"]["message"] and failed["status"]["err"] == "task: non-zero exit (137)"


async def test_a_command_that_cannot_run_is_rejected(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "bad", ["no-such-binary-xyz"])
    rejected = await task_in(store, "bad", "rejected")
    assert "not found" in rejected["status"]["err"]


async def test_reporting_another_nodes_task_is_forbidden(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, "some-other-node", "theirs")
    d: Dispatcher = env["d1"].dispatcher
    await until(lambda: d.mirror.get("task", "theirs"), "dispatcher sees the task")
    sid = a.agent.session.session_id
    assert sid is not None
    async with transport.http_client(a.agent.creds) as http:
        client = DispatcherClient(http, env["d1"].url)
        with pytest.raises(StatusRejected) as e:
            await client.report(sid, [("theirs", task_status("running", time.time(), "mine now"))])
        assert e.value.task_ids == ["theirs"]
        r = await http.post(f"{env['d1'].url}/v1/sessions/{sid}/status",
                            json={"updates": [{"task_id": "theirs", "status": {"state": "running"}}]})
        assert r.status_code == 403 and "may only report on its own tasks" in r.json()["message"]
        # unknown tasks are ignored, regressions are dropped silently
        r = await http.post(f"{env['d1'].url}/v1/sessions/{sid}/status",
                            json={"updates": [{"task_id": "gone", "status": {"state": "running"}}]})
        assert r.status_code == 200 and r.json() == {"accepted": 0}
    assert (await store.get("task", "theirs"))["status"]["state"] == "assigned"


@pytest.mark.parametrize("period", [PERIOD])
async def test_a_silent_node_goes_down_after_three_periods_and_comes_back(env: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    store: LocalStore = env["store"]
    d: Dispatcher = env["d1"].dispatcher
    a: RunningAgent = await env["start_agent"]()
    node_id = a.node_id
    await asyncio.sleep(4 * PERIOD)  # heartbeats keep it READY
    assert (await store.get("node", node_id))["status"]["state"] == "ready"

    await a.stop()
    last = d.liveness.last_seen[node_id]

    async def down() -> dict[str, Any] | None:
        n = await store.get("node", node_id)
        return n if n["status"]["state"] == "down" else None
    node = await until(down, "node DOWN", timeout=5)
    silent = node["status"]["timestamp"] - last
    assert 3 * PERIOD <= silent < 3 * PERIOD + 0.5, silent  # checked every period/4; slack for load
    assert node["status"]["message"] == "heartbeat failure"

    again = await env["start_agent"]()  # same state dir: same node identity
    assert again.node_id == node_id
    assert (await store.get("node", node_id))["status"]["state"] == "ready"


async def test_dispatcher_restart_keeps_tasks_running(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    d1: DispatcherServer = env["d1"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "t1")
    pid = (await task_in(store, "t1", "running"))["status"]["pid"]

    await d1.stop()
    await asyncio.sleep(0.3)
    assert alive(pid)  # no dispatcher: the task keeps running
    await d1.start()  # same port, fresh dispatcher: no sessions
    await until(lambda: a.agent.session.sessions >= 2 and a.agent.session.connected.is_set(),
                "agent re-registered", timeout=15)
    assert alive(pid) and (await store.get("task", "t1"))["status"]["pid"] == pid
    assert a.agent.worker.managers["t1"].state == "running"

    await set_desired(store, "t1", "shutdown")  # the new stream works
    await task_in(store, "t1", "shutdown")
    assert not alive(pid)


async def test_reconnect_stops_tasks_the_cluster_no_longer_wants(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    d1: DispatcherServer = env["d1"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "keep")
    await assign(store, a.node_id, "drop")
    keep = (await task_in(store, "keep", "running"))["status"]["pid"]
    drop = (await task_in(store, "drop", "running"))["status"]["pid"]
    await d1.stop()
    await store.txn([t.delete("task", "drop")])  # e.g. rescheduled and reaped while the node was cut off
    await d1.start()
    await until(lambda: not alive(drop), "unwanted task stopped after the complete set", timeout=15)
    assert alive(keep) and "drop" not in a.agent.worker.managers


@pytest.mark.parametrize("period", [PERIOD])
async def test_two_dispatchers_share_liveness_and_agents_fail_over(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    d1: DispatcherServer = env["d1"]
    d2 = await DispatcherServer(store, env["bus"], d1.creds, name="d2").start()
    try:
        a: RunningAgent = await env["start_agent"](urls=[d1.url, d2.url])
        first = a.agent.session.dispatcher
        await assign(store, a.node_id, "t1")
        pid = (await task_in(store, "t1", "running"))["status"]["pid"]
        # The other dispatcher hears the heartbeats over the bus and never marks the node DOWN.
        await asyncio.sleep(7 * PERIOD)
        assert (await store.get("node", a.node_id))["status"]["state"] == "ready"

        serving, other = (d1, d2) if first == d1.url else (d2, d1)
        await serving.stop()
        await until(lambda: a.agent.session.dispatcher == other.url and a.agent.session.connected.is_set(),
                    "failover to the other dispatcher", timeout=15)
        assert alive(pid)
        await set_desired(store, "t1", "shutdown")
        await task_in(store, "t1", "shutdown")
        if serving is d1:
            await d1.start()  # let the fixture stop it
    finally:
        await d2.stop() if d2.task and not d2.task.done() else None


async def test_a_removed_node_registers_again_and_stops_its_orphaned_tasks(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "t1")
    running = await task_in(store, "t1", "running")
    pid = running["status"]["pid"]
    node = await store.get("node", a.node_id)
    # what `DELETE /v1/nodes/{id}?force=true` writes: the node goes, its unfinished tasks are ORPHANED
    orphan = {**running, "status": {**running["status"], "state": "orphaned", "message": "node removed"}}
    await store.txn([t.delete("node", node["id"]), t.update("task", orphan)])
    await until(lambda: not alive(pid), "the orphaned task's process stopped", timeout=15)
    assert a.agent.session.sessions >= 2
    assert (await store.get("node", a.node_id))["status"]["state"] == "ready"
    assert (await store.get("task", "t1"))["status"]["state"] == "orphaned"


async def test_a_restarted_agent_keeps_its_identity_and_its_running_process(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "t1")
    pid = (await task_in(store, "t1", "running"))["status"]["pid"]
    await a.stop(stop_tasks=False)  # e.g. the agent crashed or was upgraded; the workload survives
    assert alive(pid)
    again: RunningAgent = await env["start_agent"]()
    assert again.node_id == a.node_id
    await asyncio.sleep(0.3)
    assert alive(pid) and again.agent.worker.managers["t1"].state == "running"
    assert (await store.get("task", "t1"))["status"]["state"] == "running"
    await set_desired(store, "t1", "shutdown")  # the new agent process controls the adopted one
    await task_in(store, "t1", "shutdown")
    assert not alive(pid)


# ---- identities -------------------------------------------------------------------------------------------

async def test_a_node_cannot_use_another_nodes_session(env: dict[str, Any]) -> None:
    a: RunningAgent = await env["start_agent"]()
    sid = a.agent.session.session_id
    intruder = node_creds(env["signer"], env["tmp"] / "intruder")
    url = env["d1"].url + f"/v1/sessions/{sid}"
    async with transport.http_client(intruder) as http:
        beat = await http.post(url + "/heartbeat")
        poll = await http.get(url + "/assignments", params={"after": 0, "wait": 0})
        report = await http.post(url + "/status", json={"updates": []})
        table = await http.get(url + "/endpoints", params={"version": "", "wait": 0})
    for r in (beat, poll, report, table):
        assert r.status_code == 403 and "belongs to another node" in r.json()["message"], r.text
    async with transport.http_client(a.agent.creds) as http:  # its owner still may
        assert (await http.post(url + "/heartbeat")).status_code == 200


async def test_heartbeats_answered_outside_the_framework_keep_every_refusal(env: dict[str, Any]) -> None:
    """services/dispatcher/fastpath.py: the heartbeat skips FastAPI but not the Guard, the session owner check,
    the error shape or the HTTP metrics."""
    a: RunningAgent = await env["start_agent"]()
    sid = a.agent.session.session_id
    url = env["d1"].url
    scheduler = node_creds(env["signer"], env["tmp"] / "sched", role=pki.MANAGER, component="scheduler")
    async with transport.http_client(scheduler) as http:  # not an agent certificate: the Guard refuses
        r = await http.post(url + f"/v1/sessions/{sid}/heartbeat")
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    async with transport.http_client(a.agent.creds) as http:
        ok = await http.post(url + f"/v1/sessions/{sid}/heartbeat")
        unknown = await http.post(url + "/v1/sessions/nosuchsession/heartbeat")
    assert ok.status_code == 200 and ok.json()["period"] > 0
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found" and "register again" in \
        unknown.json()["message"]
    rendered = env["d1"].dispatcher.metrics.render()
    assert 'route="/v1/sessions/{session_id}/heartbeat",status="200"' in rendered
    assert 'route="/v1/sessions/{session_id}/heartbeat",status="404"' in rendered


async def test_register_takes_the_node_id_from_the_certificate(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    creds = node_creds(env["signer"], env["tmp"] / "n1")
    me = creds.identity.node_id
    body = {"description": {"hostname": "n1"}}
    async with transport.http_client(creds) as http:
        other = await http.post(env["d1"].url + "/v1/sessions", json={**body, "node_id": "someone-else"})
        same = await http.post(env["d1"].url + "/v1/sessions", json={**body, "node_id": me})
        absent = await http.post(env["d1"].url + "/v1/sessions", json=body)
    assert other.status_code == 403 and "registers only as itself" in other.json()["message"]
    assert same.status_code == 200 and same.json()["node_id"] == me
    assert absent.status_code == 200 and absent.json()["node_id"] == me
    with pytest.raises(NotFound):
        await store.get("node", "someone-else")


async def test_only_agent_certificates_open_sessions_and_ops_are_for_managers(env: dict[str, Any]) -> None:
    url = env["d1"].url
    body = {"description": {"hostname": "x"}}
    scheduler = node_creds(env["signer"], env["tmp"] / "sched", role=pki.MANAGER, component="scheduler")
    admin = node_creds(env["signer"], env["tmp"] / "admin", role=pki.ADMIN, component="admin")
    worker = node_creds(env["signer"], env["tmp"] / "w")
    async with transport.http_client(scheduler) as http:
        assert (await http.post(url + "/v1/sessions", json=body)).status_code == 403
        assert (await http.get(url + "/metrics")).status_code == 200
    async with transport.http_client(admin) as http:
        assert (await http.post(url + "/v1/sessions", json=body)).status_code == 403
        assert (await http.get(url + "/v1/status")).status_code == 200
    async with transport.http_client(worker) as http:
        r = await http.get(url + "/metrics")
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    foreign = node_creds(Signer.new(), env["tmp"] / "foreign")
    ctx = foreign.context("client")
    ctx.load_verify_locations(cadata=env["signer"].root_pem.decode())
    async with httpx.AsyncClient(verify=ctx) as http:
        with pytest.raises(httpx.HTTPError):  # another cluster's certificate: the handshake fails
            await http.post(url + "/v1/sessions", json=body)
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):  # plaintext never gets an HTTP answer
            await http.post(url.replace("https://", "http://") + "/v1/sessions", json=body)


async def test_a_removed_node_is_refused(env: dict[str, Any]) -> None:
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    cluster = await store.get("cluster", "default")
    # what `DELETE /v1/nodes/{id}` writes: the node goes and its id is remembered as removed, in one txn
    await store.txn([t.delete("node", a.node_id),
                     t.update("cluster", with_removed_node(cluster, a.node_id, time.time()))])
    d: Dispatcher = env["d1"].dispatcher
    await until(lambda: a.node_id in d.revocations, "the dispatcher's revocation list")
    async with transport.http_client(a.agent.creds) as http:
        r = await http.post(env["d1"].url + "/v1/sessions", json={"description": {"hostname": "x"}})
    assert r.status_code == 403 and "revoked" in r.json()["message"]
    # behind Guard, a certified registration of a removed node is refused (never re-created under a new id)
    with pytest.raises(PermissionDenied):
        await d.register(a.node_id, {"hostname": "x"}, None, certified=True)


async def test_the_endpoint_table_follows_task_states_and_port_status(env: dict[str, Any]) -> None:
    """A process task with a declared port gets a host port (PORT), reports it as its port_status, and the
    node's endpoint table lists it as a backend while RUNNING, and not once it is stopped; the agent's mesh
    then listens on the ingress port on the node's address and forwards to the task."""
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    # the node as a READY node with an address (registration wrote it), a service publishing an ingress port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        published = s.getsockname()[1]
    svc = {"id": "svc", "spec": {"name": "web", "endpoint": {"mode": "vip"}, "task": {}},
           "endpoint": {"ports": [{"protocol": "tcp", "target_port": 8080, "published_port": published,
                                   "publish_mode": "ingress"}], "virtual_ips": []}}
    await store.txn([t.create("service", svc)])
    server = ("import http.server, os\n"
              "class H(http.server.BaseHTTPRequestHandler):\n"
              "    def do_GET(self):\n"
              "        self.send_response(200); self.end_headers(); self.wfile.write(b'hello')\n"
              "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n")
    task = {"id": "t1", "service_id": "svc", "service_name": "web", "slot": 1, "node_id": a.node_id,
            "desired_state": "running", "spec_version": 1, "runtime": "process",
            "endpoint": {"ports": svc["endpoint"]["ports"]},
            "spec": {"process": {"command": [sys.executable, "-c", server], "stop_grace_period": 1.0}},
            "status": task_status("assigned", time.time(), "scheduled")}
    await store.txn([t.create("task", task)])
    running = await task_in(store, "t1", "running")
    [ps] = running["status"]["port_status"]["ports"]
    assert ps["target_port"] == 8080 and ps["published_port"] > 0

    def backends() -> list[Any]:
        table = env["d1"].dispatcher.node_endpoints(a.node_id)
        return [b for svc in table["services"] for b in svc["backends"]]

    [b] = await until(backends, "the task as a backend")
    assert b["ports"] == {"8080/tcp": ps["published_port"]}
    # the agent's mesh: a listener on the ingress port of the node's address, answering through the task
    addr = b["node_addr"]

    async def answer() -> bytes | None:
        try:
            r, w = await asyncio.open_connection(addr, published)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await r.read()
            w.close()
        except OSError:
            return None
        return data if data.endswith(b"hello") else None
    await until(answer, "the ingress port answering through the mesh")
    # stopped: no longer a backend, and the listener is closed (connection refused)
    await set_desired(store, "t1", "shutdown")
    await until(lambda: not backends(), "the task gone from the table")

    async def refused() -> bool:
        try:
            _, w = await asyncio.open_connection(addr, published)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False  # reset while the listener closes: ask again
        w.close()
        return False
    await until(refused, "the ingress port closed")


async def test_a_slow_heartbeat_is_tried_again_within_the_session(env: dict[str, Any]) -> None:
    """Issue 13: a dispatcher (or an agent process) starved for a moment answers a heartbeat after the agent's
    timeout. The session is still valid there for its grace, so the agent tries again in it instead of
    registering again — under load, new registrations and handshakes were the storm."""
    d: Dispatcher = env["d1"].dispatcher
    real = d.heartbeat
    stalled = 0

    async def slow_once(session_id: str, caller: str | None = None) -> dict[str, Any]:
        nonlocal stalled
        if stalled == 0:
            stalled += 1
            await asyncio.sleep(2.5)  # past the agent's 2-s timeout, inside the 3-period grace
        return await real(session_id, caller)

    d.heartbeat = slow_once  # type: ignore[method-assign]
    a: RunningAgent = await env["start_agent"]()
    await until(lambda: stalled == 1 and a.agent.session.slow_retries >= 1, "a heartbeat tried again", 10)
    await asyncio.sleep(2 * CALM)  # more heartbeats, answered at once
    assert a.agent.session.sessions == 1  # never registered again
    assert a.agent.session.connected.is_set()
    assert (await env["store"].get("node", a.node_id))["status"]["state"] == "ready"


@pytest.mark.parametrize("period", [3.0])  # a 9-s grace: room for an answer later than the 2-s rpc timeout
async def test_a_slow_status_report_is_answered_on_its_connection(env: dict[str, Any]) -> None:
    """Issue 13: a status report answered after the agent's rpc timeout, inside the session's grace, is waited
    for like a heartbeat, not sent again: a timed-out request drops its connection, and at 1,000 nodes the
    retries' TLS handshakes were a fifth of the dispatcher's CPU."""
    delayed = 0

    def slow_first_report(app: Any) -> Any:
        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            nonlocal delayed
            if scope["type"] == "http" and scope["path"].endswith("/status") and delayed == 0:
                delayed += 1
                await asyncio.sleep(3.0)  # past the agent's 2-s rpc timeout, well inside the grace
            await app(scope, receive, send)
        return asgi

    d2 = await DispatcherServer(env["store"], env["bus"], env["d1"].creds, name="d2", wrap=slow_first_report).start()
    try:
        a: RunningAgent = await env["start_agent"](urls=[d2.url])
        await assign(env["store"], a.node_id, "t1")
        await task_in(env["store"], "t1", "running")
        assert delayed == 1
        assert a.agent.session.slow_retries == 0  # waited for, not timed out and sent again
        assert a.agent.session.sessions == 1
    finally:
        for ra in env["agents"]:
            await ra.stop()
        await d2.stop()


async def test_the_heartbeat_answer_hands_the_agent_the_roots_digest(env: dict[str, Any]) -> None:
    """The dispatcher's digest of the roots it trusts reaches the agent with every heartbeat answer
    (`AgentSession.on_roots`, wired to the renewer's `hint_roots`); a value that is no digest is ignored."""
    a: RunningAgent = await env["start_agent"]()
    dispatcher = env["d1"].dispatcher
    got: list[str] = []
    a.agent.session.on_roots = got.append
    seen = a.agent.session.sessions

    def beats() -> float:
        return dispatcher.metrics.value("dispatcher_heartbeats_total")

    dispatcher.roots = lambda: "x" * 1000  # hostile or broken: not a digest
    before = beats()
    await until(lambda: beats() >= before + 2, "two heartbeats")
    assert got == []
    dispatcher.roots = lambda: "ab" * 32
    await until(lambda: got, "the digest at the agent")
    assert set(got) == {"ab" * 32} and a.agent.session.sessions == seen
