"""An encrypted overlay network next to a plain one, across two simulated machines (agents advertising
127.0.0.2 and 127.0.0.3 on one engine, behind a real dispatcher; docs/networking.md "Encrypted networks"):

- the key ring the allocator's core writes reaches, over the agent's session, only the node with a task on the
  encrypted network, never lands in the agent's saved table, and is withdrawn once that node has no such task;
- on a kernel without ESP/AES-GCM (this machine's): the encrypted network's container fails, its status naming
  what the kernel lacks, no frame of the network is sent to the other node, and `/v1/status` says it — while the
  plain network's containers still reach each other across the VXLAN (plain networks unchanged);
- on a kernel with them: the encrypted network's containers reach each other across nodes, and the SAs and
  policies towards the peer are in the kernel."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

import pytest

from agent import overlay_plan as plan
from agent.esp_user import relay_net, tun_name
from services.allocator import core as alloc
from shoal.models.objects import task_status
from shoal.store import txn as t
from tests.docker.conftest import RUN_ID, RUN_LABEL
from tests.docker.test_docker_agent import Env, until
from tests.docker.test_docker_overlay import _exec, env  # noqa: F401  (the fixture: root, an Env)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


async def stop_encrypted(cluster: Env, tids: tuple[str, ...]) -> None:
    """Shut the encrypted network's tasks down; the ESP policies towards the other node go with them."""
    for tid in tids:
        await cluster.set_desired(tid, "shutdown")
    for tid in tids:
        await cluster.task_in(tid, "shutdown", "complete", "failed")
    await until(lambda: "127.0.0.3" not in subprocess.run(["ip", "xfrm", "policy"], capture_output=True,
                                                          text=True).stdout, "the ESP policies removed", 20)


async def test_encrypted_network_keys_reach_only_its_nodes_and_never_go_in_clear(env: Env,  # noqa: F811
                                                                                  task_image: str) -> None:
    rid = uuid.uuid4().hex[:6]
    plain, sec = "pl" + rid, "se" + rid
    web, sweb = f"web{rid}", f"sweb{rid}"
    await env.store.txn([
        t.create("service", {"id": "s" + web, "spec": {"name": web, "endpoint": {"mode": "dnsrr"},
                                                       "task": {"networks": [{"target": plain}]}},
                             "endpoint": {}}),
        t.create("service", {"id": "s" + sweb, "spec": {"name": sweb, "endpoint": {"mode": "dnsrr"},
                                                        "task": {"networks": [{"target": sec}]}},
                             "endpoint": {}}),
    ])
    # the allocator's core creates the ring once a network is encrypted (what its leader loop writes)
    ring = alloc.plan_netkeys([{"id": sec, "spec": {"name": sec, "options": {"encrypted": ""}}}], None,
                              time.time(), lambda n: uuid.uuid4().bytes * (n // 16))
    await env.store.txn(ring.ops)
    a = await env.agent("enc-a", addr="127.0.0.2")
    b = await env.agent("enc-b", addr="127.0.0.3")
    assert a.overlay is not None and b.overlay is not None
    assert a.overlay.missing == [] and a.overlay.ipsec_missing is not None
    kernel_has_esp = a.overlay.ipsec_missing == []
    b_saw_keys: list[bool] = []

    async def task(service: str, net: str, node: str | None, slot: int, address: str, encrypted: bool) -> str:
        tid = "t" + uuid.uuid4().hex[:12]
        spec = {"container": {"image": task_image, "labels": {RUN_LABEL: RUN_ID}, "stop_grace_period": "1s",
                              "init": True,
                              "command": ["sh", "-c", 'mkdir -p /www && echo "$SHOAL_TASK_ID" > /www/index.html; '
                                          'exec httpd -f -p 80 -h /www']},
                "networks": [{"target": net}]}
        att: dict[str, Any] = {"network_id": net, "addresses": [address + "/24"], "aliases": []}
        if encrypted:
            att["encrypted"] = True
        await env.store.txn([t.create("task", {
            "id": tid, "service_id": "s" + service, "service_name": service, "slot": slot, "node_id": node,
            "desired_state": "running", "spec_version": 1, "runtime": "container", "spec": spec,
            "networks": [att], "endpoint": {"ports": []},
            "status": task_status("assigned", time.time(), "scheduled")})])
        return tid

    async def fetch(container: str, url: str) -> str | None:
        code, out = await _exec(container, "wget", "-q", "-O", "-", url, timeout=5.0)
        return out.strip() if code == 0 else None

    # (d) plain networks unchanged: a replica on each node, reaching each other across the VXLAN
    pa = await task(web, plain, a.node_id, 1, "10.198.7.3", False)
    pb = await task(web, plain, b.node_id, 2, "10.198.7.4", False)
    # the encrypted network: a replica on node a only at first
    sa = await task(sweb, sec, a.node_id, 1, "10.197.7.3", True)
    keys_seen = await until(lambda: a.overlay and a.overlay.table.get("network_keys"), "the keys at node a", 20)
    assert sorted(k["lamport"] for k in keys_seen) == [1, 2, 3]
    assert a.overlay.table.get("encrypted_networks") == [sec]
    saved = (a.state.dir / "mesh" / "table.json").read_text()
    assert "network_keys" not in saved and keys_seen[0]["key"] not in saved  # held in memory only
    status = a.overlay.status()["encryption"]
    assert status["key_lamports"] == [1, 2, 3] and keys_seen[0]["key"] not in json.dumps(status)
    b_saw_keys.append(bool(b.overlay.table.get("network_keys")))
    for tid in (pa, pb):
        await env.task_in(tid, "running")
    ct = {tid: (await env.containers(**{"shoal.task.id": tid}))[0]["Id"] for tid in (pa, pb)}
    assert await until(lambda: fetch(ct[pa], "http://10.198.7.4/"), "the plain network across nodes", 30) == pb
    b_saw_keys.append(bool(b.overlay.table.get("network_keys")))
    assert not any(b_saw_keys), "node b has no task on the encrypted network: it must get no key"

    if not kernel_has_esp:
        # the encrypted network's container fails, naming what is missing; nothing of it is sent to node b
        done = await env.task_in(sa, "failed", "rejected")
        err = str(done["status"].get("err") or "") + str(done["status"].get("message") or "")
        assert "encrypted" in err and ("CONFIG_INET_ESP" in err or "CONFIG_CRYPTO_GCM" in err), done["status"]
        assert a.overlay.status()["encryption"]["missing"] == a.overlay.ipsec_missing
        sb = await task(sweb, sec, b.node_id, 2, "10.197.7.4", True)
        await env.task_in(sb, "failed", "rejected")
        assert plan.ns_name(a.node_id or "", sec) not in subprocess.run(["ip", "netns", "list"],
                                                                       capture_output=True, text=True).stdout
        # the keys leave node a's table once it has no live task on the encrypted network
        await until(lambda: not a.overlay.table.get("network_keys"), "the keys withdrawn from node a", 20)
        print("this kernel:", "; ".join(a.overlay.ipsec_missing or []))
    else:
        sb = await task(sweb, sec, b.node_id, 2, "10.197.7.4", True)
        for tid in (sa, sb):
            await env.task_in(tid, "running")
        cts = {tid: (await env.containers(**{"shoal.task.id": tid}))[0]["Id"] for tid in (sa, sb)}
        assert await until(lambda: fetch(cts[sa], "http://10.197.7.4/"), "the encrypted network across nodes",
                           30) == sb
        states = subprocess.run(["ip", "-s", "xfrm", "state"], capture_output=True, text=True).stdout
        assert "proto esp" in states and "127.0.0.3" in states, states
        await stop_encrypted(env, (sa, sb))
    for tid in (pa, pb):
        await env.set_desired(tid, "shutdown")
    for tid in (pa, pb):
        await env.task_in(tid, "shutdown", "complete", "failed")
    await asyncio.sleep(0)


class Capture:
    """AF_PACKET on `lo` (the two simulated machines' underlay) in a thread: IPv4 packets between the two node
    addresses (src != dst: what crosses between the nodes; a node's own relay leg stays on the node) by IP
    protocol, and how many of them carry `needle`."""

    def __init__(self, nodes: tuple[str, str], needle: bytes) -> None:
        import socket as so
        import threading
        self.nodes = {so.inet_aton(a) for a in nodes}
        self.needle = needle
        self.protos: dict[int, int] = {}
        self.clear = 0
        self.sock = so.socket(so.AF_PACKET, so.SOCK_RAW, so.htons(0x0800))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                frame = self.sock.recv(65535)
            except OSError:
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[12:16] == ip[16:20] or {ip[12:16], ip[16:20]} != self.nodes:
                continue
            self.protos[ip[9]] = self.protos.get(ip[9], 0) + 1
            if self.needle in ip:
                self.clear += 1

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


async def test_userspace_esp_carries_an_encrypted_network_across_nodes_and_a_rotation(env: Env,  # noqa: F811
                                                                                      task_image: str) -> None:
    """With SHOAL_ESP_USERSPACE (kernels without ESP, this one): the encrypted network's containers reach each
    other across nodes; between the nodes only ESP crosses (an AF_PACKET capture on the underlay sees IP
    protocol 50 and never the HTTP body; the engines' counters rise); a key rotation written to the store
    reaches both agents, moves the sending SPI, and requests keep being answered throughout."""
    rid = uuid.uuid4().hex[:6]
    sec, sweb = "se" + rid, f"sweb{rid}"
    secret = f"SECRETBODY{rid}"
    await env.store.txn([t.create("service", {"id": "s" + sweb, "spec": {
        "name": sweb, "endpoint": {"mode": "dnsrr"}, "task": {"networks": [{"target": sec}]}}, "endpoint": {}})])
    encrypted = [{"id": sec, "spec": {"name": sec, "options": {"encrypted": ""}}}]
    ring = alloc.plan_netkeys(encrypted, None, time.time(), lambda n: uuid.uuid4().bytes * (n // 16))
    await env.store.txn(ring.ops)
    a = await env.agent("esp-a", addr="127.0.0.2", esp_userspace=True)
    b = await env.agent("esp-b", addr="127.0.0.3", esp_userspace=True)
    assert a.overlay is not None and b.overlay is not None
    if a.overlay.esp_mode != "userspace":
        pytest.skip(f"the kernel has ESP (mode {a.overlay.esp_mode}): the other test covers it")

    async def task(node: str | None, slot: int, address: str) -> str:
        tid = "t" + uuid.uuid4().hex[:12]
        body = f'echo "$SHOAL_TASK_ID {secret}" > /www/index.html'
        spec = {"container": {"image": task_image, "labels": {RUN_LABEL: RUN_ID}, "stop_grace_period": "1s",
                              "init": True, "command": ["sh", "-c", f"mkdir -p /www && {body}; "
                                                        "exec httpd -f -p 80 -h /www"]},
                "networks": [{"target": sec}]}
        await env.store.txn([t.create("task", {
            "id": tid, "service_id": "s" + sweb, "service_name": sweb, "slot": slot, "node_id": node,
            "desired_state": "running", "spec_version": 1, "runtime": "container", "spec": spec,
            "networks": [{"network_id": sec, "addresses": [address + "/24"], "aliases": [], "encrypted": True}],
            "endpoint": {"ports": []}, "status": task_status("assigned", time.time(), "scheduled")})])
        return tid

    sa, sb = await task(a.node_id, 1, "10.196.7.3"), await task(b.node_id, 2, "10.196.7.4")
    for tid in (sa, sb):
        await env.task_in(tid, "running")
    ct = {tid: (await env.containers(**{"shoal.task.id": tid}))[0]["Id"] for tid in (sa, sb)}

    async def fetch(url: str) -> str | None:
        code, out = await _exec(ct[sa], "wget", "-q", "-O", "-", url, timeout=5.0)
        return out.strip() if code == 0 else None

    cap = Capture(("127.0.0.2", "127.0.0.3"), secret.encode())
    try:
        try:
            answer = await until(lambda: fetch("http://10.196.7.4/"), "the encrypted network across nodes", 30)
        except AssertionError:
            print(json.dumps([a.overlay.status(), b.overlay.status()], indent=1, default=str), cap.protos)
            for ag in (a, b):
                ns = plan.ns_name(ag.node_id or "", sec)
                for cmd in (["ip", "-n", ns, "neigh"], ["bridge", "-n", ns, "fdb", "show", "dev", "vx0"],
                            ["ip", "-s", "link"], ["ip", "xfrm", "policy"], ["cat", "/proc/net/xfrm_stat"]):
                    print(cmd, subprocess.run(cmd, capture_output=True, text=True).stdout)
            raise
        assert answer == f"{sb} {secret}"
        for _ in range(5):
            assert await fetch("http://10.196.7.4/") == f"{sb} {secret}"
    finally:
        cap.close()
    assert cap.clear == 0, f"{cap.clear} packets between the nodes carried the body in the clear"
    # ESP only between the nodes (an ICMP error between them — seen once — carries no payload of the network)
    assert cap.protos.get(50, 0) >= 10 and set(cap.protos) <= {50, 1}, cap.protos
    engine_a, engine_b = a.overlay.status()["encryption"]["engine"], b.overlay.status()["encryption"]["engine"]
    assert engine_a["received"] > 0 and engine_b["received"] > 0, (engine_a, engine_b)
    spi_before = engine_a["peers"]["127.0.0.3"]["out_spi"]

    # rotation: the allocator's core rotates the ring in the store; requests keep being answered throughout
    stored = await env.store.get("netkeys", "overlay")
    rotated = alloc.plan_netkeys(encrypted, stored, time.time() + 13 * 3600, lambda n: uuid.uuid4().bytes * (n // 16))
    failures = 0
    answered = 0

    async def keep_fetching(stop: asyncio.Event) -> None:
        nonlocal failures, answered
        while not stop.is_set():
            if await fetch("http://10.196.7.4/") == f"{sb} {secret}":
                answered += 1
            else:
                failures += 1
    stop = asyncio.Event()
    loader = asyncio.create_task(keep_fetching(stop))
    await asyncio.sleep(1.0)
    await env.store.txn(rotated.ops)
    await until(lambda: all(ag.overlay is not None and ag.overlay.status()["encryption"]["key_lamports"] == [2, 3, 4]
                            for ag in (a, b)), "the rotated ring at both nodes", 20)
    await asyncio.sleep(1.5)
    stop.set()
    await loader
    assert failures == 0 and answered >= 2, (failures, answered)
    assert a.overlay.status()["encryption"]["engine"]["peers"]["127.0.0.3"]["out_spi"] != spi_before
    await stop_encrypted(env, (sa, sb))
    for ag in (a, b):
        await env.stop_agent(ag)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert all(tun_name(addr) not in links for addr in ("127.0.0.2", "127.0.0.3"))  # the TUNs went with the agents
    for addr in ("127.0.0.2", "127.0.0.3"):  # the blackhole routes stay on purpose; the test leaves no trace
        subprocess.run(["ip", "route", "del", "blackhole", relay_net(addr), "metric", "4096"], check=False)
