"""The agent's certificate life on real mutual TLS: it joins through the CA with a token (no certificate at
first), registers with the dispatcher under the node id the CA gave it, and renews its short-lived certificate
again and again while its task keeps running and its session carries on. A `python -m agent` with a wrong or
tampered token exits with a clear message instead of retrying for ever."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from agent.__main__ import EXIT_JOIN_REFUSED, ensure_identity
from agent.agent import Agent
from agent.settings import AgentSettings
from services.dispatcher.app import create_app
from services.dispatcher.core import policy
from services.dispatcher.loop import Dispatcher
from services.dispatcher.settings import DispatcherSettings
from shoal import enroll as identity
from shoal import pki
from shoal.bus import MemoryBus
from shoal.certs import Signer
from shoal.models.objects import task_status
from shoal.store import txn as t
from tests.service.polling import until
from tests.service.test_ca_service import start_ca
from tests.service.test_dispatcher_agent import alive, task_in
from tests.service.tls_servers import TLSServer, node_creds

pytestmark = pytest.mark.timeout(90)

EXPIRY = 4.0  # seconds: renewed every 2-3.2 s


async def test_join_then_renew_while_a_task_keeps_running(tmp_path: Path) -> None:
    ca = await start_ca(tmp_path / "ca", test_cert_expiry=EXPIRY)
    store = ca.store
    settings = DispatcherSettings(heartbeat_period=1.0, poll_interval=0.05, status_batch_interval=0.02,
                                  assignment_batch_delay=0.01, instance="d1")
    app = create_app(settings, store=store, bus=MemoryBus())
    d: Dispatcher = app.state.dispatcher
    store.listeners.append(lambda revision: d.wake())
    dcreds = node_creds(ca.signer, tmp_path / "dispatcher", role=pki.MANAGER, component="dispatcher")
    dsrv = await TLSServer(app, dcreds, policy, revoked=d.revocations).start()
    agent_settings = AgentSettings(dispatchers=[dsrv.url], state_dir=tmp_path / "node", hostname="node",
                                   join_token=ca.tokens["worker"], ca_urls=[ca.url], status_interval=0.02,
                                   assignments_wait=2.0, rpc_timeout=2.0, exit_grace=2.0, stop_tasks_on_exit=True)
    creds = await ensure_identity(agent_settings)
    joined = creds.identity
    assert joined.role == pki.WORKER and joined.not_after - joined.not_before <= EXPIRY + 1
    agent = Agent(agent_settings, creds=creds)
    runner = asyncio.create_task(agent.run())
    try:
        await until(agent.session.connected.is_set, "agent session")
        assert agent.node_id == joined.node_id  # the dispatcher registered the node the CA named
        task = {"id": "t1", "service_id": "svc", "service_name": "web", "slot": 1, "node_id": joined.node_id,
                "desired_state": "running", "spec_version": 1, "runtime": "process",
                "spec": {"process": {"command": ["sleep", "60"], "stop_grace_period": 1}},
                "status": task_status("assigned", time.time(), "scheduled")}
        await store.txn([t.create("task", task)])
        pid = (await task_in(store, "t1", "running"))["status"]["pid"]

        assert agent.renewer is not None
        renewer = agent.renewer
        await until(lambda: renewer.renewals >= 3, "three renewals", timeout=3 * EXPIRY + 10)
        now = creds.identity
        assert (now.node_id, now.role, now.component) == (joined.node_id, pki.WORKER, "agent")
        assert now.serial != joined.serial and time.time() > joined.not_after  # the first one has expired
        assert alive(pid) and agent.worker.managers["t1"].state == "running"
        assert agent.session.sessions == 1 and agent.session.connected.is_set()  # never had to re-register
        before = d.liveness.last_seen[joined.node_id]
        await until(lambda: d.liveness.last_seen[joined.node_id] > before, "heartbeats on the renewed certificate")
        assert (await store.get("node", joined.node_id))["status"]["state"] == "ready"
    finally:
        agent.stop()
        await runner
        await agent.shutdown()
        d.stop()
        await dsrv.stop()
        await ca.server.stop()


async def run_agent(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    full = {"PATH": os.environ["PATH"], "SHOAL_STATE_DIR": str(tmp / "node"), "SHOAL_HOSTNAME": "node",
            "SHOAL_DISPATCHERS": "https://127.0.0.1:9", "SHOAL_PORT": "0", **env}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agent", env=full,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_wrong_or_tampered_token_exits_with_a_clear_message(tmp_path: Path) -> None:
    ca = await start_ca(tmp_path / "ca")
    try:
        wrong = pki.make_token(ca.signer.root, pki.new_token_secret())
        code, out = await run_agent(tmp_path, {"SHOAL_JOIN_TOKEN": wrong, "SHOAL_CA_URLS": ca.url})
        assert code == EXIT_JOIN_REFUSED and "join token is not valid" in out, out
        tampered = pki.make_token(Signer.new().root, ca.tokens["worker"].rsplit("-", 1)[1])
        code, out = await run_agent(tmp_path, {"SHOAL_JOIN_TOKEN": tampered, "SHOAL_CA_URLS": ca.url})
        assert code == EXIT_JOIN_REFUSED and "does not match the join token" in out, out
        code, out = await run_agent(tmp_path, {"SHOAL_CA_URLS": ca.url})
        assert code == EXIT_JOIN_REFUSED and "SHOAL_JOIN_TOKEN is not set" in out, out
        assert not identity.has_identity(tmp_path / "node" / "certificates")
    finally:
        await ca.server.stop()
