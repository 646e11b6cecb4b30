"""The allocator in the running control plane (orchestrator, allocator, scheduler and fake agents over LocalStore
+ MemoryBus): a service on a network with an ingress port gets a subnet, task addresses, VIPs and a 30000+ port;
a failover to another allocator instance keeps every allocation and never hands one out twice."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from shoal.clock import SystemClock
from shoal.ids import new_id
from shoal.models.kinds import Kind
from shoal.models.network_spec import NetworkSpec
from shoal.models.objects import Obj
from shoal.models.specs import ServiceSpec
from shoal.store import txn as t
from tests.service.test_control_plane import FAST, ControlPlane, converged, eventually, scaled

pytestmark = pytest.mark.timeout(90)


def web_service(network_id: str, replicas: int, name: str = "web") -> Obj:
    spec = ServiceSpec.model_validate({
        "name": name, "mode": {"replicated": {"replicas": replicas}},
        "task": {"process": {"command": ["sleep", "1000"]}, "networks": [{"target": network_id}]},
        "endpoint": {"ports": [{"target_port": 80}]}}).wire()
    return {"id": new_id(), "spec": spec, "spec_version": 1, "previous_spec": None}


def attachments(cp: ControlPlane, svc: Obj) -> dict[str, dict[str, str]]:
    """task id -> {network id: address} of the service's runnable tasks."""
    return {x["id"]: {a["network_id"]: a["addresses"][0] for a in x.get("networks") or []}
            for x in cp.runnable(svc)}


def all_addresses(cp: ControlPlane) -> list[tuple[str, str]]:
    used = [(a["network_id"], a["addresses"][0]) for x in cp.tasks() for a in x.get("networks") or []
            if x["desired_state"] == "running"]
    for s in cp.store.mem.list(Kind.SERVICE):
        used += [(v["network_id"], v["addr"]) for v in (s.get("endpoint") or {}).get("virtual_ips") or []]
    return used


class Failover:
    """A running control plane and, on `take_over()`, a standby allocator with no memory replacing the active one."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.standby: Allocator | None = None
        self.runner: asyncio.Task[Any] | None = None

    async def take_over(self) -> Allocator:
        standby = self.standby = Allocator(self.cp.store, self.cp.bus, SystemClock(),
                                           AllocatorSettings(instance="allocator-2", **FAST))
        self.runner = asyncio.create_task(standby.run())
        self.cp.allocator.stop()
        await eventually(lambda: standby.leader.active, timeout=10, what="the standby allocator takes over")
        return standby


@contextlib.asynccontextmanager
async def control_plane() -> AsyncIterator[Failover]:
    cp = ControlPlane()
    await cp.start()
    failover = Failover(cp)
    try:
        yield failover
    finally:
        if failover.standby is not None:
            failover.standby.stop()
        if failover.runner is not None:
            await asyncio.wait_for(failover.runner, 5)
        await cp.close()


async def test_network_service_gets_addresses_vips_and_a_port_and_keeps_them_across_a_failover() -> None:
    async with control_plane() as failover:
        cp = failover.cp
        net: Obj = {"id": new_id(), "spec": NetworkSpec.model_validate({"name": "back"}).wire(), "ipam": None}
        await cp.store.txn([t.create(Kind.NETWORK, net)])
        svc = await cp.create_service(web_service(net["id"], 3))
        await eventually(lambda: converged(cp, svc, 3), timeout=20, what="3 running replicas")

        back = cp.store.mem.get(Kind.NETWORK, net["id"])
        assert back["ipam"] == {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}
        [ingress] = [n for n in cp.store.mem.list(Kind.NETWORK) if n["spec"].get("ingress")]
        assert ingress["spec"]["name"] == "ingress" and ingress["ipam"]["subnet"] == "10.255.0.0/16"
        stored = cp.store.mem.get(Kind.SERVICE, svc["id"])
        endpoint = stored["endpoint"]
        [port] = endpoint["ports"]
        assert port["published_port"] >= 30000 and port["target_port"] == 80
        assert {v["network_id"] for v in endpoint["virtual_ips"]} == {ingress["id"], net["id"]}
        before = attachments(cp, svc)
        for addrs in before.values():
            assert set(addrs) == {ingress["id"], net["id"]}
            assert ipaddress.ip_interface(addrs[net["id"]]).ip in ipaddress.ip_network("10.0.0.0/24")
            assert ipaddress.ip_interface(addrs[ingress["id"]]).ip in ipaddress.ip_network("10.255.0.0/16")
        assert len(all_addresses(cp)) == len(set(all_addresses(cp))) == 3 * 2 + 2

        # Failover: the active allocator goes away; a standby with no memory takes over.
        standby = await failover.take_over()
        svc = await cp.update_service(scaled(cp.store.mem.get(Kind.SERVICE, svc["id"]), 6))
        await eventually(lambda: converged(cp, svc, 6), timeout=20, what="6 running replicas after the failover")
        other = await cp.create_service(web_service(net["id"], 1, name="api"))
        await eventually(lambda: converged(cp, other, 1), timeout=20, what="a second service")

        after = attachments(cp, svc)
        assert all(after[tid] == addrs for tid, addrs in before.items())  # nothing re-allocated
        assert cp.store.mem.get(Kind.SERVICE, svc["id"])["endpoint"] == endpoint
        other_port = cp.store.mem.get(Kind.SERVICE, other["id"])["endpoint"]["ports"][0]["published_port"]
        assert other_port >= 30000 and other_port != port["published_port"]
        used = all_addresses(cp)
        assert len(used) == len(set(used)) == 7 * 2 + 2 * 2
        assert standby.status()["inflight_writes"] == 0


async def test_an_encrypted_network_gets_a_key_ring_kept_across_a_failover() -> None:
    """The running allocator (its leader loop over the store) creates the key ring once a network is encrypted,
    marks the encrypted network's attachments of the tasks, and a standby that takes over keeps the same ring
    (it rotates only when the newest key is 12 h old)."""
    from shoal import netkeys
    async with control_plane() as failover:
        cp = failover.cp
        plain: Obj = {"id": new_id(), "spec": NetworkSpec.model_validate({"name": "plain"}).wire(), "ipam": None}
        await cp.store.txn([t.create(Kind.NETWORK, plain)])
        await asyncio.sleep(0.3)
        assert cp.store.mem.find(Kind.NETKEYS, netkeys.KEYS_ID) is None  # no encrypted network: no ring
        sec: Obj = {"id": new_id(), "spec": NetworkSpec.model_validate(
            {"name": "sec", "options": {"encrypted": ""}}).wire(), "ipam": None}
        await cp.store.txn([t.create(Kind.NETWORK, sec)])
        ring = await eventually(lambda: cp.store.mem.find(Kind.NETKEYS, netkeys.KEYS_ID), timeout=10,
                                what="the key ring")
        assert [k["lamport"] for k in ring["keys"]] == [1, 2, 3] and ring["algorithm"] == netkeys.ALGORITHM
        svc = await cp.create_service(web_service(sec["id"], 2))
        await eventually(lambda: converged(cp, svc, 2), timeout=20, what="2 running replicas")
        for task in cp.runnable(svc):
            marks = {a["network_id"]: a.get("encrypted", False) for a in task["networks"]}
            assert marks[sec["id"]] is True and sum(marks.values()) == 1  # the ingress attachment is not
        await failover.take_over()
        await asyncio.sleep(0.5)
        assert cp.store.mem.get(Kind.NETKEYS, netkeys.KEYS_ID)["keys"] == ring["keys"]
