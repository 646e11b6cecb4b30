"""Secrets and configs delivered only where needed (issue 10): the dispatcher app over mutual TLS with two real
agents running process tasks. A task on one node references a secret and a config: that node receives them in
its assignment stream (and the task reads them from SHOAL_SECRETS_DIR / SHOAL_CONFIGS_DIR, with the modes
asked for), the other node never does; once the task ends the files and the payloads are gone, and the agent's
state files never held them."""

from __future__ import annotations

import base64
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from agent.agent import Agent
from agent.worker import Worker
from shoal.models.objects import task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.polling import until
from tests.service.test_dispatcher_agent import (
    RunningAgent,
    agent_settings,
    env,
    period,
    set_desired,
    task_in,
)
from tests.service.tls_servers import node_creds

__all__ = ["env", "period"]  # the fixtures
pytestmark = pytest.mark.timeout(60)


def recording(worker: Worker, seen: list[str]) -> None:
    """Record every assignment message a worker applies (repr), to search it for payloads."""
    complete, incremental = worker.apply_complete, worker.apply_incremental

    def apply_complete(*args: Any) -> None:
        seen.append(repr(args))
        complete(*args)

    def apply_incremental(changes: Any) -> None:
        seen.append(repr(changes))
        incremental(changes)

    worker.apply_complete = apply_complete  # type: ignore[method-assign,assignment]
    worker.apply_incremental = apply_incremental  # type: ignore[method-assign]


async def test_only_the_node_running_the_task_gets_its_secret(env: dict[str, Any], tmp_path: Path) -> None:
    store: LocalStore = env["store"]
    value = secrets.token_hex(24)
    encoded = base64.b64encode(value.encode()).decode()
    conf = base64.b64encode(b"listen 80\n").decode()
    await store.txn([t.create("secret", {"id": "sec1", "spec": {"name": "pw", "labels": {}, "data": encoded}}),
                     t.create("config", {"id": "cfg1", "spec": {"name": "app.conf", "labels": {}, "data": conf}})])
    agents: dict[str, RunningAgent] = {}
    seen: dict[str, list[str]] = {}
    for host in ("node-a", "node-b"):
        settings = agent_settings([env["d1"].url], tmp_path / host, host)
        settings.task_files_dir = tmp_path / host / "files"
        agent = Agent(settings, creds=node_creds(env["signer"], tmp_path / host / "certificates"))
        seen[host] = []
        recording(agent.worker, seen[host])
        agents[host] = RunningAgent(agent)
        env["agents"].append(agents[host])
        await until(agent.session.connected.is_set, f"{host} session")

    out = tmp_path / "out.txt"
    script = ('stat -c %a "$SHOAL_SECRETS_DIR/pw" "$SHOAL_SECRETS_DIR" "$SHOAL_CONFIGS_DIR/etc/app.conf" > "$OUT";'
              ' cat "$SHOAL_SECRETS_DIR/pw" >> "$OUT"; echo >> "$OUT"; cat "$SHOAL_CONFIGS_DIR/etc/app.conf" >> "$OUT";'
              ' exec sleep 30')
    spec = {"process": {"command": ["sh", "-c", script], "env": {"OUT": str(out)}, "stop_grace_period": 2},
            "secrets": [{"source": "pw", "secret_id": "sec1", "target": "pw"}],
            "configs": [{"source": "app.conf", "config_id": "cfg1", "target": "/etc/app.conf", "mode": 0o440}]}
    task = {"id": "t1", "service_id": "svc", "service_name": "web", "slot": 1, "node_id": agents["node-a"].node_id,
            "desired_state": "running", "spec_version": 1, "runtime": "process", "spec": spec,
            "status": task_status("assigned", time.time(), "scheduled")}
    await store.txn([t.create("task", task)])
    await task_in(store, "t1", "running")
    text = await until(lambda: out.exists() and out.read_text().count("\n") >= 5 and out.read_text(), "task output")
    assert text.split("\n")[:5] == ["400", "700", "440", value, "listen 80"]  # default 0400, dir 0700, asked 0440

    a_worker = agents["node-a"].agent.worker
    files = tmp_path / "node-a" / "files" / "t1"
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    assert any(value in m or encoded in m for m in seen["node-a"])
    assert all(encoded not in m and value not in m and conf not in m for m in seen["node-b"])
    assert agents["node-b"].agent.worker.payloads.items == {"secret": {}, "config": {}}
    a_worker.save_now()
    for state_file in (tmp_path / "node-a").rglob("*.json"):
        assert encoded not in state_file.read_text() and value not in state_file.read_text()

    await set_desired(store, "t1", "shutdown")
    await task_in(store, "t1", "shutdown")
    await until(lambda: not files.exists(), "task files removed")
    await until(lambda: a_worker.payloads.items == {"secret": {}, "config": {}}, "payloads released")
    assert not any((tmp_path / "node-a" / "files").iterdir())
