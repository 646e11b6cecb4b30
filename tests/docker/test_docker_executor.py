"""The docker executor against the real engine, controller by controller: exit codes, the spec's mapping seen
from inside the container, stop signal and grace period, health-check gating of STARTING, a missing image,
host-mode published ports, and adoption of a container by a new controller."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.executors.base import ExecutorError, ExitError
from agent.executors.docker import LABEL_NODE, LABEL_TASK, DockerController, DockerExecutor
from tests.docker.conftest import ENGINE_HOST, RUN_ID, RUN_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

MISSING_IMAGE = "127.0.0.1:9/shoal/missing:latest"  # a registry nobody listens on: the pull fails at once


def make_task(image: str, *, node: str = "node-t", ports: list[dict[str, Any]] | None = None,
              resources: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    tid = "t" + uuid.uuid4().hex[:12]
    spec: dict[str, Any] = {"container": {"image": image, "labels": {RUN_LABEL: RUN_ID}, **container}}
    if resources:
        spec["resources"] = resources
    task: dict[str, Any] = {"id": tid, "service_id": "svc", "service_name": "dtest", "slot": 1, "node_id": node,
                            "desired_state": "running", "runtime": "container", "spec": spec,
                            "status": {"state": "assigned"}}
    if ports:
        task["endpoint"] = {"ports": ports}
    return task


@pytest.fixture
async def executor() -> AsyncIterator[DockerExecutor]:
    ex = DockerExecutor(ENGINE_HOST)
    assert await ex.probe()
    yield ex
    await ex.close()


async def started(ex: DockerExecutor, task: dict[str, Any]) -> DockerController:
    ctl = ex.controller(task, node_id=task["node_id"])
    await ctl.prepare()
    await ctl.start()
    return ctl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_exit_codes_complete_and_fail(executor: DockerExecutor, task_image: str) -> None:
    ok = await started(executor, make_task(task_image, command=["sh", "-c", "exit 0"]))
    await ok.wait()
    assert ok.exit_code == 0
    bad = await started(executor, make_task(task_image, command=["sh", "-c", "sleep 0.2; exit 3"]))
    assert bad.pid is not None
    with pytest.raises(ExitError) as e:
        await bad.wait()
    assert e.value.exit_code == 3 and bad.exit_code == 3 and "exit status 3" in str(e.value)
    for ctl in (ok, bad):
        await ctl.remove()
        assert await executor.engine.inspect(ctl.name) is None


async def test_spec_fields_reach_the_container(executor: DockerExecutor, task_image: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    script = ("cat /data/in.txt > /scratch/out; echo \"$GREETING $SHOAL_TASK_SLOT $(id -u) $(pwd) $(hostname)\" "
              ">> /scratch/out; cat /scratch/out > /data/out.txt; touch /rootfs-write 2>/dev/null || "
              "echo read-only >> /data/out.txt")
    task = make_task(task_image, command=["sh", "-c"], args=[script], env={"GREETING": "hello"}, dir="/tmp",
                     user="nobody", hostname="box1", read_only=True, init=True,
                     mounts=[{"type": "bind", "source": str(tmp_path), "target": "/data"},
                             {"type": "tmpfs", "target": "/scratch"}, {"type": "volume", "target": "/cache"}],
                     resources={"limits": {"nano_cpus": 500_000_000, "memory_bytes": 32 * 1024 * 1024}})
    tmp_path.chmod(0o777)
    ctl = await started(executor, task)
    await ctl.wait()
    assert (tmp_path / "out.txt").read_text().splitlines() == ["from the host", "hello 1 65534 /tmp box1",
                                                               "read-only"]
    ct = await executor.engine.inspect(ctl.name)
    assert ct is not None
    labels = ct["Config"]["Labels"]
    assert labels[LABEL_TASK] == task["id"] and labels[LABEL_NODE] == "node-t" and labels["shoal.slot"] == "1"
    host = ct["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 32 * 1024 * 1024 and host["Init"] is True
    await ctl.remove()


async def test_stop_signal_then_kill_after_the_grace_period(executor: DockerExecutor, task_image: str) -> None:
    # The stop signal is the spec's (SIGUSR1 here) and its handler decides the exit code.
    polite = await started(executor, make_task(task_image, command=["sh", "-c", "trap 'exit 42' USR1; "
                                                                     "while true; do sleep 0.1; done"],
                                               stop_signal="SIGUSR1", stop_grace_period="5s"))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await polite.shutdown()
    assert time.monotonic() - t0 < 4 and polite.exit_code == 42
    assert await executor.engine.inspect(polite.name) is None  # stopped, then removed
    # A workload ignoring its stop signal is killed once the grace period is over.
    stubborn = await started(executor, make_task(task_image, command=["sh", "-c", "trap '' TERM; "
                                                                        "while true; do sleep 0.1; done"],
                                                 stop_grace_period="1s"))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await stubborn.shutdown()
    assert 0.8 < time.monotonic() - t0 < 8 and stubborn.exit_code == 137
    assert await executor.engine.inspect(stubborn.name) is None


async def test_healthcheck_keeps_the_task_starting_until_healthy(executor: DockerExecutor, task_image: str) -> None:
    task = make_task(task_image, command=["sh", "-c", "sleep 1.5; touch /tmp/ready; sleep 60"], init=True,
                     healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ready"], "interval": "200ms",
                                  "timeout": "1s", "retries": 50})
    ctl = executor.controller(task, node_id="node-t")
    await ctl.prepare()
    t0 = time.monotonic()
    await ctl.start()
    assert time.monotonic() - t0 >= 1.4 and ctl.health == "healthy"
    await ctl.shutdown()


async def test_unhealthy_or_exiting_before_healthy_fails(executor: DockerExecutor, task_image: str) -> None:
    sick = executor.controller(make_task(task_image, command=["sleep", "60"], stop_grace_period="1s",
                                         healthcheck={"test": ["CMD", "false"], "interval": "200ms",
                                                      "retries": 2}), node_id="node-t")
    await sick.prepare()
    with pytest.raises(ExecutorError, match="unhealthy"):
        await sick.start()
    assert await executor.engine.inspect(sick.name) is None  # an unhealthy container is stopped and removed
    quitter = executor.controller(make_task(task_image, command=["sh", "-c", "sleep 0.3; exit 2"],
                                            healthcheck={"test": ["CMD", "false"], "interval": "5s"}),
                                  node_id="node-t")
    await quitter.prepare()
    with pytest.raises(ExitError, match="before its first healthy check") as e:
        await quitter.start()
    assert e.value.exit_code == 2
    await quitter.remove()


async def test_unhealthy_while_running_stops_and_fails(executor: DockerExecutor, task_image: str) -> None:
    task = make_task(task_image, command=["sh", "-c", "touch /tmp/ok; sleep 2; rm /tmp/ok; sleep 60"], init=True,
                     healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": "200ms", "retries": 2})
    ctl = await started(executor, task)
    with pytest.raises(ExecutorError, match="unhealthy"):
        await asyncio.wait_for(ctl.wait(), 30)
    assert await executor.engine.inspect(ctl.name) is None


async def test_missing_image_fails_prepare_with_the_engines_reason(executor: DockerExecutor) -> None:
    ctl = executor.controller(make_task(MISSING_IMAGE), node_id="node-t")
    with pytest.raises(ExecutorError) as e:
        await ctl.prepare()
    assert "pulling image" in str(e.value) and "127.0.0.1:9" in str(e.value)
    assert await executor.engine.inspect(ctl.name) is None


async def page_on(port: int) -> str:
    """The page served on loopback `port`, retried for about five seconds while the server comes up ("" if it
    never answers)."""
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(50):
            try:
                return (await http.get(f"http://127.0.0.1:{port}/")).text
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    return ""


async def test_host_mode_port_is_reachable_on_loopback(executor: DockerExecutor, task_image: str) -> None:
    port = free_port()
    task = make_task(task_image, command=["sh", "-c", "echo hello-from-task > /www/index.html; "
                                                      "exec httpd -f -p 8080 -h /www"], init=True,
                     ports=[{"target_port": 8080, "published_port": port, "protocol": "tcp", "publish_mode": "host"}])
    ctl = await started(executor, task)
    try:
        assert (await page_on(port)).strip() == "hello-from-task"
    finally:
        await ctl.shutdown()


async def test_ingress_port_is_bound_where_the_engine_says_and_reported(executor: DockerExecutor,
                                                                         task_image: str) -> None:
    """An ingress-mode port is bound on a port the engine picks (the mesh owns the published one) and the
    controller reports it as port_status (docs/networking.md); a new controller (agent restart) learns it too."""
    task = make_task(task_image, command=["sh", "-c", "echo via-mesh > /www/index.html; "
                                                      "exec httpd -f -p 8080 -h /www"], init=True,
                     ports=[{"target_port": 8080, "published_port": 30999, "protocol": "tcp",
                             "publish_mode": "ingress"}])
    ctl = await started(executor, task)
    try:
        assert ctl.port_status is not None
        [p] = ctl.port_status["ports"]
        assert p["target_port"] == 8080 and p["publish_mode"] == "ingress" and p["published_port"] != 30999
        assert (await page_on(p["published_port"])).strip() == "via-mesh"
        again = executor.controller(task, node_id=task["node_id"], saved=ctl.saved())
        waiting = asyncio.create_task(again.wait())
        for _ in range(50):
            if again.port_status is not None:
                break
            await asyncio.sleep(0.05)
        assert again.port_status == ctl.port_status
        waiting.cancel()
    finally:
        await ctl.shutdown()


async def test_a_new_controller_adopts_the_container_and_learns_its_exit(executor: DockerExecutor,
                                                                         task_image: str) -> None:
    task = make_task(task_image, command=["sh", "-c", "sleep 1; exit 5"])
    first = await started(executor, task)
    cid = first.container_id
    # An agent restart: a fresh controller from the saved state; a repeated prepare/start changes nothing.
    second = executor.controller(task, node_id="node-t", saved=first.saved())
    await second.prepare()
    await second.start()
    assert second.container_id == cid
    assert len(await executor.engine.containers({LABEL_TASK: task["id"]})) == 1
    await asyncio.sleep(1.5)  # it exits while "no agent" watches
    third = executor.controller(task, node_id="node-t")  # even without saved state: found by name
    with pytest.raises(ExitError) as e:
        await third.wait()
    assert e.value.exit_code == 5 and third.container_id == cid
    await third.remove()
