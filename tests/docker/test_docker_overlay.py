"""Containers on an overlay network across two simulated machines (agents advertising 127.0.0.2 and
127.0.0.3 on one engine), through the kernel path (agent/overlay.py, docs/networking.md): a 2-replica busybox
httpd service placed one per node and a client container on one node, all on one network. The client reaches
`http://<service>/` (the VIP: both replicas answer), `http://tasks.<service>/`, and the replica on the other
node by its allocated address (across VXLAN); the routing mesh reaches the containers through the agent's host
forwarders; an orphaned namespace of a node is swept; a restarted agent re-attaches its adopted container; a
replica leaving RUNNING leaves the VIP, the hosts files and the other node's entries; nothing the agents
created (namespaces, links) is left once the tasks and agents are gone."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent import overlay_plan as plan
from shoal.models.objects import task_status
from shoal.store import txn as t
from tests.docker.conftest import RUN_ID, RUN_LABEL
from tests.docker.test_docker_agent import Env, until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _links() -> str:
    return _run("ip", "-o", "link", "show")


def _namespaces() -> str:
    return _run("ip", "netns", "list")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    if os.geteuid() != 0:
        if os.environ.get("SHOAL_REQUIRE_DOCKER") == "1":
            pytest.fail("SHOAL_REQUIRE_DOCKER=1 but not root: the overlay's kernel path needs it")
        pytest.skip("the overlay's kernel path needs root (namespaces, veths, VXLAN)")
    async with Env(tmp_path) as e:
        yield e


async def _exec(container: str, *argv: str, timeout: float = 10.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("docker", "exec", container, *argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "timed out"
    return int(proc.returncode or 0), out.decode(errors="replace")


# soak tier (which .ci/run runs): 40 s of a real engine; the overlay's plumbing between two machines stays in the
# default tier (tests/integration/test_ipsec_kernel.py, test_kernel_mesh_netns.py)
@pytest.mark.soak
async def test_containers_reach_each_other_across_nodes_by_name_vip_and_address(env: Env, task_image: str) -> None:
    rid = uuid.uuid4().hex[:6]
    net = "net" + rid
    web, cli = f"web{rid}", f"cli{rid}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        published = s.getsockname()[1]
    ports = [{"protocol": "tcp", "target_port": 80, "published_port": published, "publish_mode": "ingress"}]
    vip = "10.199.7.2"
    await env.store.txn([
        t.create("service", {"id": "s" + web, "spec": {"name": web, "endpoint": {"mode": "vip"},
                                                       "task": {"networks": [{"target": net}]}},
                             "endpoint": {"ports": ports, "virtual_ips": [{"network_id": net, "addr": vip + "/24"}]}}),
        t.create("service", {"id": "s" + cli, "spec": {"name": cli, "endpoint": {"mode": "vip"},
                                                       "task": {"networks": [{"target": net}]}},
                             "endpoint": {"virtual_ips": [{"network_id": net, "addr": "10.199.7.9/24"}]}}),
    ])
    a = await env.agent("ovl-a", addr="127.0.0.2")
    b = await env.agent("ovl-b", addr="127.0.0.3")
    for agent in (a, b):
        assert agent.overlay is not None
        assert agent.overlay.missing == [], agent.overlay.missing
    # what a crashed agent could leave: a namespace of node a with no container in it (swept with a table)
    assert a.node_id is not None
    orphan = plan.ns_name(a.node_id, "orphan" + rid)
    _run("ip", "netns", "add", orphan)
    _run("ip", "-n", orphan, "link", "add", "br0", "type", "bridge")

    async def task(service: str, node: str | None, slot: int, address: str, command: list[str],
                   endpoint_ports: list[dict[str, Any]]) -> str:
        tid = "t" + uuid.uuid4().hex[:12]
        spec = {"container": {"image": task_image, "command": command, "labels": {RUN_LABEL: RUN_ID},
                              "stop_grace_period": "1s", "init": True},
                "networks": [{"target": net}]}
        await env.store.txn([t.create("task", {
            "id": tid, "service_id": "s" + service, "service_name": service, "slot": slot, "node_id": node,
            "desired_state": "running", "spec_version": 1, "runtime": "container", "spec": spec,
            "networks": [{"network_id": net, "addresses": [address + "/24"], "aliases": []}],
            "endpoint": {"ports": endpoint_ports},
            "status": task_status("assigned", time.time(), "scheduled")})])
        return tid

    serve = ["sh", "-c", 'mkdir -p /www && echo "$SHOAL_TASK_ID" > /www/index.html; exec httpd -f -p 80 -h /www']
    wa = await task(web, a.node_id, 1, "10.199.7.3", serve, ports)
    wb = await task(web, b.node_id, 2, "10.199.7.4", serve, ports)
    client = await task(cli, a.node_id, 1, "10.199.7.5", ["sleep", "3600"], [])
    for tid in (wa, wb, client):
        await env.task_in(tid, "running")
    ct = {tid: (await env.containers(**{"shoal.task.id": tid}))[0]["Id"] for tid in (wa, wb, client)}
    inspect = await env.engine.inspect(ct[client])
    assert inspect is not None and inspect["HostConfig"]["NetworkMode"] == "none"

    await until(lambda: orphan not in _namespaces(), "the orphaned namespace swept", 20)
    assert all(plan.ns_name(n or "", net) in _namespaces() for n in (a.node_id, b.node_id))  # in use: kept

    # the client has the task's address on eth0 and the discovery hosts file
    code, out = await _exec(ct[client], "ip", "-o", "addr", "show", "eth0")
    assert code == 0 and "10.199.7.5/24" in out, out
    code, hosts = await _exec(ct[client], "cat", "/etc/hosts")
    assert f"{vip}\t{web}" in hosts, hosts

    async def fetch(url: str) -> str | None:
        # (busybox 1.35's wget crashes with -T; _exec bounds the wait instead)
        code, out = await _exec(ct[client], "wget", "-q", "-O", "-", url, timeout=5.0)
        return out.strip() if code == 0 else None

    # across VXLAN: the replica on the other node by its allocated address
    try:
        assert await until(lambda: fetch("http://10.199.7.4/"), "the remote replica by its address", 30) == wb
    except AssertionError:  # say what each node had
        print(json.dumps([a.overlay.status(), b.overlay.status(), a.mesh.table], indent=1, default=str))
        for ag in (a, b):
            ns = plan.ns_name(ag.node_id or "", net)
            for cmd in (["ip", "-n", ns, "-d", "link"], ["ip", "-n", ns, "neigh"], ["bridge", "-n", ns, "fdb"]):
                print(cmd, subprocess.run(cmd, capture_output=True, text=True).stdout)
        raise

    # the VIP (the service name): both replicas answer
    seen: set[str] = set()

    async def both_behind_vip() -> bool:
        answer = await fetch(f"http://{web}/")
        if answer:
            seen.add(answer)
        return seen == {wa, wb}
    await until(both_behind_vip, "both replicas answering through the VIP", 40)

    # tasks.<service>: the task addresses
    await until(lambda: "10.199.7.3\ttasks." + web in open_hosts(a, client) and
                "10.199.7.4\ttasks." + web in open_hosts(a, client), "tasks.<service> in the hosts file", 20)
    assert await until(lambda: fetch(f"http://tasks.{web}/"), "tasks.<service> answering", 20) in {wa, wb}

    # the routing mesh reaches the containers through the agent's host forwarders, from both nodes
    async def mesh(addr: str) -> str | None:
        try:
            r, w = await asyncio.open_connection(addr, published)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await asyncio.wait_for(r.read(), 5)
            w.close()
        except (OSError, TimeoutError):
            return None
        return data.partition(b"\r\n\r\n")[2].decode().strip() or None
    for addr in ("127.0.0.2", "127.0.0.3"):
        assert await until(lambda addr=addr: mesh(addr), f"the mesh on {addr}", 20) in {wa, wb}

    # node b's agent restarts (its container outlives it): the new process adopts the container, reopens its
    # host port and the network's balancers and entries; everything keeps answering
    before = (await env.store.get("task", wb))["status"]["port_status"]
    await env.stop_agent(b)
    b = await env.agent("ovl-b", addr="127.0.0.3")
    assert b.overlay is not None
    await until(lambda: b.overlay is not None and b.overlay.is_attached(wb), "the restarted agent re-attached", 30)
    assert b.worker.managers[wb].controller.port_status == before  # type: ignore[union-attr]
    seen.clear()
    await until(both_behind_vip, "both replicas behind the VIP after the restart", 40)
    assert await until(lambda: mesh("127.0.0.3"), "the mesh on the restarted node", 20) in {wa, wb}
    assert await until(lambda: fetch("http://10.199.7.4/"), "the remote replica after the restart", 20) == wb

    # a replica leaving RUNNING leaves the VIP, tasks.<service> and the other node's neighbour entries
    assert a.node_id is not None and b.node_id is not None
    names = [plan.ns_name(a.node_id, net), plan.ns_name(b.node_id, net)]
    assert "10.199.7.3 " in _run("ip", "-n", names[1], "neigh", "show", "dev", "vx0")
    await env.set_desired(wa, "shutdown")
    await env.task_in(wa, "shutdown")
    await until(lambda: "10.199.7.3\t" not in open_hosts(a, client), "the stopped replica out of the hosts file", 20)
    await until(lambda: "10.199.7.3 " not in _run("ip", "-n", names[1], "neigh", "show", "dev", "vx0"),
                "the stopped replica's entries gone from the other node", 20)
    # (the first answer may wait for a loaded machine: a wget that gets nothing in 5 s is a None). Seen once in
    # about ten runs after the docker CLI session's test: no answer through the VIP for 20 s although the
    # balancer's table held the remaining replica — not understood yet; the wider window and the state printed
    # on failure are there to catch it.
    try:
        assert await until(lambda: fetch(f"http://{web}/"), "the VIP answering after the replica left", 60) == wb
    except AssertionError:
        for what, argv in (("client's wget", ["docker", "exec", ct[client], "wget", "-O", "-", f"http://{web}/"]),
                           ("node a's sockets", ["ip", "netns", "exec", names[0], "ss", "-tanp"]),
                           ("node a's addresses", ["ip", "-n", names[0], "addr"])):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=15)
            print(f"{what}: {done.stdout}{done.stderr}")
        print("node a's mesh table:", json.dumps(a.mesh.table, default=str))
        raise
    assert {await fetch(f"http://{web}/") for _ in range(4)} == {wb}
    assert await fetch(f"http://tasks.{web}/") == wb

    # everything the agents created goes with the tasks and the agents
    assert all(n in _namespaces() for n in names)
    for tid in (wb, client):
        await env.set_desired(tid, "shutdown")
    for tid in (wb, client):
        await env.task_in(tid, "shutdown", "complete", "failed")
    await until(lambda: not any(n in _namespaces() for n in names), "the network namespaces removed", 30)
    for agent in (a, b):
        await env.stop_agent(agent)
    leaked = [line for line in _links().splitlines() if f": {plan.PREFIX}" in line]
    assert not any(n in _namespaces() for n in names)
    assert not leaked, leaked


def open_hosts(agent: Any, task_id: str) -> str:
    try:
        return str(agent.overlay.hosts_file(task_id).read_text())
    except OSError:
        return ""
